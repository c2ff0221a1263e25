"""``s3://bucket/prefix`` as DEST (docs/dataset.md, "S3 DEST"): :class:`S3Dest`, and the S3 pieces
agent/dataset/source.py shares (the client, the error mapping, a bounded body stream).

Any S3-compatible store through boto3, whose standard configuration gives the endpoint and the
credentials (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, the credential chain). A new object is written with
``If-None-Match: *``, a replacement with ``If-Match`` on the old ETag. A streamed whole object
(:meth:`S3Dest.writer`) of at most :data:`PART_SIZE` bytes is one ``PutObject``; a larger one a
multipart upload of :data:`PART_SIZE` parts held in memory one at a time, completed only when the
whole object is written (S3 shows no object for an incomplete upload) and aborted on an error.
Messages give the code the store answered, never its free text or a body.
"""

from __future__ import annotations

import builtins
import datetime
import io
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from agent.dataset.dest import (
    Blob,
    Dest,
    DestError,
    DestUnusable,
    ObjectExists,
    ObjectInfo,
    ObjectKeyRefused,
    ObjectWriter,
    object_changed,
    object_missing,
    object_too_large,
)
from agent.dataset.object_keys import check_key, check_prefix, key_problem
from agent.errors import OptinError

#: A streamed object's upload part (docs/dataset.md, "S3 DEST"): larger objects are multipart uploads
#: of parts this large, each held in memory while it is sent.
PART_SIZE = 64 * 2**20
#: The smallest part S3 (and SeaweedFS) accepts but for the last one.
MIN_PART_SIZE = 5 * 2**20
_READ_BUFFER = 1 << 20

BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
}
_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict"}
#: Timeouts and retries of the S3 client: a store that does not answer fails the command, never hangs it.
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60


