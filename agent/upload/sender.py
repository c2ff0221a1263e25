"""Send one exported bundle to the study's intake (docs/upload.md): begin, the parts, complete, the
verdict; resumed from what the store already holds; the delivery record kept up to date throughout.

The bundle is opened once, without following a link, and checked against the size and SHA-256 the
export recorded (a re-export replaces the file: a changed bundle is not sent); its bytes are then read
from that open file, so a file replaced mid-upload changes nothing. Each part goes with its MD5
(``Content-MD5``) and counts as sent only when the store's ETag is that MD5. A network failure is
retried with backoff, then left ``uploading``: the next ``optin upload`` resumes from the parts the
store holds. A hostile intake gets a bounded number of rounds, waits and bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from agent.errors import OptinError
from agent.export import deliveries
from agent.export.deliveries import Delivery
from agent.paths import Dirs
from agent.upload.http import Client, NetworkError
from agent.upload_protocol import (
    MAX_ANSWER_BYTES,
    Answer,
    BadAnswer,
    UploadRequest,
    action_url,
    parse_answer,
    parts,
    sign_request,
)

#: Attempts of one request (the first and the retries) before the bundle is left for the next run.
ATTEMPTS = 5
#: Seconds before the first retry; each later one waits twice as long.
BACKOFF_S = 1.0
#: Most seconds one bundle spends waiting for ``retry`` answers before it is left for the next run.
MAX_WAIT_S = 600.0
#: Most ``begin``/``complete`` rounds for one bundle (URLs renewed, parts missing at ``complete``).
MAX_ROUNDS = 20
READ_CHUNK = 1024 * 1024

#: (bytes the store holds, bundle size): called as parts are acknowledged.
Progress = Callable[[int, int], None]


class UploadFailed(OptinError):
    """The bundle was not delivered this time (exit 1): ``retry`` says whether running ``optin upload``
    again can help (the network, the intake's limits) or not (refused; the bundle changed). Its
    message says what failed and the fix, never content; the review window shows it as it is."""

    def __init__(self, message: str, *, retry: bool, reason: str = "") -> None:
        super().__init__(message)
        self.retry = retry
        self.reason = reason


@dataclass(frozen=True)
class Signer:
    """Who signs the requests: the volunteer's identity, for one study."""

    identity: bytes
    study: str
    volunteer: str
    signing_key: bytes


@dataclass
class Sender:
    """Sends bundles to one intake (see the module docstring)."""

    dirs: Dirs
    client: Client
    intake_url: str
    signer: Signer
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def send(self, delivery: Delivery, progress: Progress | None = None) -> Delivery:
        """Deliver ``delivery``'s bundle; the record as it ends (``delivered``), saved.

        :raises UploadFailed: not delivered; the record says how far it got (saved).
        """
        if delivery.state == "damaged":
            _damaged(delivery)
        if delivery.study != self.signer.study:
            msg = (
                f"session {delivery.session} was exported for study {delivery.study!r}, not the installed "
                f"{self.signer.study!r}; it cannot be uploaded to this study. Fix: export it again"
            )
            raise UploadFailed(msg, retry=False)
        with _open_bundle(delivery) as fd:
            run = _Run(self, delivery, fd, progress)
            return run.deliver()


class _Run:
    """One bundle's upload."""

    def __init__(self, sender: Sender, delivery: Delivery, fd: int, progress: Progress | None) -> None:
        self.s = sender
        self.delivery = delivery
        self.fd = fd
        self.progress = progress
        self.waited = 0.0

    # -- the record ---------------------------------------------------------------------------------

    def save(self, **changes: object) -> Delivery:
        self.delivery = deliveries.updated(self.delivery, **changes)
        deliveries.save(self.s.dirs, self.delivery)
        return self.delivery

    def fail(self, message: str, *, retry: bool, reason: str = "") -> NoReturn:
        """The failure, saved: ``refused`` with the intake's ``reason``, else the message on the record."""
        if reason:
            self.save(state="refused", reason=reason, message=message)
        else:
            self.save(message=message)
        raise UploadFailed(message, retry=retry, reason=reason)

    # -- the rounds ---------------------------------------------------------------------------------

    def deliver(self) -> Delivery:
        answer = self.ask("begin")
        for _round in range(MAX_ROUNDS):  # every begin and complete counts: a hostile intake cannot loop us
            if answer.status == "stored":
                if (answer.size, answer.sha256) != (self.delivery.size, self.delivery.sha256):
                    return self.fail(
                        "the intake said it stored another bundle than this export. Fix: run optin upload "
                        "again; if it says so again, tell the study",
                        retry=True,
                    )
                return self.save(state="delivered", sent=self.delivery.size, reason="", message="")
            renewed = self.send_parts(answer)  # an upload answer: the parts to send
            answer = self.ask("begin" if renewed else "complete")  # expired URLs: begin again
        return self.fail(
            f"the intake kept asking for parts after {MAX_ROUNDS} rounds. Fix: run optin upload again later; "
            "if it keeps happening, tell the study",
            retry=True,
        )

    def ask(self, action: str) -> Answer:
        """One signed request, retried on the network and waited on ``retry``; ``refused`` raises."""
        d = self.delivery
        for attempt in range(ATTEMPTS):
            request = UploadRequest(
                action,
                self.s.signer.study,
                self.s.signer.volunteer,
                self.s.signer.signing_key,
                d.session,
                d.size,
                d.sha256,
                int(self.s.clock()),
            )
            body = sign_request(self.s.signer.identity, request)
            try:
                reply = self.s.client.request(
                    "POST",
                    action_url(self.s.intake_url, action),
                    body,
                    headers={"Content-Type": "application/json"},
                    limit=MAX_ANSWER_BYTES,
                )
            except NetworkError as exc:
                self.backoff(attempt, f"the intake did not answer: {exc}")
                continue
            try:
                answer = parse_answer(reply.body)
            except BadAnswer as exc:
                if reply.status >= 500:  # a proxy's error page: the intake is down for now
                    self.backoff(attempt, f"the intake answered HTTP {reply.status}")
                    continue
                self.fail(
                    f"the intake's answer (HTTP {reply.status}) is not one of optin-upload/1: {exc}. Fix: "
                    "check the study's [upload] url, or tell the study",
                    retry=True,
                )
            if answer.status == "retry":
                self.wait(answer.retry_after, answer.reason)
                continue
            if answer.status == "refused":
                self.refused(answer)
            return answer
        return self.fail(
            f"the intake did not answer after {ATTEMPTS} tries ({self.delivery.message}). Fix: check the "
            "network, then run optin upload again (it resumes where it stopped)",
            retry=True,
        )

    def refused(self, answer: Answer) -> NoReturn:
        from agent.untrusted_text import visible
        from agent.upload_protocol import REASONS, SHOWN_MESSAGE

        fix = REASONS.get(answer.reason, (0, "ask the study"))[1]
        said = visible(answer.message, limit=SHOWN_MESSAGE)
        reason = visible(answer.reason, limit=64)  # from the intake: shown, never trusted
        message = f"the intake refused session {self.delivery.session}: {reason} ({said}). Fix: {fix}"
        retry = answer.reason in ("sha256_mismatch", "size_mismatch", "stale_request")
        self.fail(message, retry=retry, reason=reason)

    def backoff(self, attempt: int, why: str) -> None:
        self.save(message=why)
        if attempt + 1 < ATTEMPTS:
            self.s.sleep(BACKOFF_S * 2**attempt)

    def wait(self, seconds: int, reason: str) -> None:
        if self.waited + seconds > MAX_WAIT_S:
            self.fail(
                f"the intake asks to wait ({reason}) longer than optin waits. Fix: run optin upload again "
                "later",
                retry=True,
            )
        self.save(message=f"waiting {seconds} s: {reason}")
        self.waited += seconds
        self.s.sleep(seconds)

    # -- the parts ----------------------------------------------------------------------------------

    def send_parts(self, answer: Answer) -> bool:
        """Send the parts ``answer`` asks for; True when their URLs expired (begin again)."""
        plan = {n: (offset, size) for n, offset, size in parts(self.delivery.size, answer.part_size)}
        listed = [p.part for p in answer.have] + [p.part for p in answer.send]
        if sorted(listed) != sorted(plan) or any(
            plan[p.part][1] != p.size for p in (*answer.have, *answer.send)
        ):
            self.fail(
                "the intake's parts do not cover the bundle. Fix: tell the study (its intake answered "
                "parts that are not this bundle's)",
                retry=True,
            )
        held = sum(p.size for p in answer.have)
        self.save(state="uploading", sent=held, reason="", message="")
        self.show(held)
        for part in sorted(answer.send, key=lambda p: p.part):
            if self.s.clock() >= answer.expires - 30:
                return True
            offset, size = plan[part.part]
            data = _read_at(self.fd, offset, size)
            if len(data) != size:
                self.fail("the bundle became shorter while it was sent. Fix: export it again", retry=False)
            if not self.put(part.url, data):
                return True
            held += size
            self.save(sent=held)
            self.show(held)
        return False

    def put(self, url: str, data: bytes) -> bool:
        """PUT one part; True once the store acknowledged exactly these bytes, False when its URL expired."""
        md5 = hashlib.md5(data, usedforsecurity=False)
        headers = {
            "Content-MD5": base64.b64encode(md5.digest()).decode("ascii"),
            "Content-Type": "application/octet-stream",
        }
        for attempt in range(ATTEMPTS):
            try:
                reply = self.s.client.request("PUT", url, data, headers=headers, limit=64 * 1024)
            except NetworkError as exc:
                self.backoff(attempt, f"sending a part failed: {exc}")
                continue
            if 200 <= reply.status < 300 and reply.etag.strip('"').lower() == md5.hexdigest():
                return True
            if reply.status == 403:
                return False  # an expired (or refused) URL: the intake gives new ones
            if 200 <= reply.status < 300:
                self.backoff(attempt, "the store acknowledged a part with another checksum")
                continue
            self.backoff(attempt, f"the store answered HTTP {reply.status} to a part")
        return self.fail(
            f"a part could not be sent after {ATTEMPTS} tries ({self.delivery.message}). Fix: check the "
            "network, then run optin upload again (it resumes where it stopped); if the store is full, tell "
            "the study",
            retry=True,
        )

    def show(self, held: int) -> None:
        if self.progress is not None:
            self.progress(held, self.delivery.size)


def _read_at(fd: int, offset: int, size: int) -> bytes:
    """``size`` bytes of ``fd`` from ``offset`` (fewer at its end), by lseek and read: no pread on Windows."""
    os.lseek(fd, offset, os.SEEK_SET)
    out = bytearray()
    while len(out) < size and (chunk := os.read(fd, size - len(out))):
        out += chunk
    return bytes(out)


def _damaged(delivery: Delivery) -> NoReturn:
    msg = (
        f"optin's record of session {delivery.session}'s export is damaged. Fix: export it again "
        "(optin export ID --out DIR, or the review window)"
    )
    raise UploadFailed(msg, retry=False)


@contextlib.contextmanager
def _open_bundle(delivery: Delivery) -> Iterator[int]:
    """The bundle's file, opened without following a link, checked to be the one exported."""
    if delivery.state == "damaged" or not delivery.bundle:
        _damaged(delivery)
    flags = (
        os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    )
    try:
        fd = os.open(delivery.bundle, flags)
    except OSError as exc:
        msg = (
            f"cannot open the export of session {delivery.session} ({delivery.bundle}): {exc.strerror}. "
            "Fix: put it back where it was exported, or export it again"
        )
        raise UploadFailed(msg, retry=False) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            msg = (
                f"the export of session {delivery.session} ({delivery.bundle}) is not a regular file. Fix: "
                "export it again"
            )
            raise UploadFailed(msg, retry=False)
        digest, size = hashlib.sha256(), 0
        while chunk := os.read(fd, READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        if size != delivery.size or digest.hexdigest() != delivery.sha256:
            msg = (
                f"the export of session {delivery.session} ({delivery.bundle}) changed since optin wrote it. "
                "Fix: export it again"
            )
            raise UploadFailed(msg, retry=False)
        yield fd
    finally:
        os.close(fd)


def one_upload(dirs: Dirs) -> contextlib.AbstractContextManager[None]:
    """Hold the lock of ``optin upload`` (the command, the review window): one upload at a time, so two
    never send one bundle at once.

    :raises UsageError: another upload holds it.
    """
    from agent.paths import runtime_lock

    busy = "another optin upload is running; one at a time. Fix: wait for it to end, then try again"
    return runtime_lock(dirs, "upload.lock", busy)


def signer_for(identity: bytes, study_id: str) -> Signer:
    """The volunteer's signer for ``study_id`` (their per-study key and pseudonym, derived)."""
    from agent.store import signing

    return Signer(
        identity,
        study_id,
        signing.volunteer_id(identity, study_id),
        signing.public_signing_key(identity, study_id),
    )


def delete_delivered(dirs: Dirs, delivery: Delivery) -> bool:
    """The study's ``after_upload = "delete"``, once the intake confirmed: shred the session and remove
    its export file. False when nothing was there to delete."""
    from agent.errors import NotFound
    from agent.store.retention import shred_session

    if delivery.state != "delivered":
        msg = f"session {delivery.session} is not delivered ({delivery.state}): nothing is deleted"
        raise ValueError(msg)
    deleted = False
    with contextlib.suppress(NotFound):
        shred_session(dirs, delivery.session, reason="delivered")
        deleted = True
    bundle = Path(delivery.bundle)
    with contextlib.suppress(FileNotFoundError):
        if bundle.is_file() and not bundle.is_symlink():
            bundle.unlink()
            deleted = True
    return deleted


__all__ = ["Sender", "Signer", "UploadFailed", "delete_delivered", "one_upload", "signer_for"]
