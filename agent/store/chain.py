"""Walk one session's segments in order, checking the chain, and say everything that is wrong.

One walk serves two callers: :func:`agent.store.reader.read_session` stops at the
first error (``strict``) and :func:`agent.store.verify.verify` collects every
finding.  The rules are those of ``docs/format.md`` (Reading, Recovery rules):

- segment files are named ``NNNNNN.seg`` and contiguous from 0;
- each header carries this session's id, its file's index, and the commit of
  the previous segment file (zero for segment 0);
- every segment but the last is sealed and does not close the session, except
  the segment just before a **recovery segment** of shape ``unsealed``, which
  crash recovery cut after its last complete record: it may lack a SEAL, but
  every byte recovery kept must authenticate like any other segment's (recovery
  bound that length; a record that fails there is damage or tampering, never
  "lost in the crash");
- the last segment closes the session (cleanly, by recovery, or as the
  **tombstone** that ``optin delete-last`` leaves where it removed the end of
  the session), or the session is still being recorded, or its recorder died
  and recovery has not run yet.

A segment whose own bytes or header are wrong is one finding; its successor is
then not checked against its commit (which cannot match), so one flipped bit or
one spliced file is reported once, where it is.

Only regular files in the real session folder are read (:mod:`agent.store.safe_fs`,
P8): a link, FIFO, device or folder by a segment's name is never followed nor
opened (a FIFO would block the reader for ever); it is an ``unsafe`` error naming
its path and the fix, and the segment after it is not checked against its commit.
Anything else in the folder that is not a regular file (``meta.json`` or
``review.json`` as a link...) is an ``unsafe`` problem, which ``verify`` reports
and readers pass on.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import StoreCorrupt, StoreError, StoreFormatError
from agent.events import Event, Frame, FramePatch, decode
from agent.store.format import SegmentContents, read_segment
from agent.store.safe_fs import Refused, StoreDir, UnsafeEntry, is_plain_file
from agent.store.segment_layout import (
    DELETION,
    EVENTS,
    HEADER_SIZE,
    MAGIC,
    RECOVERY,
    ZERO_COMMIT,
    DeletionInfo,
    RecoveryInfo,
    is_segment_name,
    segment_commit,
    segment_index,
    segment_name,
    session_id_bytes,
)

#: Finding levels: the data is broken (``read_session`` raises) / readable but something is
#: wrong (an unrecovered crash tail) / nothing is wrong but it is worth saying.
ERROR = "error"
PROBLEM = "problem"
INFO = "info"

_LEN = struct.Struct(">I")
_HEADER_FIELDS = {"session": 8, "index": 24, "prev": 28}  # offsets of the header fields


@dataclass(frozen=True)
class Finding:
    """One thing a walk found.

    :ivar level: :data:`ERROR`, :data:`PROBLEM` or :data:`INFO`.
    :ivar kind: a short machine word: ``authentication``, ``format``, ``chain``,
        ``missing-segment``, ``truncated``, ``unsealed``, ``io``, ``unsafe`` (not a regular file:
        a link, FIFO, device...), ``recovered``, ``recording``, ``deleted``.
    :ivar file: the file name inside the session directory, or None for the session.
    :ivar offset: byte offset in that file, when there is one.
    :ivar message: ``<session>/<file>: what`` (never any captured content); for ``unsafe``, the
        entry's full path, what it is and the fix.
    """

    level: str
    kind: str
    file: str | None
    offset: int | None
    message: str

    def exception(self) -> StoreError:
        """The exception ``read_session`` raises for this finding."""
        cls = StoreFormatError if self.kind == "format" else StoreCorrupt
        return cls(self.message, offset=self.offset)


@dataclass
class Walk:
    """The outcome of :func:`walk_session`.

    :ivar segments: segment files found (those refused as not regular files too).
    :ivar records: data records authenticated.
    :ivar events: events decoded.
    :ivar all_sealed: every segment ended with a valid SEAL record.
    :ivar recovered: the session ends with a recovery segment.
    :ivar deleted: the session ends with a tombstone (the volunteer deleted its end).
    :ivar open_tail: the session ends in what crash recovery seals even without
        ``meta.json``: no segment, a cut-off header of segment 0, or a last segment
        without a SEAL.
    """

    findings: list[Finding] = field(default_factory=list)
    segments: int = 0
    records: int = 0
    events: int = 0
    all_sealed: bool = True
    recovered: bool = False
    deleted: bool = False
    open_tail: bool = False


def walk_session(
    path: Path,
    identity: bytes,
    *,
    closed: bool,
    live: bool | None,
    strict: bool,
    on_events: Callable[[list[Event]], None] | None = None,
) -> Walk:
    """Read every segment of the session directory ``path`` and check the chain.

    :param closed: ``meta.json`` says the session was closed (its end must then be sealed).
    :param live: a writer holds the session (True), none does (False), unknown (None).
    :param strict: raise the first :data:`ERROR` finding instead of collecting it.
    :param on_events: called with each segment's decoded events, in order.
    :raises StoreCorrupt: (strict) authentication failed or the chain is broken.
    :raises StoreFormatError: (strict) a structural problem.
    :raises UnsafeEntry: (strict) the session folder or a segment is not a real folder or a regular
        file (a link, FIFO...): never followed nor opened.
    """
    try:
        folder = StoreDir.open(path)
    except UnsafeEntry as exc:  # a link (or a file) by the session's name: never followed
        if strict:
            msg = f"session {path.name} was not read"
            raise exc.with_lead(msg) from None
        walk = Walk(all_sealed=False)
        walk.findings.extend(Finding(ERROR, "unsafe", None, None, entry.message) for entry in exc.refused)
        return walk
    with folder:
        walker = _Walker(folder, identity, closed=closed, live=live, strict=strict, on_events=on_events)
        walker.run()
        return walker.walk


@dataclass
class _Cached:
    data: bytes
    contents: SegmentContents | None  # None: it did not authenticate (reported when it is walked)


class _Walker:
    def __init__(
        self,
        folder: StoreDir,
        identity: bytes,
        *,
        closed: bool,
        live: bool | None,
        strict: bool,
        on_events: Callable[[list[Event]], None] | None,
    ) -> None:
        self.folder = folder
        self.sid = folder.path.name
        self.identity = identity
        self.closed = closed
        self.live = live
        self.strict = strict
        self.on_events = on_events
        self.walk = Walk()
        self.expected_id = session_id_bytes(self.sid)
        self.expected_prev: bytes | None = ZERO_COMMIT  # None: predecessor missing or damaged
        self.prev_size: int | None = None
        self.prev_sealed = False

    # --- reporting ------------------------------------------------------------------------

    def report(
        self, level: str, kind: str, file: str | None, offset: int | None, what: str, *, sep: str = ": "
    ) -> None:
        where = f"{self.sid}/{file}" if file else self.sid
        finding = Finding(level, kind, file, offset, f"{where}{sep}{what}")
        if level == ERROR and self.strict:
            raise finding.exception()
        self.walk.findings.append(finding)

    def refuse(self, entry: Refused, file: str | None, *, level: str = ERROR) -> None:
        """Something that is not a regular file (a real folder) stands where the walk would read."""
        if level == ERROR and self.strict:
            raise UnsafeEntry([entry], lead=f"session {self.sid} was not read")
        self.walk.findings.append(Finding(level, "unsafe", file, None, entry.message))

    def report_error(self, exc: StoreError, file: str) -> None:
        """A StoreError from the format layer; its message already names the file."""
        kind = "format" if isinstance(exc, StoreFormatError) else "authentication"
        if self.strict:
            raise exc
        self.walk.findings.append(Finding(ERROR, kind, file, exc.offset, str(exc)))

    def open_end(self, file: str | None, what: str, *, records: int | None = None) -> None:
        """The session's end is not closed: recording, or an unrecovered crash."""
        if self.live:
            so_far = f"; {records} records so far" if records is not None else ""
            self.report(INFO, "recording", file, None, f"still being recorded ({what}{so_far})")
        elif self.live is False:
            self.report(
                PROBLEM, "unsealed", file, None, f"unrecovered crash tail: {what} (run optin run to recover)"
            )
        else:
            self.report(PROBLEM, "unsealed", file, None, f"{what} (still recording, or the recorder stopped)")

    # --- the walk -------------------------------------------------------------------------

    def run(self) -> None:
        files, unsafe = self.list_files()
        present = sorted({*files, *unsafe})
        self.walk.segments = len(present)
        if unsafe:
            self.walk.all_sealed = False  # what a refused segment holds cannot be told
        if not files:
            if not unsafe:
                self.no_segments()
            return
        last = present[-1]
        cached = self.probe(files[last]) if last in files else None
        lenient = self.lenient_index(cached, last)
        previous = -1
        for index in present:
            if index != previous + 1:
                self.expected_prev = None  # the gap is already reported
            previous = index
            if index in unsafe:  # already reported; its successor cannot be checked against it
                self.expected_prev = self.prev_size = None
                self.prev_sealed = False
                continue
            self.segment(
                index,
                files[index],
                last=index == last,
                lenient=index == lenient,
                cached=cached if index == last else None,
            )

    def list_files(self) -> tuple[dict[int, str], set[int]]:
        """Segment files by index, and the indexes of segments that are not regular files.

        Bad names, gaps and every entry that is not a regular file are reported.
        """
        found: dict[int, str] = {}
        unsafe: set[int] = set()
        for name, st in self.folder.entries():
            segment = is_segment_name(name)
            index = segment_index(name)
            if not is_plain_file(st):
                self.refuse(self.folder.refusal(name, st), name, level=ERROR if segment else PROBLEM)
                if index is not None:
                    unsafe.add(index)
                continue
            if not segment:
                continue
            if index is None:
                self.report(ERROR, "format", name, None, "unexpected segment file name (expected NNNNNN.seg)")
                continue
            found[index] = name
        for first, last in _gaps(sorted({*found, *unsafe})):
            what = "is missing" if first == last else f"to {segment_name(last)} are missing"
            self.report(
                ERROR, "missing-segment", segment_name(first), None, f"{what}: segment chain broken", sep=" "
            )
        return found, unsafe

    def read(self, name: str) -> bytes:
        """The bytes of the regular file ``name`` (never through a link, never a FIFO).

        :raises OSError: it cannot be read.
        :raises UnsafeEntry: it was replaced by something that is not a regular file.
        """
        return self.folder.read_file(name)

    def no_segments(self) -> None:
        self.walk.all_sealed = False
        self.walk.open_tail = True
        if self.closed:
            self.report(ERROR, "missing-segment", None, None, "the session was closed but has no segments")
        else:
            self.open_end(None, "no segments (the recorder stopped before writing any)")

    def probe(self, file: str) -> _Cached | None:
        """Decrypt the last file up front: is it a recovery segment?  (Errors are reported later.)"""
        try:
            data = self.read(file)
        except (OSError, UnsafeEntry):
            return None
        try:
            contents = read_segment(data, self.identity, name=f"{self.sid}/{file}")
        except StoreError:
            return _Cached(data, None)
        return _Cached(data, contents)

    @staticmethod
    def lenient_index(cached: _Cached | None, last: int) -> int | None:
        """The segment that crash recovery cut (it may lack a SEAL); None if there is none.

        That is the segment before a recovery segment of shape ``unsealed``.  When
        the last file does not authenticate, or is a recovery segment that is not
        whole, nobody can say what it held: that is its own error, reported where
        it is, and the segment before it is then not also blamed for lacking a
        SEAL (one damaged file, one finding; the session fails either way).  Every
        record the segment before has is checked as strictly as any other's.
        """
        if cached is None or last == 0:
            return None
        contents = cached.contents
        if contents is None:
            return None if _is_header_prefix(cached.data) else last - 1
        if not contents.sealed:
            return last - 1 if _first_type(cached.data) == RECOVERY else None
        info = contents.recovery
        if info is None or info.shape != "unsealed" or info.segment != last - 1:
            return None
        return info.segment

    def segment(self, index: int, file: str, *, last: bool, lenient: bool, cached: _Cached | None) -> None:
        name = f"{self.sid}/{file}"
        expected_prev, prev_size, prev_sealed = self.expected_prev, self.prev_size, self.prev_sealed
        self.expected_prev = self.prev_size = None  # until this segment proves sound
        self.prev_sealed = False
        try:
            data = cached.data if cached is not None else self.read(file)
        except OSError as exc:
            self.report(ERROR, "io", file, None, f"cannot be read ({type(exc).__name__})")
            return
        except UnsafeEntry as exc:  # replaced since it was listed
            self.walk.all_sealed = False
            for entry in exc.refused:
                self.refuse(entry, file)
            return
        if last and _is_header_prefix(data):
            self.header_tail(file, len(data))
            return
        try:
            # every record is authenticated, in the segment recovery cut too: nothing is skipped
            known = cached.contents if cached is not None else None
            contents = known if known is not None else read_segment(data, self.identity, name=name)
        except StoreError as exc:
            self.report_error(exc, file)
            return
        sound = self.check_header(contents, index, expected_prev, file) and self.take_events(
            contents, name, file
        )
        if contents.recovery is not None and contents.sealed:
            self.check_recovery(contents.recovery, index, file, last=last, prev=(prev_size, prev_sealed))
        elif contents.deletion is not None and contents.sealed:
            sound = self.check_deletion(contents.deletion, index, file, last=last) and sound
        elif contents.sealed:
            sound = self.check_sealed_end(contents, file, last=last) and sound
        else:
            sound = self.check_unsealed_end(contents, file, last=last, lenient=lenient, data=data) and sound
        if sound:
            self.expected_prev = segment_commit(data)
            self.prev_size = len(data)
            self.prev_sealed = contents.sealed

    def header_tail(self, file: str, size: int) -> None:
        """The last file is a cut-off header: a crash while the segment was being created."""
        self.walk.all_sealed = False
        self.walk.open_tail = file == segment_name(0)  # later ones follow a sealed segment
        if self.closed:
            what = f"header incomplete ({size} bytes), but the session was closed"
            self.report(ERROR, "truncated", file, size, what)
        else:
            self.open_end(file, f"header incomplete ({size} bytes): the recorder stopped here")

    def check_header(
        self, contents: SegmentContents, index: int, expected_prev: bytes | None, file: str
    ) -> bool:
        """Session id, index and prev_commit; one finding per file at most."""
        if contents.session_id != self.expected_id:
            what = "segment belongs to another session: segment chain broken"
            self.report(ERROR, "chain", file, _HEADER_FIELDS["session"], what)
            return False
        if contents.index != index:
            what = f"holds segment {contents.index}, expected {index}: segment chain broken"
            self.report(ERROR, "chain", file, _HEADER_FIELDS["index"], what)
            return False
        if expected_prev is not None and contents.prev_commit != expected_prev:
            what = "previous segment missing, reordered or replaced: segment chain broken"
            self.report(ERROR, "chain", file, _HEADER_FIELDS["prev"], what)
            return False
        return True

    def take_events(self, contents: SegmentContents, name: str, file: str) -> bool:
        try:
            events = _decode_records(contents, name)
        except StoreFormatError as exc:
            self.report_error(exc, file)
            return False
        self.walk.records += len(contents.records)
        self.walk.events += len(events)
        if self.on_events is not None:
            self.on_events(events)
        return True

    def check_recovery(
        self, info: RecoveryInfo, index: int, file: str, *, last: bool, prev: tuple[int | None, bool]
    ) -> None:
        """A recovery segment: the last one, and its RECOVERY record matches what precedes it.

        ``prev`` is the size of the previous segment file (None when it is missing
        or had a problem of its own, already reported) and whether it was sealed.

        The note says what the store shows and no more: what recovery cut, in
        bytes.  A recovery segment needs only the public key, so the store cannot
        tell a crash from someone who cut the session on purpose, nor how much
        was recorded after the cut (docs/threat-model.md, Store).
        """
        self.walk.recovered = True
        if not last:
            self.report(ERROR, "chain", file, None, "a recovery segment is followed by more segments")
            return
        prev_size, prev_sealed = prev
        cut = segment_name(info.segment)
        if info.shape == "removed":
            matches = info.segment == index
            done = f"removed {cut} ({info.original} bytes, an incomplete header) and closed the session"
            after = "anything recorded after it is lost"
        else:
            if index > 0 and prev_size is None:
                return
            # recovery writes "sealed" exactly when the segment ends with a SEAL, "unsealed" otherwise
            matches = (
                index > 0
                and info.segment == index - 1
                and info.kept == prev_size
                and prev_sealed == (info.shape == "sealed")
            )
            if info.lost_bytes:
                done = f"cut {cut} from {info.original} to {info.kept} bytes and closed the session"
                after = f"the {info.lost_bytes} bytes cut, and anything recorded after them, are lost"
            else:
                done = f"closed the session after {cut}, which it did not change"
                after = "anything recorded after it is lost"
        if not matches:
            what = f"its RECOVERY record does not match {cut}: segment chain broken"
            self.report(ERROR, "chain", file, HEADER_SIZE, what)
            return
        what = f"crash recovery {done}: {after}; the store cannot tell how much that was"
        self.report(INFO, "recovered", file, None, what)

    def check_deletion(self, info: DeletionInfo, index: int, file: str, *, last: bool) -> bool:
        """A tombstone: the last segment, in the place of the first segment it removed."""
        self.walk.deleted = True
        if not last:
            self.report(ERROR, "chain", file, None, "a tombstone segment is followed by more segments")
            return False
        if info.segment != index:
            what = f"its DELETION record names {segment_name(info.segment)}: segment chain broken"
            self.report(ERROR, "chain", file, HEADER_SIZE, what)
            return False
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.deleted_at))
        what = (
            f"deleted by the volunteer at {when}: the last {info.segments} segments "
            f"({info.removed_bytes} bytes) were removed"
        )
        self.report(INFO, "deleted", file, None, what)
        return True

    def check_sealed_end(self, contents: SegmentContents, file: str, *, last: bool) -> bool:
        if contents.closes_session and not last:
            self.report(ERROR, "chain", file, None, "segment closes the session but later segments follow")
            return False
        if last and not contents.closes_session:
            if self.closed:
                what = "the session was closed but its closing segment is missing"
                self.report(ERROR, "missing-segment", file, None, what)
            else:
                self.open_end(
                    file, "the session has no closing segment (the recorder stopped between segments)"
                )
        return True

    def check_unsealed_end(
        self, contents: SegmentContents, file: str, *, last: bool, lenient: bool, data: bytes
    ) -> bool:
        self.walk.all_sealed = False
        size = len(data)
        if _first_type(data) in (RECOVERY, DELETION):
            # recovery and delete-last write these whole (a temp file, then a rename): never a crash tail
            kind = "recovery" if _first_type(data) == RECOVERY else "tombstone"
            what = f"a {kind} segment without its SEAL record: damaged after it was written"
            self.report(ERROR, "truncated", file, HEADER_SIZE, what)
            return False
        if lenient and contents.tail:
            offset = size - contents.tail
            what = (
                f"ends with {contents.tail} bytes that are not a whole record, at offset {offset}, "
                "but crash recovery cut this segment after its last whole record"
            )
            self.report(ERROR, "truncated", file, offset, what)
            return False
        if lenient:
            return True  # cut by crash recovery after its last whole record; the recovery segment says so
        self.walk.open_tail = last
        if not last or self.closed:
            why = "later segments follow" if not last else "the session was closed"
            self.report(ERROR, "truncated", file, None, f"segment is truncated or not sealed, but {why}")
            return False
        what = f"not sealed; read {len(contents.records)} records and ignored {contents.tail} trailing bytes"
        self.open_end(file, what, records=len(contents.records))
        return True


