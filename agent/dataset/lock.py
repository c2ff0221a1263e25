"""``LOCK``: the lease of the one command that writes to a DEST (docs/dataset.md, The lock).

``LOCK`` is canonical JSON ``{"command", "expires_at", "owner", "pid", "started_at"}``, written with
``If-None-Match: *`` when there is none and ``If-Match`` on the ETag read when an expired one (or, with
``--break-lock``, any) is taken over, so of two commands that race for it exactly one wins where the
store honours conditional writes. The holder renews ``expires_at`` (now + :data:`LEASE_S`) every
:data:`RENEW_EVERY_S` on a daemon thread; a renewal that finds ``LOCK`` changed sets :attr:`Lock.lost`
and stops, and publishing refuses from then on. :meth:`Lock.release` deletes it when it is still ours.

At acquisition the lock also notes which objects DEST already holds in the folders garbage collection
looks in (:meth:`Lock.existed`): "older than the lock's start" in docs/dataset.md, without comparing a
store's clock with this machine's.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from agent.canonical_json import canonical
from agent.dataset.dest import Dest, DestError, DestUnusable, ObjectChanged, ObjectMissing, ObjectTooLarge
from agent.dataset.layout import GC_PREFIXES, LOCK_KEY, LayoutError, parse_utc, utc
from agent.dataset.manifest import JsonReader, load_json

#: How long a lease lasts without renewal, and how often the holder renews it.
LEASE_S = 120.0
RENEW_EVERY_S = 30.0
MAX_LOCK = 4 * 1024
COMMANDS = ("build", "withdraw")
_OWNER = re.compile(r"[0-9a-f]{16}", re.ASCII)

Clock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    """Now, an aware UTC datetime (the default clock)."""
    return datetime.datetime.now(datetime.timezone.utc)


class LockHeld(DestUnusable):
    """Another command holds DEST's lock (exit 2: never waits)."""


class LockLost(DestError):
    """This command's lock was taken over, could not be renewed, or was released (exit 1)."""


@dataclass(frozen=True)
class LockRecord:
    """What ``LOCK`` says."""

    owner: str
    command: str
    pid: int
    started_at: str
    expires_at: str

    def to_bytes(self) -> bytes:
        return canonical(
            {
                "command": self.command,
                "expires_at": self.expires_at,
                "owner": self.owner,
                "pid": self.pid,
                "started_at": self.started_at,
            }
        )

    @classmethod
    def parse(cls, data: bytes, doc: str) -> LockRecord:
        r = JsonReader(doc)
        d = r.obj(load_json(data, doc), "the lock", ("command", "expires_at", "owner", "pid", "started_at"))
        if d["command"] not in COMMANDS:
            r.refuse("command", "is not build or withdraw")
        for key in ("started_at", "expires_at"):
            try:
                parse_utc(d[key])
            except LayoutError:
                r.refuse(key, "is not a UTC timestamp")
        owner = r.text(d["owner"], "owner", _OWNER)
        return cls(owner, d["command"], r.integer(d["pid"], "pid"), d["started_at"], d["expires_at"])


