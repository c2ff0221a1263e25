"""List sessions (no key needed) and decrypt them (the volunteer's identity needed).

:func:`read_session` checks the whole chain: contiguous segment files, the same
session id, each ``prev_commit`` equal to the previous segment's commit, every
segment sealed except possibly the last (:mod:`agent.store.chain` walks it).
Any break raises :class:`~agent.errors.StoreCorrupt` or
:class:`~agent.errors.StoreFormatError` naming the file.  An unsealed or
unclosed *end* of a session that was never marked closed is what a crash
leaves: its whole records are read and the rest is reported in
:attr:`SessionData.problems`, never silently; once crash recovery
(:mod:`agent.store.recovery`) has sealed it, it reads as a closed session whose
cut is reported the same way.  A record that fails authentication always raises,
before a crash's cut as anywhere else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agent.errors import StoreCorrupt, StoreError
from agent.events import Event, Frame, FramePatch, decode
from agent.paths import Dirs
from agent.store import safe_fs
from agent.store.chain import walk_session
from agent.store.format import FRAME, Spool, read_segment, segment_name, session_id_bytes
from agent.store.safe_fs import (
    A_SESSION,
    SESSION_ID,
    StoreDir,
    UnsafeEntry,
    check_session_id,
    is_plain_dir,
    not_found,
    refusal,
)
from agent.store.writer import load_meta_at, segment_sizes, writer_active

if TYPE_CHECKING:
    from PIL.Image import Image

    from agent.frame_regions import Rebuilder


@dataclass(frozen=True)
class SessionInfo:
    """One line of ``optin sessions``: metadata only, readable without the private key.

    :ivar state: ``recording`` (a writer holds it), ``interrupted`` (meta says
        recording or closing but its writer is gone: crash recovery has not run
        yet), ``closed`` (cleanly or by crash recovery), or ``unknown`` (no
        readable ``meta.json``).
    :ivar segments: segment files on disk.
    :ivar events: events of every kind (frames included); ``events_by_kind`` splits them.
    :ivar dropped: events and frames the capture pipeline lost (P9).
    :ivar bytes: size of the segment files on disk.
    """

    id: str
    state: str
    started_at: str | None
    stopped_at: str | None
    segments: int
    records: int
    events: int
    events_by_kind: dict[str, int]
    frames: int
    dropped: int
    bytes: int
    recovered: bool = False


@dataclass(frozen=True)
class SessionData:
    """A decrypted session.

    :ivar all_sealed: every segment ended with a valid SEAL record.
    :ivar problems: what a reader should be told (crash tail, what crash
        recovery cut); empty for a cleanly closed session.
    :ivar recovered: the session was sealed by crash recovery.
    """

    session_id: str
    events: list[Event]
    segments: int
    all_sealed: bool
    problems: list[str]
    recovered: bool = False


def session_dir(dirs: Dirs, session_id: str) -> Path:
    """The directory of ``session_id``: a real directory, never a link to one.

    :raises UsageError: ``session_id`` is not a plain session id (path separators, ``..``).
    :raises NotFound: there is no such session.
    :raises UnsafeEntry: a link, file, FIFO... stands where its folder should be (the message names
        it and the fix).
    """
    check_session_id(session_id)
    path = dirs.sessions / session_id
    try:
        st = path.lstat()
    except OSError:
        raise not_found(dirs.sessions, session_id) from None
    if not is_plain_dir(st):  # a link to a folder (or a file) by a session's name is never followed (P8)
        raise UnsafeEntry([refusal(path, st, A_SESSION)], lead=f"session {session_id} was not read")
    return path


def session_paths(dirs: Dirs) -> list[Path]:
    """Every real session directory, sorted by id (a link by a session's name is not one: never followed)."""
    return safe_fs.session_dirs(dirs.sessions, SESSION_ID)[0]


def list_sessions(dirs: Dirs) -> list[SessionInfo]:
    """Every session directory, sorted by id, described from its ``meta.json`` and file sizes."""
    return [_session_info(p) for p in session_paths(dirs)]


def read_session(
    dirs: Dirs, session_id: str, identity: bytes, *, lazy_frames: bool = False, raw: bool = False
) -> SessionData:
    """Decrypt every segment of ``session_id`` and return its events in order.

    Frame patches (docs/format.md, Frame patches) come back rebuilt, as full frames exact to the
    pixel; one whose base was not stored is left out and counted in :attr:`SessionData.problems`.
    With ``raw`` they come back as stored (a cut needs them: :func:`agent.frame_regions.reanchor`).

    With ``lazy_frames`` no frame's bytes are kept: each frame's ``data`` is a
    :class:`StoredFrame` that knows the SHA-256 and size of its bytes and loads them again
    from the store when asked (agent/export/frame_data.py), so memory does not grow with
    the session's frames.  A frame loaded again must be the one read here (the same hash),
    or loading raises :class:`~agent.errors.StoreCorrupt`.

    A session that crash recovery sealed reads as everything before the cut,
    with what was cut reported in :attr:`SessionData.problems`.  Every record
    before the cut is authenticated like any other: one that fails raises (its
    file and offset), and no record is ever left out quietly.

    :raises StoreCorrupt: authentication failed, or the chain is broken (a
        segment missing, reordered, replaced, truncated or from another session).
    :raises StoreFormatError: a structural problem, naming file and offset.
    """
    from agent.frame_regions import Rebuilder, rebuild

    path = session_dir(dirs, session_id)
    meta = load_meta(path)
    closed = meta is not None and meta.get("state") == "closed"
    events: list[Event] = []
    rebuilder = Rebuilder()

    def eager(segment: list[Event]) -> None:
        events.extend(segment if raw else rebuild(segment, rebuilder))

    take: Callable[[list[Event]], None] = eager
    if lazy_frames and not raw:  # frames left in the store, loaded when written
        take = _Unloading(_Segments(path, identity, Spool(dirs.data)), events, rebuilder).take
    walk = walk_session(path, identity, closed=closed, live=writer_active(path), strict=True, on_events=take)
    problems = [finding.message for finding in walk.findings]
    if rebuilder.lost:
        problems.append(
            f"{session_id}: {rebuilder.lost} frame patches could not be rebuilt (the frame they change "
            "is not before them) and were left out"
        )
    return SessionData(session_id, events, walk.segments, walk.all_sealed, problems, walk.recovered)


@dataclass(frozen=True, eq=False, slots=True)
class StoredFrame:
    """Where the bytes of a frame read with ``lazy_frames`` are (:class:`agent.export.frame_data.LazyData`):
    the ``ordinal``-th FRAME record of segment ``segment`` (a frame stored whole)."""

    store: _Segments = dataclasses.field(repr=False)
    segment: int
    ordinal: int
    sha256: str
    size: int

    def load(self) -> bytes:
        """The frame's bytes, read and authenticated again; the same bytes as the first read.

        :raises StoreCorrupt: the segment or the spool no longer holds them (changed since).
        """
        return self.store.frame_bytes(self)

    def set_aside(self, make: Callable[[], bytes]) -> SpooledBytes:
        """The bytes ``make`` makes from this frame (it masked by OCR), kept in the export's spool."""
        return SpooledBytes.made_by(self.store.spool, make)


class SpooledBytes:
    """Bytes set aside in an export's spool (:class:`agent.store.format.Spool`), with their hash and
    size (:class:`agent.export.frame_data.LazyData`).  They are made on a background thread
    (:func:`agent.frame_codec.background`: a frame's encoding, beside the caller's next one), so
    asking for the hash or the bytes waits until they are made; a failure to make them is raised
    there."""

    __slots__ = ("_made", "spool")

    def __init__(self, spool: Spool, made: Future[tuple[tuple[int, int, int], str, int]]) -> None:
        self.spool, self._made = spool, made

    @classmethod
    def made_by(cls, spool: Spool, make: Callable[[], bytes]) -> SpooledBytes:
        from agent.frame_codec import background

        def job() -> tuple[tuple[int, int, int], str, int]:
            data = make()
            return spool.put(data), hashlib.sha256(data).hexdigest(), len(data)

        return cls(spool, background().submit(job))

    @property
    def sha256(self) -> str:
        return self._made.result()[1]

    @property
    def size(self) -> int:
        return self._made.result()[2]

    def load(self) -> bytes:
        where, sha256, size = self._made.result()
        data = self.spool.get(where)
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            name = "the export's spool file"
            raise _changed(name)
        return data

    def set_aside(self, make: Callable[[], bytes]) -> SpooledBytes:
        """As :meth:`StoredFrame.set_aside`, for a frame rebuilt from patches."""
        return SpooledBytes.made_by(self.spool, make)


class RebuiltFrame:
    """A frame stored as a patch (docs/format.md, Frame patches), read with ``lazy_frames``
    (:class:`agent.export.frame_data.LazyData`): its pixels are rebuilt again from the store when
    asked (:meth:`pixels`, through the read's :class:`_Chain`), and it is encoded once, when its
    bytes or their hash are first asked for (:meth:`encode`), into the export's spool.

    So a frame OCR reads and masks is never encoded whole before its masks are known, and one
    that is not masked is encoded once, from pixels no encode-decode round trip went through.
    """

    __slots__ = ("_chain", "_encoded", "_index")

    def __init__(self, chain: _Chain, index: int) -> None:
        self._chain, self._index = chain, index
        self._encoded: SpooledBytes | None = None

    def pixels(self) -> Image:
        """The frame's pixels (RGB), exact; the caller may keep them, not change them.

        :raises StoreCorrupt: the store no longer holds what was read (changed since).
        """
        return self._chain.image(self._index)

    def encode(self) -> SpooledBytes:
        """Its bytes, encoded once: the pixels rebuilt here (in store order, cheaply), the encoding
        on a background thread beside the caller (:func:`agent.frame_codec.background`)."""
        with self._chain.lock:
            if self._encoded is None:
                from agent.frame_codec import encode_image

                image = self.pixels()
                self._encoded = SpooledBytes.made_by(self._chain.store.spool, lambda: encode_image(image))
            return self._encoded

    @property
    def sha256(self) -> str:
        return self.encode().sha256

    @property
    def size(self) -> int:
        return self.encode().size

    def load(self) -> bytes:
        return self.encode().load()

    def set_aside(self, make: Callable[[], bytes]) -> SpooledBytes:
        """As :meth:`StoredFrame.set_aside` (this frame masked: its own encoding is never made)."""
        return SpooledBytes.made_by(self._chain.store.spool, make)


class _Chain:
    """The whole frames and patches of a lazy read, in store order, to rebuild a patch's pixels
    again when they are asked for (:class:`RebuiltFrame`).

    The first read rebuilt every patch and checked its base's digest; only patches that applied
    are entries here, each on the entry before it (a lost patch, and everything after it until
    the next whole frame or strip keyframe, was left out), so rebuilding again replays the records
    from the entry's anchor with no digest to compute.  Each record loaded again is
    re-authenticated by the store and must hash as it did then.  The last :data:`KEEP` images
    rebuilt are kept: a pass in time order (store order but for a frame or two at a segment's
    edge) costs one patch applied per frame.
    """

    KEEP = 2

    def __init__(self, store: _Segments) -> None:
        self.store = store
        self.lock = threading.RLock()
        self._entries: list[tuple[int, int, str, int]] = []  # segment, ordinal, record digest, anchor
        self._anchor = -1
        self._images: OrderedDict[int, Image] = OrderedDict()

    def add(self, segment: int, ordinal: int, event: Frame | FramePatch) -> int:
        """Enter a frame or a patch the first read kept; returns its index."""
        index = len(self._entries)
        if isinstance(event, Frame) or event.base is None:
            self._anchor = index
        self._entries.append((segment, ordinal, _record_digest(event), self._anchor))
        return index

    def image(self, index: int) -> Image:
        from agent.frame_regions import apply_patch, keyframe_image

        with self.lock:
            kept = self._images.get(index)
            if kept is not None:
                self._images.move_to_end(index)
                return kept
            anchor = self._entries[index][3]
            start = max((k for k in self._images if anchor <= k < index), default=None)
            image = None if start is None else self._images[start]
            for k in range(anchor if start is None else start + 1, index + 1):
                segment, ordinal, digest, _ = self._entries[k]
                event = self.store.record(segment, ordinal)
                if not isinstance(event, (Frame, FramePatch)) or _record_digest(event) != digest:
                    raise _changed(self.store.where(segment))
                if isinstance(event, Frame):
                    image = keyframe_image(event)
                else:
                    image = apply_patch(image if event.base is not None else None, event)
                if image is None:  # it decoded when first read
                    raise _changed(self.store.where(segment))
            if image is None:
                raise _changed(self.store.where(self._entries[index][0]))
            self._images[index] = image
            while len(self._images) > self.KEEP:
                self._images.popitem(last=False)
            return image


def _record_digest(event: Frame | FramePatch) -> str:
    """What a frame or patch record holds, hashed: its pixels' bytes and, for a patch, where they go."""
    head = repr((event.rects, event.base)) if isinstance(event, FramePatch) else "frame"
    return hashlib.sha256(head.encode() + b"\0" + event.data).hexdigest()


class _Unloading:
    """The ``on_events`` of a lazy read: keeps the events, every frame without its bytes.

    The walk calls it once per segment, in order, and a strict walk reads segments ``0, 1, ...``
    with no gap (a gap raises), so the n-th call holds segment n's events.  Patches are rebuilt
    in store order to check them (:class:`agent.frame_regions.Rebuilder`: one frame's pixels
    held) and kept as full frames without pixels or bytes (:class:`RebuiltFrame`); a patch that
    cannot be rebuilt is left out and counted (``rebuilder.lost``).
    """

    def __init__(self, store: _Segments, out: list[Event], rebuilder: Rebuilder) -> None:
        self.store, self.out, self.segment = store, out, 0
        self.rebuilder = rebuilder
        self.chain = _Chain(store)

    def take(self, events: list[Event]) -> None:
        from agent.frame_codec import FRAME_FORMAT

        ordinal = 0
        for event in events:
            if isinstance(event, Frame):
                self.rebuilder.advance(event)
                self.chain.add(self.segment, ordinal, event)
                ref = StoredFrame(
                    self.store, self.segment, ordinal, hashlib.sha256(event.data).hexdigest(), len(event.data)
                )
                # the frame as it is, but its bytes left in the store (agent/export/frame_data.py loads them)
                event = dataclasses.replace(event, data=cast(bytes, ref))  # noqa: PLW2901
                ordinal += 1
            elif isinstance(event, FramePatch):
                ordinal += 1
                if self.rebuilder.image(event) is None:  # its base is not before it: counted, left out
                    continue
                rebuilt = RebuiltFrame(self.chain, self.chain.add(self.segment, ordinal - 1, event))
                g = (event.left, event.top, event.width, event.height)
                event = Frame(event.t_ns, *g, FRAME_FORMAT, event.reason, cast(bytes, rebuilt))  # noqa: PLW2901
            self.out.append(event)
        self.segment += 1


class _Segments:
    """Frames loaded again from a session's segments, the last :data:`KEEP` segments' frames kept,
    and the spool of what the export made once (rebuilt patches, masked frames).

    An export reads the frames in time order, which is store order but for a frame or two at a
    segment's edge: each segment is decrypted about once per pass.
    """

    #: Segments whose frame records are kept decrypted (a segment is ~8 MiB: agent/store/writer.py).
    KEEP = 2

    def __init__(self, path: Path, identity: bytes, spool: Spool) -> None:
        self.path, self.identity, self.spool = path, identity, spool
        self.cache: OrderedDict[int, list[bytes]] = OrderedDict()
        self.decrypted = 0  #: segments decrypted again so far (tests and benchmarks read it)
        self._lock = threading.Lock()

    def frame_bytes(self, ref: StoredFrame) -> bytes:
        event = self.record(ref.segment, ref.ordinal)
        data = event.data if isinstance(event, Frame) else b""
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise _changed(self.where(ref.segment))
        return data

    def where(self, segment: int) -> str:
        return f"{self.path.name}/{segment_name(segment)}"

    def record(self, segment: int, ordinal: int) -> Event:
        """The ``ordinal``-th frame or patch record of ``segment``, decrypted again."""
        with self._lock:  # one load at a time: OCR may decode frames on several threads
            records = self._frames(segment)
        name = self.where(segment)
        if ordinal >= len(records):
            raise _changed(name)
        try:
            return decode(records[ordinal])
        except (StoreError, ValueError):
            raise _changed(name) from None

    def _frames(self, index: int) -> list[bytes]:
        if index in self.cache:
            self.cache.move_to_end(index)
            return self.cache[index]
        where = self.where(index)
        try:
            with StoreDir.open(self.path) as folder:
                data = folder.read_file(segment_name(index))
            contents = read_segment(data, self.identity, name=where)
        except (OSError, UnsafeEntry, StoreError):
            raise _changed(where) from None
        del data
        if contents.index != index or contents.session_id != session_id_bytes(self.path.name):
            raise _changed(where)
        frames = [plaintext for kind, plaintext in contents.records if kind == FRAME]
        self.decrypted += 1
        self.cache[index] = frames
        while len(self.cache) > self.KEEP:
            self.cache.popitem(last=False)
        return frames


def _changed(name: str) -> StoreCorrupt:
    msg = (
        f"{name} changed while the session was being read (a frame is not the one read before). Fix: "
        "read it again; if it keeps failing, `optin verify` the session"
    )
    return StoreCorrupt(msg)


def load_meta(path: Path) -> dict[str, Any] | None:
    """The ``meta.json`` of the session directory ``path``, or None when missing, not schema 1, or not
    a regular file in a real folder (a link is never followed, a FIFO never opened: P8)."""
    try:
        with StoreDir.open(path) as folder:
            return load_meta_at(folder)
    except (OSError, UnsafeEntry):
        return None


def _session_info(path: Path) -> SessionInfo:
    meta = load_meta(path) or {}
    try:
        with StoreDir.open(path) as folder:
            entries = folder.entries()
    except (OSError, UnsafeEntry):
        entries = []  # gone or replaced since it was listed
    sizes = segment_sizes(entries)
    raw = meta.get("events")
    by_kind = {str(k): _count(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    return SessionInfo(
        id=path.name,
        state=_state(path, meta),
        started_at=_str_or_none(meta.get("started_at")),
        stopped_at=_str_or_none(meta.get("stopped_at")),
        segments=len(sizes),
        records=_count(meta.get("records")),
        events=sum(by_kind.values()),
        events_by_kind=by_kind,
        frames=_count(meta.get("frames")),
        dropped=_count(meta.get("dropped")),
        bytes=sum(sizes),
        recovered=meta.get("recovered") is True,
    )


def _state(path: Path, meta: dict[str, Any]) -> str:
    state = meta.get("state")
    if state == "closed":
        return "closed"
    if state in ("recording", "closing"):
        return "interrupted" if writer_active(path) is False else "recording"
    return "unknown"


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


__all__ = [
    "SessionData",
    "SessionInfo",
    "SpooledBytes",
    "StoredFrame",
    "list_sessions",
    "load_meta",
    "read_session",
    "session_dir",
    "session_paths",
]