def _gaps(indexes: list[int]) -> list[tuple[int, int]]:
    """Ranges ``(first, last)`` of indexes missing before and between the sorted ``indexes``."""
    gaps = []
    expected = 0
    for index in indexes:
        if index > expected:
            gaps.append((expected, index - 1))
        expected = index + 1
    return gaps


def _decode_records(segment: SegmentContents, name: str) -> list[Event]:
    events: list[Event] = []
    for number, (record_type, plaintext) in enumerate(segment.records):
        try:
            if record_type == EVENTS:
                events.extend(_split_events(plaintext))
            else:
                events.append(_decode_frame(plaintext))
        except StoreFormatError as exc:
            msg = f"{name}: record {number}: {exc}"
            raise StoreFormatError(msg) from None
    return events


def _split_events(plaintext: bytes) -> list[Event]:
    """Decode an EVENTS record: a sequence of ``u32 BE length | encoded event``."""
    events: list[Event] = []
    offset = 0
    size = len(plaintext)
    while offset < size:
        if size - offset < _LEN.size:
            msg = f"event length field cut short at byte {offset}"
            raise StoreFormatError(msg)
        (length,) = _LEN.unpack_from(plaintext, offset)
        start = offset + _LEN.size
        if start + length > size:
            msg = f"event at byte {offset} runs past the end of its record"
            raise StoreFormatError(msg)
        event = decode(plaintext[start : start + length])
        if isinstance(event, (Frame, FramePatch)):
            msg = f"a {event.KIND} at byte {offset} of an EVENTS record (frames have FRAME records)"
            raise StoreFormatError(msg)
        events.append(event)
        offset = start + length
    if not events:
        msg = "an EVENTS record holds no event"
        raise StoreFormatError(msg)
    return events


def _decode_frame(plaintext: bytes) -> Event:
    event = decode(plaintext)
    if not isinstance(event, (Frame, FramePatch)):
        msg = f"FRAME record holds a {event.KIND} event"
        raise StoreFormatError(msg)
    return event


def _first_type(data: bytes) -> int | None:
    """The type byte of a segment's first record head, unauthenticated; None when there is none."""
    return data[HEADER_SIZE + 4] if len(data) > HEADER_SIZE + 4 else None


def _is_header_prefix(data: bytes) -> bool:
    """True for a file cut off inside its header (what a crash at segment creation leaves)."""
    return len(data) < HEADER_SIZE and data[: len(MAGIC)] == MAGIC[: len(data)]


__all__ = ["ERROR", "INFO", "PROBLEM", "Finding", "Walk", "walk_session"]