def split_s3_url(url: str) -> tuple[str, str] | None:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (prefix without slashes at its ends, may be
    empty), or None when it does not start with ``s3://`` and a bucket name of the rules. What a
    prefix may hold is the caller's (DEST and SRC differ)."""
    rest = url[len("s3://") :] if url.startswith("s3://") else ""
    bucket, _, prefix = rest.partition("/")
    if not BUCKET.fullmatch(bucket) or ".." in bucket:
        return None
    return bucket, prefix.strip("/")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (prefix without slashes at its ends, may be empty).

    :raises DestUnusable: not such a URL, or a bucket name or prefix outside the rules.
    """
    split = split_s3_url(url)
    if split is None:
        msg = (
            f"DEST {url!r} does not start with s3:// and a bucket name (3-63 of a-z 0-9 . -). "
            "Fix: give s3://bucket/prefix"
        )
        raise DestUnusable(msg)
    bucket, prefix = split
    if prefix:
        try:
            check_key(prefix)
        except ObjectKeyRefused:
            msg = (
                f"the prefix of DEST {url!r} is not a plain folder path (letters, digits, _ = . - and /, "
                "no '..'). Fix: choose a simpler prefix"
            )
            raise DestUnusable(msg) from None
    return bucket, prefix


class S3Dest(Dest):
    """``s3://bucket/prefix`` as DEST, through a boto3 S3 client (see the module's docstring)."""

    def __init__(self, bucket: str, prefix: str, client: Any, *, part_size: int = PART_SIZE) -> None:
        if part_size < MIN_PART_SIZE:
            msg = f"an S3 upload part must be at least {MIN_PART_SIZE} bytes, not {part_size}"
            raise ValueError(msg)
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        #: The size of a streamed object's upload parts (:data:`PART_SIZE`; tests lower it).
        self.part_size = part_size
        self._client = client
        self._versioning: str | None = None

    @classmethod
    def open(cls, url: str, *, session: Any = None, part_size: int = PART_SIZE) -> S3Dest:
        """The DEST ``url`` with a client from boto3's standard configuration (or ``session``'s),
        once the bucket answered (:meth:`check_bucket`: some stores create a bucket on the first write,
        so a misspelt name would otherwise become a new bucket).

        :param part_size: the multipart threshold and part size of :meth:`writer`, at least
            :data:`MIN_PART_SIZE`.
        :raises DestUnusable: no such bucket, credentials refused or missing, a broken profile.
        """
        bucket, prefix = parse_s3_url(url)
        client = s3_client(url, session=session)
        dest = cls(bucket, prefix, client, part_size=part_size)
        dest.check_bucket()
        return dest

    def check_bucket(self) -> None:
        """One listing of at most one key (a GET: its error answer names the problem, a HEAD's would not).

        :raises DestUnusable: the bucket is not there, or the credentials are refused or missing.
        """
        base = f"{self.prefix}/" if self.prefix else ""
        self._call("open DEST", "", "list_objects_v2", Prefix=base, MaxKeys=1)

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, key: str, what: str, exc: Exception) -> DestError:
        """Our error for a failed S3 call: the code the store gave, never its free text or a body."""
        error = s3_error(exc, what=what, shown=self.where(key), bucket=self.bucket)  # key checked (or "")
        return error if isinstance(error, DestError) else DestError(str(error))

    def _call(self, what: str, key: str, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = getattr(self._client, method)(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise self._fail(key, what, exc) from None
        return answer

    def put_new(self, key: str, data: bytes) -> str:
        full = self._full(key)
        try:
            answer = self._client.put_object(Bucket=self.bucket, Key=full, Body=data, IfNoneMatch="*")
        except Exception as exc:
            code, status = error_code(exc)
            if code in _CONFLICT or status in (409, 412):
                msg = (
                    f"cannot write {self.where(key)}: an object is already there, and objects of this kind "
                    "are never overwritten. Fix: this is a bug or a second writer; check that one command "
                    "at a time writes to DEST"
                )
                raise ObjectExists(msg) from None
            raise self._fail(key, "write", exc) from None
        return str(answer["ETag"])

    def replace(self, key: str, data: bytes, *, expected: str | None) -> str:
        full = self._full(key)
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        try:
            answer = self._client.put_object(Bucket=self.bucket, Key=full, Body=data, **condition)
        except Exception as exc:
            code, status = error_code(exc)
            if code in _CONFLICT or code == "NoSuchKey" or status in (404, 409, 412):
                raise object_changed(
                    self.where(key), expected, "unknown" if status != 404 else None
                ) from None
            raise self._fail(key, "replace", exc) from None
        return str(answer["ETag"])

    def get(self, key: str, *, max_size: int) -> Blob:
        full = self._full(key)
        shown = self.where(check_key(key))
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            code, status = error_code(exc)
            if code in ("NoSuchKey", "404") or status == 404:
                raise object_missing(shown) from None
            raise self._fail(key, "read", exc) from None
        body = answer["Body"]
        try:
            size = int(answer.get("ContentLength", 0))
            if size > max_size:
                raise object_too_large(shown, size, max_size)
            data = bytes(body.read(max_size + 1))
        except DestError:
            raise
        except Exception as exc:
            raise self._fail(key, "read", exc) from None
        finally:
            body.close()
        if len(data) > max_size:
            raise object_too_large(shown, len(data), max_size)
        return Blob(data, str(answer["ETag"]))

    def writer(self, key: str) -> ObjectWriter:
        return _S3Writer(self, key, self._full(key))

    def reader(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        full = self._full(key)
        shown = self.where(key)
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            code, status = error_code(exc)
            if code in ("NoSuchKey", "404") or status == 404:
                raise object_missing(shown) from None
            raise self._fail(key, "read", exc) from None
        info = ObjectInfo(key, int(answer.get("ContentLength", 0)), str(answer["ETag"]))
        return body_stream(answer["Body"], info.size, shown, DestError), info

    def head(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        try:
            answer = self._client.head_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            code, status = error_code(exc)
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return None
            raise self._fail(key, "look at", exc) from None
        return ObjectInfo(key, int(answer["ContentLength"]), str(answer["ETag"]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call("list", prefix, "list_objects_v2", Prefix=base + prefix, **extra)
            for item in page.get("Contents", []):
                full = str(item["Key"])
                if not full.startswith(base) or full.endswith("/"):
                    continue  # "dir/" markers (pyarrow's S3FileSystem writes them)
                key = full[len(base) :]
                if key_problem(key):
                    continue
                yield ObjectInfo(key, int(item["Size"]), str(item.get("ETag", "")) or None)
            if not page.get("IsTruncated"):
                return
            token = str(page["NextContinuationToken"])

    def versioning(self) -> str:
        """The bucket's versioning state: ``Enabled``, ``Suspended`` or ``""`` (never enabled)."""
        if self._versioning is None:
            answer = self._call("read the versioning of", "", "get_bucket_versioning")
            self._versioning = str(answer.get("Status", ""))
        return self._versioning

    def delete(self, key: str) -> bool:
        full = self._full(key)
        existed = self.head(key) is not None
        versions: builtins.list[str] = []
        versioned = self.versioning() in ("Enabled", "Suspended")
        if versioned:
            markers: dict[str, str] = {}
            while True:
                answer = self._call(
                    "list the versions of", key, "list_object_versions", Prefix=full, **markers
                )
                for item in [*answer.get("Versions", []), *answer.get("DeleteMarkers", [])]:
                    if item.get("Key") == full:
                        versions.append(str(item["VersionId"]))
                if not answer.get("IsTruncated"):
                    break
                markers = {
                    "KeyMarker": str(answer["NextKeyMarker"]),
                    "VersionIdMarker": str(answer["NextVersionIdMarker"]),
                }
        if not versions and not versioned:
            self._call("delete", key, "delete_object", Key=full)
        # On a versioned bucket a delete without a version id would only add a delete marker: every
        # version is deleted by its id, and a key with none left is already gone.
        for version in versions:
            self._call("delete", key, "delete_object", Key=full, VersionId=version)
        return existed or bool(versions)

    def abort_uploads(self, before: datetime.datetime) -> int:
        base = f"{self.prefix}/" if self.prefix else ""
        aborted = 0
        markers: dict[str, str] = {}
        while True:
            page = self._call(
                "list the incomplete uploads under", "", "list_multipart_uploads", Prefix=base, **markers
            )
            for upload in page.get("Uploads", []):
                full, started = str(upload["Key"]), upload.get("Initiated")
                if (
                    not full.startswith(base)
                    or not isinstance(started, datetime.datetime)
                    or started.timestamp() >= before.timestamp()
                ):
                    continue
                self._call(
                    "abort an incomplete upload under",
                    "",
                    "abort_multipart_upload",
                    Key=full,
                    UploadId=str(upload["UploadId"]),
                )
                aborted += 1
            key_marker, upload_marker = page.get("NextKeyMarker"), page.get("NextUploadIdMarker")
            if not page.get("IsTruncated") or not key_marker:
                return aborted
            markers = {"KeyMarker": str(key_marker)}
            if upload_marker:
                markers["UploadIdMarker"] = str(upload_marker)


class _S3Writer(ObjectWriter):
    """A whole object: one ``PutObject`` up to the DEST's part size, else a multipart upload of parts of
    that size (one held in memory at a time), completed on a clean exit and aborted on an exception."""

    def __init__(self, dest: S3Dest, key: str, full: str) -> None:
        super().__init__(key, dest.where(key))
        self._dest = dest
        self._full = full
        self._part_size = dest.part_size
        self._buffer = bytearray()
        self._upload: str | None = None
        self._parts: builtins.list[dict[str, Any]] = []

    def _open(self) -> None:
        pass  # nothing is sent before a part is full or the object is complete

    def _write(self, view: memoryview) -> None:
        while view:
            take = min(len(view), self._part_size - len(self._buffer))
            self._buffer += view[:take]
            view = view[take:]
            if view:  # a full part and more to come: the object is larger than one part
                self._send_part()

    def _send_part(self) -> None:
        call = self._dest._call
        if self._upload is None:
            answer = call("write", self.key, "create_multipart_upload", Key=self._full)
            self._upload = str(answer["UploadId"])
        number = len(self._parts) + 1
        part, self._buffer = self._buffer, bytearray()
        answer = call(
            "write",
            self.key,
            "upload_part",
            Key=self._full,
            UploadId=self._upload,
            PartNumber=number,
            Body=part,
        )
        self._parts.append({"PartNumber": number, "ETag": str(answer["ETag"])})

    def _finish(self) -> ObjectInfo:
        call = self._dest._call
        if self._upload is None:
            answer = call("write", self.key, "put_object", Key=self._full, Body=self._buffer)
        else:
            self._send_part()  # the last one, at least one byte
            answer = call(
                "write",
                self.key,
                "complete_multipart_upload",
                Key=self._full,
                UploadId=self._upload,
                MultipartUpload={"Parts": self._parts},
            )
            self._upload = None
        self._buffer = bytearray()
        return ObjectInfo(self.key, self.size, str(answer["ETag"]))

    def _abort(self) -> None:
        self._buffer = bytearray()
        upload, self._upload = self._upload, None
        if upload is not None:
            self._dest._call(
                "abort the upload of", self.key, "abort_multipart_upload", Key=self._full, UploadId=upload
            )


# --- what source.py shares -------------------------------------------------------------------------


def s3_client(
    url: str, *, session: Any = None, unusable: type[OptinError] = DestUnusable, signature_version: str = ""
) -> Any:
    """A boto3 S3 client from the standard configuration (or ``session``'s), with bounded timeouts and
    retries: a store that does not answer fails the command, never hangs it. ``signature_version``
    ``s3v4`` for presigned URLs that sign the host alone (the default presigns some stores' way, which
    signs ``Content-MD5`` and ``Content-Type`` too).

    :raises unusable: botocore's configuration is broken (a profile that is not there, ...).
    """
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": 3, "mode": "standard"},
        **({"signature_version": signature_version} if signature_version else {}),
    )
    try:
        return (session or boto3.session.Session()).client("s3", config=config)
    except Exception as exc:  # botocore's configuration errors (a profile that is not there, ...)
        msg = (
            f"cannot set up the S3 client for {url}: {type(exc).__name__}. Fix: check AWS_PROFILE, "
            "AWS_CONFIG_FILE and AWS_ENDPOINT_URL"
        )
        raise unusable(msg) from None


def error_code(exc: BaseException) -> tuple[str, int | None]:
    """The S3 error code and HTTP status of a failed call (``""``, None when it is no store answer)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", None
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status if isinstance(status, int) else None


def s3_error(
    exc: Exception,
    *,
    what: str,
    shown: str,
    bucket: str,
    access: str = "read and write",
    unusable: type[OptinError] = DestUnusable,
    error: type[OptinError] = DestError,
) -> OptinError:
    """Our error for a failed S3 call: ``unusable`` (exit 2) for credentials and a missing bucket,
    ``error`` for the rest; the code the store gave, never its free text or a body."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        code = code or "unknown"
        if code in _DENIED or status == 403:
            msg = (
                f"cannot {what} {shown}: the store refused the credentials ({code}). Fix: check "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and that they may "
                f"{access} bucket {bucket}"
            )
            return unusable(msg)
        if code == "NoSuchBucket":
            msg = f"cannot {what} {shown}: there is no bucket {bucket}. Fix: create it, or fix the URL"
            return unusable(msg)
        msg = f"cannot {what} {shown}: the store answered {code} (HTTP {status}). Fix: check the store"
        return error(msg)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        msg = (
            f"cannot {what} {shown}: no S3 credentials were found. Fix: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        )
        return unusable(msg)
    if isinstance(exc, EndpointConnectionError):
        msg = (
            f"cannot {what} {shown}: the S3 endpoint does not answer. Fix: check AWS_ENDPOINT_URL "
            "(or the profile's endpoint_url) and the network"
        )
        return error(msg)
    msg = f"cannot {what} {shown}: {type(exc).__name__}. Fix: check the store and the network"
    return error(msg)


class S3Body(io.RawIOBase):
    """An object's body read as a raw stream of exactly ``size`` bytes: never more, and an early end or
    a broken connection is ``error`` naming ``shown`` (not a short read the caller might take as the
    end). Wrap it in :class:`io.BufferedReader` (:func:`body_stream`)."""

    def __init__(self, body: Any, size: int, shown: str, error: type[OptinError]) -> None:
        super().__init__()
        self._body = body
        self._left = size
        self._size = size
        self._shown = shown
        self._error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._left <= 0 or not len(view):
            return 0
        try:
            data = self._body.read(min(len(view), self._left))
        except Exception as exc:  # botocore's read timeouts, broken connections, short bodies
            msg = (
                f"cannot read {self._shown}: {type(exc).__name__} after {self._size - self._left:,} of "
                f"{self._size:,} bytes. Fix: check the store and the network, then run again"
            )
            raise self._error(msg) from None
        if not data:
            msg = (
                f"cannot read {self._shown}: it ended after {self._size - self._left:,} of {self._size:,} "
                "bytes (it was replaced meanwhile, or the connection broke). Fix: run again"
            )
            raise self._error(msg)
        n = len(data)
        view[:n] = data
        self._left -= n
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()


def body_stream(body: Any, size: int, shown: str, error: type[OptinError]) -> BinaryIO:
    """:class:`S3Body` buffered: what :meth:`S3Dest.reader` and the S3 source hand out."""
    return io.BufferedReader(S3Body(body, size, shown, error), buffer_size=_READ_BUFFER)