class Lock:
    """This command's hold on ``LOCK`` (:meth:`acquire`; a context manager that releases it)."""

    def __init__(
        self,
        dest: Dest,
        record: LockRecord,
        etag: str,
        *,
        now: Clock,
        lease_s: float,
        existing: frozenset[str],
    ) -> None:
        self.dest = dest
        self.record = record
        self.started_at = parse_utc(record.started_at)
        self.lost = False
        self._etag = etag
        #: The clock this lock (and publishing under it) reads.
        self.clock = now
        self._lease = datetime.timedelta(seconds=lease_s)
        self._existing = existing
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._released = False

    @property
    def owner(self) -> str:
        return self.record.owner

    @property
    def command(self) -> str:
        return self.record.command

    @property
    def expires_at(self) -> datetime.datetime:
        return parse_utc(self.record.expires_at)

    @classmethod
    def acquire(
        cls,
        dest: Dest,
        command: str,
        *,
        break_lock: bool = False,
        now: Clock = utc_now,
        lease_s: float = LEASE_S,
        renew_every: float | None = RENEW_EVERY_S,
    ) -> Lock:
        """Take DEST's lock for ``command`` (``build`` or ``withdraw``), renewed every ``renew_every``
        seconds on a daemon thread (None: only by calling :meth:`renew`).

        :raises LockHeld: another owner's lease has not expired (and ``break_lock`` is False), or another
            command took the lock at the same moment.
        """
        if command not in COMMANDS:
            msg = f"{command!r} is not a command that takes DEST's lock. Fix: this is a bug"
            raise LayoutError(msg)
        owner = secrets.token_hex(8)
        shown = dest.where(LOCK_KEY)
        for _attempt in range(3):
            started = now()
            record = LockRecord(
                owner, command, os.getpid(), utc(started), utc(started + datetime.timedelta(seconds=lease_s))
            )
            expected = _takeable(dest, started, break_lock=break_lock)
            try:
                etag = dest.replace(LOCK_KEY, record.to_bytes(), expected=expected)
            except ObjectChanged:
                continue  # another command wrote LOCK in between: look again
            try:
                existing = frozenset(info.key for prefix in GC_PREFIXES for info in dest.list(prefix))
            except BaseException:
                with contextlib.suppress(DestError):  # give the lock back; the listing's error is the news
                    dest.delete(LOCK_KEY)
                raise
            lock = cls(dest, record, etag, now=now, lease_s=lease_s, existing=existing)
            if renew_every is not None:
                lock._start(renew_every)
            return lock
        msg = (
            f"could not take {shown}: other commands keep taking it. Fix: one command at a time writes to "
            "DEST; let the others finish"
        )
        raise LockHeld(msg)

    # --- renewal -----------------------------------------------------------------------------------

    def _start(self, every: float) -> None:
        self._thread = threading.Thread(
            target=self._renew_loop, args=(every,), name="optin-lock", daemon=True
        )
        self._thread.start()

    def _renew_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.renew()
            except DestError:
                return  # lost is set; publish refuses from now on

    def renew(self) -> None:
        """Move ``expires_at`` to now + the lease, only if ``LOCK`` is still what this lock wrote.

        :raises LockLost: it was taken over or released, or the store refused (then :attr:`lost` is set).
        """
        with self._mutex:
            self._check_state()
            expires = utc(self.clock() + self._lease)
            record = LockRecord(self.owner, self.command, self.record.pid, self.record.started_at, expires)
            try:
                self._etag = self.dest.replace(LOCK_KEY, record.to_bytes(), expected=self._etag)
            except Exception as exc:  # whatever the store did, this lock can no longer be trusted
                self.lost = True
                msg = (
                    f"lost {self.dest.where(LOCK_KEY)}: renewing it failed ({type(exc).__name__}), so "
                    "another command may write to DEST now. Fix: nothing was published; run the command "
                    "again once no other command runs"
                )
                raise LockLost(msg) from exc
            self.record = record

    def check(self) -> None:
        """Before a step that must be the lock holder's (``CURRENT``, deletions): renew the lease first
        when the clock says it ran out (the conditional write proves nobody took it meanwhile).

        :raises LockLost: the lock was lost, taken over or released (publishing must stop).
        """
        self._check_state()
        if self.clock() >= self.expires_at:
            self.renew()

    def _check_state(self) -> None:
        if self.lost or self._released:
            state = "was released" if self._released else "was lost (taken over, or its renewal failed)"
            msg = (
                f"{self.dest.where(LOCK_KEY)} {state}; nothing more is published. Fix: run the command again "
                "once no other command writes to DEST"
            )
            raise LockLost(msg)

    def existed(self, key: str) -> bool:
        """Whether ``key`` (under :data:`GC_PREFIXES`) was in DEST when the lock was taken."""
        return key in self._existing

    # --- release -----------------------------------------------------------------------------------

    def release(self) -> bool:
        """Stop renewing and delete ``LOCK`` if it is still this lock's; whether it deleted it."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=60)
        with self._mutex:
            if self._released:
                return False
            self._released = True
            try:
                blob = self.dest.get(LOCK_KEY, max_size=MAX_LOCK)
            except (ObjectMissing, ObjectTooLarge):
                return False
            try:
                record = LockRecord.parse(blob.data, self.dest.where(LOCK_KEY))
            except LayoutError:
                return False
            if record.owner != self.owner:
                return False
            return self.dest.delete(LOCK_KEY)

    def __enter__(self) -> Lock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.release()
        else:
            with contextlib.suppress(DestError):  # the command's own error is the one to report
                self.release()


def read_lock(dest: Dest) -> LockRecord | None:
    """What ``LOCK`` says now; None when there is none.

    :raises LayoutError: it is not a lock optin wrote (or over 4 KiB).
    """
    try:
        blob = dest.get(LOCK_KEY, max_size=MAX_LOCK)
    except ObjectMissing:
        return None
    except ObjectTooLarge:
        msg = f"{dest.where(LOCK_KEY)} is over {MAX_LOCK} bytes. Fix: remove it, or run with --break-lock"
        raise LayoutError(msg) from None
    return LockRecord.parse(blob.data, dest.where(LOCK_KEY))


def _takeable(dest: Dest, now: datetime.datetime, *, break_lock: bool) -> str | None:
    """The ETag ``LOCK`` is replaced against (None: there is none), if this command may take it."""
    shown = dest.where(LOCK_KEY)
    try:
        blob = dest.get(LOCK_KEY, max_size=MAX_LOCK)
    except ObjectMissing:
        return None
    except ObjectTooLarge:
        if not break_lock:
            msg = f"{shown} is over {MAX_LOCK} bytes, not a lock optin wrote. Fix: run with --break-lock"
            raise LockHeld(msg) from None
        dest.delete(LOCK_KEY)  # --break-lock: whatever it is goes
        return None
    if break_lock:
        return blob.etag
    try:
        record = LockRecord.parse(blob.data, shown)
    except LayoutError:
        msg = (
            f"{shown} is not a lock optin wrote; another program may be writing DEST. Fix: check, then run "
            "with --break-lock"
        )
        raise LockHeld(msg) from None
    if parse_utc(record.expires_at) <= now:
        return blob.etag  # a killed command's lease: taken over
    msg = (
        f"DEST is in use: {shown} is held by a {record.command} started at {record.started_at} (pid "
        f"{record.pid}; lease until {record.expires_at}). Fix: wait for it to finish and run again; if you "
        "know it is dead, run again with --break-lock"
    )
    raise LockHeld(msg)
