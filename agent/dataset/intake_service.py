"""The intake's work, without the web framework (docs/upload.md): ``begin``, ``complete`` and ``status``
of one checked request against the S3 store, the records kept in the bucket, the rate limits and the
withdrawal register.

:class:`Intake` is called from worker threads of the ASGI app (:mod:`agent.dataset.intake_app`); its
methods block on the store. It never holds the study's identity and never reads a bundle's content:
the one read of a bundle is the SHA-256 of the completed object.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from agent.dataset import intake_rules as rules
from agent.dataset.dest_s3 import S3Dest, error_code, s3_client
from agent.errors import DestError, ObjectChanged, ObjectExists, ObjectMissing
from agent.upload_protocol import (
    MIN_PART_SIZE,
    RequestRefused,
    UploadRequest,
    check_request,
    part_size_for,
    parts,
    refuse,
)

log = logging.getLogger(__name__)

#: Seconds a presigned part URL is valid.
DEFAULT_URL_TTL_S = 3600
#: The largest bundle an intake takes unless told otherwise.
DEFAULT_MAX_BUNDLE_SIZE = 8 * 1024**3
#: Requests a volunteer (and a client address) may make a minute, and at once.
DEFAULT_RATE_PER_MINUTE = 60
DEFAULT_BURST = 30
#: Bytes read at a time when the intake hashes a completed object.
READ_CHUNK = 1024 * 1024


class UploadGone(Exception):
    """The store no longer has the multipart upload a record names (aborted by a lifecycle rule, or
    by hand): the upload starts again."""


class StoreUnavailable(Exception):
    """The S3 store did not answer or refused (full, down): a ``store_unavailable`` retry answer."""


@dataclass(frozen=True)
class Settings:
    """What ``optin dataset intake`` was started with."""

    study: str
    max_bundle_size: int = DEFAULT_MAX_BUNDLE_SIZE
    part_size: int = 8 * 1024 * 1024
    url_ttl_s: int = DEFAULT_URL_TTL_S
    rate_per_minute: float = DEFAULT_RATE_PER_MINUTE
    burst: float = DEFAULT_BURST
    max_uploads: int = 1000


class Intake:
    """The intake over ``dest`` (the bucket and prefix): see the module docstring.

    :param withdrawn: the withdrawn volunteer ids now (read from the dataset's register by the caller,
        who refreshes it); empty without ``--dest``.
    """

    def __init__(
        self,
        dest: S3Dest,
        settings: Settings,
        *,
        withdrawn: Callable[[], frozenset[str]] = frozenset,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.part_size < MIN_PART_SIZE:
            msg = f"the part size must be at least {MIN_PART_SIZE} bytes, not {settings.part_size}"
            raise ValueError(msg)
        self.dest = dest
        #: presigns part URLs with SigV4 (the host alone signed: the client adds its Content-MD5)
        self._presigner = s3_client(dest.url, signature_version="s3v4")
        self.settings = settings
        self._withdrawn = withdrawn
        self._clock = clock
        self._lock = threading.Lock()
        rate = settings.rate_per_minute / 60.0
        burst = max(
            1.0, min(settings.burst, settings.rate_per_minute / 2)
        )  # half a minute's requests at once
        self._by_volunteer = rules.TokenBuckets(rate, burst)
        self._by_address = rules.TokenBuckets(rate, burst)
        #: answers by status and refusals by reason (``refused|<reason>``), for /metrics
        self.counters: Counter[str] = Counter()
        self._uploading = 0

    # -- counters for /metrics -----------------------------------------------------------------------

    def count(self, outcome: str) -> None:
        """One answer more of ``outcome`` (a status, or ``refused|<reason>``, ``retry|<reason>``)."""
        with self._lock:
            self.counters[outcome] += 1

    def metrics(self) -> tuple[dict[str, int], dict[str, float]]:
        """The counters and gauges now."""
        with self._lock:
            return dict(self.counters), {"uploads_in_progress": float(self._uploading)}

    # -- one request ---------------------------------------------------------------------------------

    def handle(self, action: str, body: bytes, address: str) -> tuple[int, dict[str, Any]]:
        """Check ``body`` (the spec's order) and do ``action``: the HTTP status and the answer.

        :raises RequestRefused: a refusal (the caller turns it into its answer).
        :raises StoreUnavailable: the store failed (a ``retry`` answer).
        """
        now = self._clock()
        with self._lock:  # the cheap checks first: a flood of junk is refused before any crypto
            wait = self._by_address.take(address, now)
        if wait:
            _retry("rate_limited", "too many requests from this address", wait)
        request, _signature = check_request(
            body,
            action=action,
            study=self.settings.study,
            now=now,
            max_bundle_size=self.settings.max_bundle_size,
        )
        with self._lock:
            wait = self._by_volunteer.take(request.volunteer, now)
        if wait:
            _retry("rate_limited", "too many requests from this volunteer", wait)
        if request.volunteer in self._withdrawn():
            refuse("volunteer_withdrawn", "this volunteer withdrew from the study")
        answer = getattr(self, f"_{action}")(request, int(now))
        return 200, answer

    # -- the actions ---------------------------------------------------------------------------------

    def _begin(self, request: UploadRequest, now: int) -> dict[str, Any]:
        key = rules.record_key(request.volunteer, request.session)
        for _attempt in range(3):  # another worker may write the record between our read and write
            record, etag = self._read_record(request)
            action = rules.begin_action(record, request)
            if action == rules.ALREADY_STORED:
                return _stored(request, already=True)
            if action == rules.DELIVERED_OTHERWISE:
                refuse(
                    "session_delivered", "another export of this session is already stored; one per session"
                )
            if action == rules.RESUME and record is not None:
                try:
                    return self._upload_answer(request, record, now)
                except UploadGone:  # the store dropped it (a lifecycle rule): start it again
                    log.info(
                        "upload gone from the store: volunteer %s session %s",
                        request.volunteer,
                        request.session,
                    )
            if record is not None:  # RESTART: the old upload's parts are of other bytes
                self._abort(request, record.upload_id)
                if record.state == "uploading":
                    self._count_done()
            if self._uploading >= self.settings.max_uploads:
                _retry("store_unavailable", "too many uploads in progress at this intake", 300)
            part_size = part_size_for(request.size, self.settings.part_size)
            upload_id = self._create_upload(request)
            fresh = rules.new_record(
                request, base64.b64encode(request.signing_key).decode("ascii"), part_size, upload_id, now
            )
            try:
                self._write_record(key, fresh, etag if record is not None else None)
            except (ObjectExists, ObjectChanged):
                self._abort(request, upload_id)
                continue  # the other writer's record decides
            with self._lock:
                self._uploading += 1
            log.info(
                "upload begun: volunteer %s session %s, %d bytes",
                request.volunteer,
                request.session,
                request.size,
            )
            return self._upload_answer(request, fresh, now)
        return _retry("internal_error", "the session's record kept changing", 5)

    def _complete(self, request: UploadRequest, now: int) -> dict[str, Any]:
        record, etag = self._read_record(request)
        if record is None:
            refuse("unknown_session", "no upload of this session was begun")
        if record.state == "stored" and record.sha256 == request.sha256:
            return _stored(request, already=True)
        if record.state == "refused" and record.sha256 == request.sha256:
            refuse(record.reason or "internal_error", "the intake refused this upload; begin it again")
        if record.state != "uploading" or record.sha256 != request.sha256 or record.size != request.size:
            refuse("bad_request", "complete names another bundle than the upload begun")
        key = rules.bundle_key(request.volunteer, request.session)
        if not self._exists(key):  # else completed before: a worker stopped before recording it
            try:
                have = self._parts_held(request, record)
            except UploadGone:  # the store dropped the upload: everything is to be sent again
                return self._begin(request, now)
            plan = parts(record.size, record.part_size)
            if any(have.get(n, ("", -1))[1] != size for n, _offset, size in plan):
                return self._upload_answer(request, record, now, have=have)
            listed = [{"PartNumber": n, "ETag": have[n][0]} for n, _o, _s in plan]
            with contextlib.suppress(ObjectExists):  # another worker completed it a moment ago: judge that
                self._store(
                    "complete_multipart_upload",
                    Key=self._full(key),
                    UploadId=record.upload_id,
                    MultipartUpload={"Parts": listed},
                    IfNoneMatch="*",
                )
        return self._judge(request, record, etag, now)

    def _judge(
        self, request: UploadRequest, record: rules.Record, etag: str | None, now: int
    ) -> dict[str, Any]:
        """The verdict on the completed object: the announced size and SHA-256, or deleted and refused."""
        key = rules.bundle_key(request.volunteer, request.session)
        record_key = rules.record_key(request.volunteer, request.session)
        size, digest = self._digest(key)
        if size != request.size or digest != request.sha256:
            reason = "size_mismatch" if size != request.size else "sha256_mismatch"
            self._store("delete_object", Key=self._full(key))
            self._write_record(record_key, rules.finished(record, "refused", now, reason), etag)
            self._count_done()
            log.info(
                "upload refused: volunteer %s session %s: %s", request.volunteer, request.session, reason
            )
            refuse(reason, "the stored bytes are not the bundle announced; upload it again")
        self._write_record(record_key, rules.finished(record, "stored", now), etag)
        self._count_done()
        log.info("bundle stored: volunteer %s session %s, %d bytes", request.volunteer, request.session, size)
        return _stored(request, already=False)

    def _status(self, request: UploadRequest, now: int) -> dict[str, Any]:
        record, _etag = self._read_record(request)
        if record is None:
            refuse("unknown_session", "this intake has no record of the session")
        if record.state == "stored":
            return _stored(request, already=True)
        if record.state == "refused":
            refuse(record.reason or "internal_error", "the intake refused this upload")
        return self._upload_answer(request, record, now, urls=False)

    # -- the store -----------------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        return self.dest._full(key)  # the intake shares S3Dest's key rules and prefix

    def _store(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = getattr(self.dest._client, method)(Bucket=self.dest.bucket, **kwargs)
        except Exception as exc:
            code, status = error_code(exc)
            log.warning("store call %s failed: %s (HTTP %s)", method, code or type(exc).__name__, status)
            if code == "PreconditionFailed" or status == 412:
                raise ObjectExists(method) from None
            if code == "NoSuchUpload":
                raise UploadGone(method) from None
            raise StoreUnavailable(code or type(exc).__name__) from None
        return answer

    def _read_record(self, request: UploadRequest) -> tuple[rules.Record | None, str | None]:
        key = rules.record_key(request.volunteer, request.session)
        try:
            blob = self.dest.get(key, max_size=rules.MAX_RECORD_BYTES)
        except ObjectMissing:
            return None, None
        except DestError as exc:
            raise StoreUnavailable(type(exc).__name__) from None
        try:
            return rules.parse_record(blob.data, request.volunteer, request.session), blob.etag
        except rules.BadRecord:
            log.error("the record of volunteer %s session %s is damaged", request.volunteer, request.session)
            _retry("internal_error", "the intake's record of this session is damaged", 3600)

    def _write_record(self, key: str, record: rules.Record, etag: str | None) -> None:
        try:
            if etag is None:
                self.dest.put_new(key, record.to_bytes())
            else:
                self.dest.replace(key, record.to_bytes(), expected=etag)
        except (ObjectExists, ObjectChanged):
            raise
        except DestError as exc:
            raise StoreUnavailable(type(exc).__name__) from None

    def _exists(self, key: str) -> bool:
        try:
            return self.dest.head(key) is not None
        except DestError as exc:
            raise StoreUnavailable(type(exc).__name__) from None

    def _create_upload(self, request: UploadRequest) -> str:
        key = self._full(rules.bundle_key(request.volunteer, request.session))
        answer = self._store("create_multipart_upload", Key=key, ContentType="application/octet-stream")
        return str(answer["UploadId"])

    def _abort(self, request: UploadRequest, upload_id: str) -> None:
        key = self._full(rules.bundle_key(request.volunteer, request.session))
        with contextlib.suppress(StoreUnavailable):  # gone already, or the store's lifecycle rule removes it
            self._store("abort_multipart_upload", Key=key, UploadId=upload_id)

    def _count_done(self) -> None:
        with self._lock:
            self._uploading = max(0, self._uploading - 1)

    def _parts_held(self, request: UploadRequest, record: rules.Record) -> dict[int, tuple[str, int]]:
        """Part number → (ETag, size) of the parts the store holds for the upload."""
        key = self._full(rules.bundle_key(request.volunteer, request.session))
        held: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            page = self._store("list_parts", Key=key, UploadId=record.upload_id, PartNumberMarker=marker)
            for item in page.get("Parts", []):
                held[int(item["PartNumber"])] = (str(item["ETag"]), int(item["Size"]))
            if not page.get("IsTruncated"):
                return held
            marker = int(page.get("NextPartNumberMarker", 0))
            if marker <= 0:
                return held

    def _upload_answer(
        self,
        request: UploadRequest,
        record: rules.Record,
        now: int,
        *,
        have: dict[int, tuple[str, int]] | None = None,
        urls: bool = True,
    ) -> dict[str, Any]:
        held = self._parts_held(request, record) if have is None else have
        key = self._full(rules.bundle_key(request.volunteer, request.session))
        kept, send = [], []
        for number, _offset, size in parts(record.size, record.part_size):
            if held.get(number, ("", -1))[1] == size:
                kept.append({"part": number, "size": size, "etag": held[number][0]})
                continue
            item: dict[str, Any] = {"part": number, "size": size}
            if urls:
                item["url"] = self._presign(key, record.upload_id, number)
            send.append(item)
        return {
            "status": "upload",
            "part_size": record.part_size,
            "expires": now + self.settings.url_ttl_s,
            "have": kept,
            "send": send,
        }

    def _presign(self, key: str, upload_id: str, number: int) -> str:
        try:
            return str(
                self._presigner.generate_presigned_url(
                    "upload_part",
                    Params={
                        "Bucket": self.dest.bucket,
                        "Key": key,
                        "UploadId": upload_id,
                        "PartNumber": number,
                    },
                    ExpiresIn=self.settings.url_ttl_s,
                )
            )
        except Exception as exc:
            raise StoreUnavailable(type(exc).__name__) from None

    def _digest(self, key: str) -> tuple[int, str]:
        """Size and SHA-256 of the completed object, read once."""
        try:
            stream, _info = self.dest.reader(key)
        except DestError as exc:
            raise StoreUnavailable(type(exc).__name__) from None
        digest, size = hashlib.sha256(), 0
        try:
            with stream:
                while chunk := stream.read(READ_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except DestError as exc:
            raise StoreUnavailable(type(exc).__name__) from None
        return size, digest.hexdigest()


def _stored(request: UploadRequest, *, already: bool) -> dict[str, Any]:
    return {"status": "stored", "size": request.size, "sha256": request.sha256, "already": already}


class RetryLater(RequestRefused):
    """A refusal the client waits out: ``retry_after`` seconds."""

    def __init__(self, reason: str, message: str, retry_after: float) -> None:
        super().__init__(reason, message)
        self.retry_after = max(1, int(retry_after + 0.999))


def _retry(reason: str, message: str, seconds: float) -> NoReturn:
    raise RetryLater(reason, message, seconds)


__all__ = ["DEFAULT_MAX_BUNDLE_SIZE", "Intake", "RetryLater", "Settings", "StoreUnavailable"]
