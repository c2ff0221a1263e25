"""One bundle from SRC, read once and checked (docs/dataset.md, "Pass 1" and "Pass 2").

:func:`read_bundle` streams a candidate through a SHA-256 tee into exactly the checks of
``optin inspect`` (:func:`agent.export.inspect.open_bundle_stream`: the age header, pyrage,
``check_tar``), then the dataset's own checks (the session id, the withdrawal register, every
step image's header, by making the samples). The answer is an :class:`Opened` bundle with its
samples, or a :class:`Refusal` with the spec's reason code (never the bundle's content), or
:class:`Unreadable` for an I/O failure (deferred: the next build tries again).

Called in worker processes and Ray tasks: every argument is plain data (picklable).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from agent.dataset.samples import Sample, SampleRefused, check_session_id, samples
from agent.dataset.shard import sample_room
from agent.dataset.source import Source
from agent.dataset.tables import check_bundle
from agent.errors import ExportError, OptinError
from agent.export.bundle_checks import Bundle, view
from agent.export.reasons import REASONS


class Changed(OSError):
    """The object is not the size SRC listed (replaced or growing meanwhile): try again later."""


class _Tee:
    """``read`` at most ``size`` bytes of ``f``, hashing them; :meth:`finish` checks the length."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.file = f
        self.left = size
        self.size = size
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        want = self.left if n is None or n < 0 else min(n, self.left)
        data = self.file.read(want)
        self.left -= len(data)
        self.hash.update(data)
        return data

    def finish(self) -> str:
        while self.left > 0 and self.read(1 << 20):
            pass
        if self.left > 0 or self.file.read(1):
            msg = f"the object is not {self.size:,} bytes any more (replaced or still being written)"
            raise Changed(msg)
        return self.hash.hexdigest()


@dataclass(frozen=True)
class Identity:
    """The study identity as plain text (``AGE-SECRET-KEY-1…`` lines), sent to each worker once."""

    lines: tuple[str, ...]

    def load(self) -> list[Any]:
        from agent.export.inspect import identities_from_text

        return identities_from_text(self.lines)


@dataclass(frozen=True)
class Refusal:
    """A bundle the dataset refuses: quarantined under ``reason`` (SHA-256 None: not read whole)."""

    sha256: str | None
    reason: str
    stage: str
    message: str
    session: str | None = None
    volunteer: str | None = None


@dataclass(frozen=True)
class Unreadable:
    """An I/O or store failure: the bundle is deferred, not recorded."""

    message: str


@dataclass(frozen=True)
class Opened:
    """A bundle every check passed: its SHA-256, the checked :class:`Bundle` and its parsed members."""

    sha256: str
    bundle: Bundle
    steps: list[dict[str, Any]]
    events: list[dict[str, Any]]
    frames: list[dict[str, Any]]
    #: Bytes its samples take in a shard (set by the checks of :func:`read_bundle`).
    room: int = 0
    steps_count: int = 0

    @property
    def manifest(self) -> dict[str, Any]:
        return self.bundle.manifest

    @property
    def session(self) -> str:
        return str(self.manifest["session"])

    @property
    def volunteer(self) -> str:
        return str(self.manifest["volunteer"]["id"])

    @property
    def signing_key(self) -> str:
        return str(self.manifest["volunteer"].get("signing_key", ""))

    @property
    def study(self) -> str:
        return str(self.manifest["consent"]["study_id"])

    def samples(self) -> Iterator[Sample]:
        """The bundle's samples, in step order (checked again as they are made)."""
        images: dict[int, bytes | memoryview] = {}
        wanted = {s.get("frame") for s in self.steps}
        for line, row in enumerate(self.frames):
            if line in wanted and isinstance(row, Mapping) and isinstance(row.get("member"), str):
                name = row["member"]
                if name in self.bundle.members:
                    images[line] = view(self.bundle.members, name)
        tasks = self.manifest.get("tasks") if self.manifest.get("schema") == "optin-bundle/3" else None
        return samples(
            self.manifest,
            self.steps,
            tasks=tasks,
            frames=self.frames,
            events=self.events,
            images=images,
            transcode=_transcode,
        )


Outcome = Opened | Refusal | Unreadable


def _transcode(data: bytes | memoryview, width: int, height: int) -> bytes:
    """A ``png`` frame as lossless WebP. :func:`agent.dataset.samples.samples` checked its header
    against the frame's size and bounded that (2^25 pixels), far under Pillow's own bomb limit,
    which this leaves as it is (a process-wide setting; the recorder's modules read it too); a PNG
    that decodes to another size, or does not decode, is refused."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(data)), formats=["PNG"]) as image:
                if image.size != (width, height):
                    raise ValueError(image.size)
                image.load()
                out = io.BytesIO()
                image.save(out, format="WEBP", lossless=True)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        refused = SampleRefused("image_invalid", f"a png frame does not decode ({exc.__class__.__name__})")
        raise refused from None
    return out.getvalue()


def _lines(blob: bytes | memoryview) -> list[dict[str, Any]]:
    return [json.loads(line) for line in bytes(blob).splitlines() if line]


def _parse(bundle: Bundle) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    names = sorted(n for n in bundle.members if len(n) == 11 and n.endswith(".json") and n[:6].isdigit())
    steps = [json.loads(bytes(view(bundle.members, n))) for n in names]
    events = _lines(view(bundle.members, "events.jsonl")) if "events.jsonl" in bundle.members else []
    frames = _lines(view(bundle.members, "frames.jsonl")) if "frames.jsonl" in bundle.members else []
    return steps, events, frames


def read_bundle(
    source: Source,
    name: str,
    size: int,
    identity: Identity,
    *,
    etag: str | None = None,
    withdrawn: frozenset[str] = frozenset(),
    dataset_checks: bool = True,
) -> Outcome:
    """Read ``name`` (``size`` bytes as SRC listed it) and check it.

    ``etag`` is the listing's: a candidate that is not that any more is deferred. ``withdrawn``
    holds withdrawn pseudonyms and signing keys. Without ``dataset_checks`` (pass 2, which makes
    the samples and table rows again and checks them as it does) only inspect's checks run.
    Nothing but an I/O failure, a refusal with its code, or an opened bundle comes out: an
    unexpected exception is the refusal ``internal_error`` naming only its class (a bug, never a
    stop of the build).
    """
    from agent.export.inspect import open_bundle_stream

    tee: _Tee | None = None
    try:
        f, _ = source.open(name, expected=etag)
        with f:
            tee = _Tee(f, size)
            try:
                bundle = open_bundle_stream(tee, size, Path(source.where(name)), identity.load())
            except ExportError:
                tee.finish()  # a changed object is deferred, not quarantined
                raise
            sha = tee.finish()
        opened = Opened(sha, bundle, *_parse(bundle))
        return _dataset_checks(opened, withdrawn) if dataset_checks else opened
    except ExportError as exc:
        return _refusal(_digest(tee), exc)
    except (OSError, OptinError) as exc:
        return Unreadable(str(exc) or exc.__class__.__name__)
    except Exception as exc:
        return Refusal(_digest(tee), "internal_error", "dataset", f"unexpected {exc.__class__.__name__}")


def _digest(tee: _Tee | None) -> str | None:
    """The SHA-256 of the whole file when it was read to its end, else None."""
    return tee.hash.hexdigest() if tee is not None and tee.left == 0 else None


def _refusal(sha: str | None, exc: ExportError) -> Refusal:
    reason = getattr(exc, "reason", "internal_error")
    if reason not in REASONS:
        reason = "internal_error"
    return Refusal(
        sha,
        reason,
        REASONS[reason],
        str(exc),
        session=getattr(exc, "session", None),
        volunteer=getattr(exc, "volunteer", None),
    )


def _dataset_checks(opened: Opened, withdrawn: frozenset[str]) -> Outcome:
    """``session_id_unsupported``, ``volunteer_withdrawn``, then every sample made once (``image_invalid``).

    The manifest's signature and id verified, so a refusal here names the session and volunteer
    (but ``volunteer_withdrawn`` none: the ledger keeps no row of a withdrawn pseudonym).
    """
    try:
        check_session_id(opened.session)
        if opened.volunteer in withdrawn or (opened.signing_key and opened.signing_key in withdrawn):
            return Refusal(opened.sha256, "volunteer_withdrawn", "dataset", "the volunteer withdrew")
        room = count = 0
        for sample in opened.samples():
            room += sample_room(sample)
            count += 1
        check_bundle(opened.bundle)  # what the tables need, so that pass 2 cannot refuse it
    except ExportError as exc:
        refusal = _refusal(opened.sha256, exc)
        session = opened.session if refusal.reason != "session_id_unsupported" else None
        return replace(refusal, session=session, volunteer=opened.volunteer)
    return replace(opened, room=room, steps_count=count)


__all__ = [
    "Changed",
    "Identity",
    "Opened",
    "Outcome",
    "Refusal",
    "Unreadable",
    "read_bundle",
]
