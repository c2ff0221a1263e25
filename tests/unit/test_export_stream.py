"""The streaming export writes the same bundle, byte for byte, as the in-memory tar did.

The oracle, :func:`old_build_tar`, is ``build_tar`` as it was before the export streamed
(every member's bytes in a dict, then :mod:`tarfile` into a ``BytesIO``), fed a session read
the old way (every frame's bytes in memory, masks encoded at once).  The streamed bundle
(frames left in the store, masks kept as boxes, the tar produced a member at a time and
age-encrypted into the file as it is made) is decrypted and compared with it, for synthetic
sessions of every variant (tasks, elements, pauses, frames no step uses, segments that
rotate every few frames), a cut session, and OCR masks (a stand-in engine, and tesseract on
rendered text).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import random
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from PIL import Image, ImageDraw, ImageFont
from pyrage import decrypt, x25519

from agent import __version__, consent
from agent.canonical_json import canonical
from agent.errors import ExportError
from agent.events import ButtonPress, ButtonRelease, Event, Frame, Marker, PointerMove, to_dict
from agent.export import bundle, counts
from agent.export.bundle import Prepared, by_action, duration_s, loss, prepare, step_record
from agent.export.frame_data import LazyData, LoadingView, frame_data, is_lazy, loaded
from agent.frame_codec import encode_image
from agent.paths import Dirs
from agent.redact import policy
from agent.redact.local_names import LocalNames
from agent.redact.screen import OcrFailed, TesseractOcr, Word
from agent.steps import STEPS_VERSION, steps
from agent.store import keys, signing
from agent.store.cut import cut_session
from agent.store.reader import SpooledBytes, StoredFrame, read_session
from agent.store.writer import SessionWriter
from agent.study import Study
from tests.study import synth
from tests.tools import Consented, unavailable

NO_NAMES = LocalNames()
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
EMAIL = "alice.canary@example.com"


# --- the oracle: build_tar before the export streamed ----------------------------------------------


def old_build_tar(prepared: Prepared, identity: bytes, study_id: str) -> bytes:
    """``agent.export.bundle.build_tar`` as it was before streaming (every frame's bytes given)."""
    events = prepared.events
    elements, element_loss = bundle._elements(prepared)
    line_of, event_lines, frame_rows, tasks, of_step = bundle._stream(prepared)
    members: dict[str, bytes] = {"tasks.jsonl": b"".join(canonical(t) + b"\n" for t in tasks)}
    holder: dict[int, str] = {}
    for n, step in enumerate(prepared.steps):
        frame_line = line_of[step.frame] if step.frame is not None else None
        lines_of_step = [line_of[i] for i in step.events if not isinstance(events[i], Frame)]
        record = step_record(step, events, frame_line, lines_of_step, of_step[n])
        members[f"{n:06d}.json"] = canonical(record)
        if step.frame is not None:
            frame = events[step.frame]
            members[f"{n:06d}.{frame.format}"] = frame.data
            holder.setdefault(line_of[step.frame], f"{n:06d}.{frame.format}")
    members["events.jsonl"] = b"".join(line + b"\n" for line in event_lines)
    frame_lines: list[bytes] = []
    unused: dict[str, bytes] = {}
    for line, (_i, frame) in enumerate(frame_rows):
        name = holder.get(line)
        if name is None:
            name = f"frames/{line:06d}.{frame.format}"
            unused[name] = frame.data
        fields = {k: v for k, v in to_dict(frame).items() if k != "data"}
        frame_lines.append(canonical({**fields, "member": name}) + b"\n")
    members["frames.jsonl"] = b"".join(frame_lines)
    members.update(unused)
    redaction = prepared.redaction.evidence()
    redaction["counts"] = {**{w: {} for w in bundle.STATED_COUNTS}, **redaction["counts"]}
    manifest = canonical(
        {
            "schema": bundle.BUNDLE_SCHEMA,
            "agent_version": __version__,
            "session": prepared.session_id,
            "volunteer": {
                "id": signing.volunteer_id(identity, study_id),
                "signing_key": base64.b64encode(signing.public_signing_key(identity, study_id)).decode(),
            },
            "consent": prepared.receipt,
            "redaction": redaction,
            "tasks": tasks,
            "elements": elements,
            "steps": {
                "version": STEPS_VERSION,
                "count": len(prepared.steps),
                "by_action": by_action(prepared.steps),
            },
            "counts": counts.kind_counts(e.KIND for e in events),
            "loss": {
                **loss(events, prepared.problems, prepared.redaction.frames_left_out),
                "elements": element_loss,
            },
            "duration_s": duration_s(events),
            "members": {
                name: {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
                for name, blob in sorted(members.items())
            },
        }
    )
    signature = signing.sign(identity, study_id, manifest)
    ordered = {"manifest.json": manifest, "manifest.sig": signature, **members}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, blob in ordered.items():
            info = tarfile.TarInfo(f"{prepared.session_id}/{name}")
            info.size = len(blob)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


# --- sessions in a real store ----------------------------------------------------------------------


def store(d: Dirs, events: Sequence[Event], *, segment_bytes: int = 6_000) -> str:
    """``events`` written by the recorder's own writer (small segments: frames span several)."""
    w = SessionWriter.create(d, keys.load_recipient(d), segment_bytes=segment_bytes)
    w.write_events(list(events))
    w.close()
    return w.session_id


def receipt_of(d: Dirs) -> dict[str, Any]:
    receipt = consent.current_receipt(d)
    assert receipt is not None
    return receipt.to_json()


def synth_session(d: Dirs, g: int, count: int = 9) -> str:
    """The ``g``-th synthetic session (tests/study/synth.py: every variant within 12), stored."""
    _, events = synth.session_events(
        g,
        random.Random(g),  # noqa: S311 - reproducible data
        receipt_of(d),
        synth.variant(g),
        count,
    )
    return store(d, events, segment_bytes=1_500)


@pytest.fixture
def study_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The synthetic study (tests/study/synth.py: its tasks), OCR off unless the test's name says
    tesseract; a throwaway recipient whose identity lies beside it."""
    identity = x25519.Identity.generate()
    (tmp_path / "study-identity.txt").write_text(str(identity) + "\n")
    text = synth._STUDY_TOML.format(
        study_id=synth.STUDY_ID,
        recipient=str(identity.to_public()),
        task_id=synth.STUDY_TASK_ID,
        instruction=synth.STUDY_TASK_INSTRUCTION,
    )
    if "tesseract" in request.node.name:
        text = text.replace('ocr = "off"', 'ocr = "required"')
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def streamed(consented: Consented, session: str, study: Study, out: Path, study_file: Path) -> bytes:
    """The bundle export_session writes (streamed), decrypted; its sha256 and size checked."""
    d, _ = consented
    res = bundle.export_session(d, session, out, study, approve=True, local=NO_NAMES)
    sealed = res.path.read_bytes()
    assert res.sha256 == hashlib.sha256(sealed).hexdigest() and res.bytes == len(sealed)
    assert [p.name for p in out.iterdir()] == [res.path.name]  # no temporary file left beside it
    identity = x25519.Identity.from_str((study_file.parent / "study-identity.txt").read_text().strip())
    return bytes(decrypt(sealed, [identity]))


def oracle(d: Dirs, session: str, study: Study) -> bytes:
    """The old way: every frame in memory, the tar built whole."""
    identity = keys.load_identity(d)
    prepared = prepare(d, session, study, identity, local=NO_NAMES)
    assert all(isinstance(e.data, bytes) for e in prepared.events if isinstance(e, Frame))
    return old_build_tar(prepared, identity, study.id)


@pytest.mark.parametrize("g", range(12))
def test_the_streamed_bundle_is_the_in_memory_bundle_byte_for_byte(
    consented: Consented, study_file: Path, tmp_path: Path, g: int
) -> None:
    d, study = consented
    session = synth_session(d, g)
    assert len(list((d.sessions / session).glob("*.seg"))) > 2  # frames span segments
    expected = oracle(d, session, study)
    assert streamed(consented, session, study, tmp_path / "out", study_file) == expected
    assert (
        bundle.build_tar(
            prepare(d, session, study, keys.load_identity(d), local=NO_NAMES), keys.load_identity(d), study.id
        )
        == expected
    )


def test_a_cut_session_streams_the_same_bytes(consented: Consented, study_file: Path, tmp_path: Path) -> None:
    d, study = consented
    session = synth_session(d, 3, count=12)
    identity = keys.load_identity(d)
    times = [e.t_ns for e in read_session(d, session, identity).events if isinstance(e, Frame)]
    cut_session(d, session, [(times[2], times[4])], identity, keys.load_recipient(d))
    expected = oracle(d, session, study)
    assert b"cuts" in expected
    assert streamed(consented, session, study, tmp_path / "out", study_file) == expected


def test_lazily_read_frames_hold_no_bytes_and_load_the_same_ones(consented: Consented) -> None:
    d, _ = consented
    session = synth_session(d, 1)
    identity = keys.load_identity(d)
    eager = read_session(d, session, identity).events
    lazy = read_session(d, session, identity, lazy_frames=True).events
    assert len(eager) == len(lazy)
    frames: list[tuple[Frame, Frame]] = [
        (a, b) for a, b in zip(eager, lazy, strict=True) if isinstance(a, Frame) and isinstance(b, Frame)
    ]
    assert frames
    refs: list[StoredFrame] = []
    for full, stub in frames:
        ref: Any = stub.data
        assert isinstance(ref, StoredFrame) and isinstance(ref, LazyData)
        assert (ref.sha256, ref.size) == (hashlib.sha256(full.data).hexdigest(), len(full.data))
        assert dataclasses.replace(stub, data=frame_data(stub)) == full
        refs.append(ref)
    # in time order each segment is decrypted once, keeping two: never once per frame
    assert refs[-1].store.decrypted == len({r.segment for r in refs}) < len(refs)


# --- OCR masks ---------------------------------------------------------------------------------------


class BoxOcr:
    """Stand-in engine: every band of a frame 'reads' an e-mail address at a place its height picks."""

    name = "stand-in"
    version = "0"

    def __call__(self, image: Any, boxes: Sequence[tuple[int, int, int, int]]) -> list[Word]:
        if image.size[1] == 97:
            raise OcrFailed("stand-in failure")
        words = []
        for _, top, _, bottom in boxes:
            y = top + (image.size[1] % 7) * 3
            if y + 12 <= bottom:
                words.append(Word((10, y, 200, y + 12), EMAIL))
        return words


def screen_frames(rng: random.Random, n: int) -> list[tuple[int, int, bytes]]:
    """``n`` frames of a few sizes (one the stand-in fails on), each different from the last."""
    out = []
    for k in range(n):
        w, h = rng.choice([(320, 120), (320, 120), (300, 97), (256, 140)])
        img = Image.new("RGB", (w, h), (250, 250, 250))
        draw = ImageDraw.Draw(img)
        draw.rectangle(
            (5, 5 + (k % 5) * 15, 5 + rng.randrange(40, 250), 15 + (k % 5) * 15), fill=(20, 20, 90)
        )
        out.append((w, h, encode_image(img)))
    return out


def masked_session(d: Dirs, frames: list[tuple[int, int, bytes]]) -> str:
    receipt = receipt_of(d)
    t = 10**12
    events: list[Event] = [
        Marker(t, "session_start", {"mono_ns": t, "wall_ns": 0, "consent_sha256": receipt["text_sha256"]})
    ]
    for k, (w, h, data) in enumerate(frames):
        t += 700_000_000
        events.append(Frame(t, 0, 0, w, h, "webp", "click", data))
        events += [
            PointerMove(t + 1, 5 + k, 6),
            ButtonPress(t + 2, 5 + k, 6, "left"),
            ButtonRelease(t + 3, 5 + k, 6, "left"),
        ]
    events.append(Marker(t + 10, "session_stop", {"loss": {"events": 0}}))
    return store(d, events, segment_bytes=20_000)


def redacted(d: Dirs, session: str, *, lazy: bool) -> Prepared:
    identity = keys.load_identity(d)
    data = read_session(d, session, identity, lazy_frames=lazy)
    red = policy.redact_session(data.events, policy.Policy(ocr="required"), ocr=BoxOcr(), local=NO_NAMES)
    events = bundle.task_records_kept(sorted(red.events, key=lambda e: e.t_ns), session)
    return Prepared(session, events, steps(events), red, receipt_of(d), data.problems)


def test_masked_frames_set_aside_in_the_spool_stream_the_bytes_masked_in_memory(consented: Consented) -> None:
    d, study = consented
    session = masked_session(d, screen_frames(random.Random(5), 24))  # noqa: S311 - reproducible data
    identity = keys.load_identity(d)
    eager, lazy = redacted(d, session, lazy=False), redacted(d, session, lazy=True)
    masked = [e for e in lazy.events if isinstance(e, Frame) and isinstance(e.data, SpooledBytes)]
    assert masked and lazy.redaction.counts["screen"] == eager.redaction.counts["screen"] != {}
    assert lazy.redaction.frames_left_out == eager.redaction.frames_left_out > 0
    assert not any(isinstance(e, Frame) and isinstance(e.data, bytes) for e in lazy.events)
    expected = old_build_tar(eager, identity, study.id)
    assert b"".join(bundle.plan_tar(lazy, identity, study.id).chunks()) == expected
    assert bundle.build_tar(eager, identity, study.id) == expected


def test_tesseract_masks_stream_the_same_bytes(
    consented: Consented, study_file: Path, tmp_path: Path
) -> None:
    if TesseractOcr.find() is None:
        unavailable("tesseract with English data is not installed (apt-get install tesseract-ocr-eng)")
    d, study = consented
    font = ImageFont.truetype(FONT, 18)
    frames = []
    for k in range(3):
        img = Image.new("RGB", (640, 120), "white")
        ImageDraw.Draw(img).text((10, 20 + 20 * k), f"write to {EMAIL} today {k}", fill="black", font=font)
        frames.append((640, 120, encode_image(img)))
    session = masked_session(d, frames)
    expected = oracle(d, session, study)
    assert b'"screen":{"EMAIL"' in expected  # tesseract read it and the frames were masked
    assert streamed(consented, session, study, tmp_path / "out", study_file) == expected


# --- frame_data: what stands in a frame's bytes ---------------------------------------------------------


def _webp(size: tuple[int, int] = (64, 40)) -> bytes:
    return encode_image(Image.new("RGB", size, (200, 210, 220)))


def test_a_frame_whose_bytes_are_not_those_its_hash_says_fails_the_export() -> None:
    frame = Frame(1, 0, 0, 64, 40, "webp", "click", _webp())
    good = dataclasses.replace(frame, data=cast(bytes, CountingRef(frame.data)))
    assert b"".join(bundle.tar_chunks("s", {"f.webp": good})) == b"".join(
        bundle.tar_chunks("s", {"f.webp": frame})
    )
    lying_ref = CountingRef(frame.data)
    lying_ref.sha256 = "0" * 64  # as if the spool or the store had changed under the export
    lying = dataclasses.replace(frame, data=cast(bytes, lying_ref))
    with pytest.raises(ExportError, match="changed while the session was being exported"):
        b"".join(bundle.tar_chunks("s", {"f.webp": lying}))
    with pytest.raises(TypeError):
        frame_data(dataclasses.replace(frame, data=cast(bytes, "not bytes")))


class CountingRef:
    """A :class:`LazyData` that counts its loads."""

    def __init__(self, data: bytes) -> None:
        self.blob, self.loads = data, 0
        self.sha256, self.size = hashlib.sha256(data).hexdigest(), len(data)

    def load(self) -> bytes:
        self.loads += 1
        return self.blob


def test_a_loading_view_loads_a_frame_only_when_its_data_is_read() -> None:
    refs = [CountingRef(_webp((64, 40 + k))) for k in range(4)]
    events: list[Any] = [
        Frame(k, 0, 0, 64, 40 + k, "webp", "click", cast(bytes, r)) for k, r in enumerate(refs)
    ]
    events.insert(2, PointerMove(2, 1, 1))
    view = LoadingView(events)
    kept = list(view)  # what OCR may hold: frames, none of their bytes
    assert sum(1 for e in kept if isinstance(e, Frame)) == 4 and all(r.loads == 0 for r in refs)
    assert kept[2] is events[2] and len(view) == 5
    assert kept[3].data == refs[2].blob and [r.loads for r in refs] == [0, 0, 1, 0]
    assert view[4].data == refs[3].blob and refs[3].loads == 1
    assert [f.t_ns for f in view[0:2]] == [0, 1] and refs[0].loads == 0
    assert is_lazy(events[0]) and not is_lazy(loaded(events[0])) and loaded(events[0]).data == refs[0].blob


# --- frames stored as patches (docs/format.md, Frame patches) ----------------------------------------


def patched_session(d: Dirs, *, strips: bool, n: int = 14) -> str:
    """Screens that change a little at a time, encoded by the recorder's region encoder (keyframes,
    patches on them, a new geometry half-way), stored in small segments."""
    from agent.capture.screen import Shot
    from agent.frame_regions import RegionEncoder

    encoder = RegionEncoder(strips=strips, max_chain_frames=5)
    receipt = receipt_of(d)
    t = 10**12
    events: list[Event] = [
        Marker(t, "session_start", {"mono_ns": t, "wall_ns": 0, "consent_sha256": receipt["text_sha256"]})
    ]
    img = Image.new("RGB", (200, 300), (240, 240, 240))
    for k in range(n):
        if k == n // 2:
            img = Image.new("RGB", (220, 300), (250, 240, 240))  # another geometry: a keyframe
        ImageDraw.Draw(img).rectangle(
            (10, 10 + 20 * (k % 12), 30 + 9 * k, 24 + 20 * (k % 12)), fill=(20, 40, k * 9)
        )
        t += 500_000_000
        pixels = img.convert("RGBA").tobytes("raw", "BGRA")
        events.append(encoder.encode(Shot(t, 0, 0, img.width, img.height, pixels), "click"))
        events += [ButtonPress(t + 1, 5, 5, "left"), ButtonRelease(t + 2, 5, 5, "left")]
    events.append(Marker(t + 10, "session_stop", {"loss": {"events": 0}}))
    return store(d, events, segment_bytes=4_000)


def count_encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One item per frame encoding made from now on (agent.frame_codec.encode_image, which the
    reader and the masks import when they encode)."""
    import agent.frame_codec

    made: list[int] = []
    real = agent.frame_codec.encode_image

    def counting(image: Any) -> bytes:
        made.append(1)
        return real(image)

    monkeypatch.setattr(agent.frame_codec, "encode_image", counting)
    return made


@pytest.mark.parametrize("strips", [True, False])
def test_frame_patches_are_rebuilt_lazily_exactly_as_the_reader_rebuilds_them(
    consented: Consented, strips: bool
) -> None:
    from agent.events import FramePatch
    from agent.frame_regions import rebuild

    d, _ = consented
    session = patched_session(d, strips=strips)
    identity = keys.load_identity(d)
    stored = read_session(d, session, identity, raw=True).events
    assert sum(isinstance(e, FramePatch) for e in stored) >= 8
    expected = [e for e in rebuild(stored) if isinstance(e, Frame)]
    lazy = [e for e in read_session(d, session, identity, lazy_frames=True).events if isinstance(e, Frame)]
    assert [dataclasses.replace(f, data=b"") for f in lazy] == [
        dataclasses.replace(f, data=b"") for f in expected
    ]
    assert [frame_data(f) for f in lazy] == [f.data for f in expected]  # in order: one rebuild pass
    for k in (9, 3, 12, 0, 7, 7, 13):  # out of order: started again from each patch's anchor
        assert frame_data(lazy[k]) == expected[k].data


def test_a_rebuilt_frame_gives_its_pixels_without_encoding_and_is_encoded_once(
    consented: Consented, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OCR and the masks take a patched frame's pixels as rebuilt (no encode-decode round trip);
    its bytes are made once, when first asked for, whatever asks and however often."""
    from agent.export.frame_data import encode_rebuilt, frame_pixels
    from agent.frame_regions import rebuild
    from agent.store.reader import RebuiltFrame

    d, _ = consented
    session = patched_session(d, strips=True)
    identity = keys.load_identity(d)
    expected = [
        e for e in rebuild(read_session(d, session, identity, raw=True).events) if isinstance(e, Frame)
    ]
    made = count_encodes(monkeypatch)
    lazy = [e for e in read_session(d, session, identity, lazy_frames=True).events if isinstance(e, Frame)]
    rebuilt = [f for f in lazy if isinstance(f.data, RebuiltFrame)]
    assert len(rebuilt) >= 8 and made == []  # reading encodes nothing
    view = LoadingView(lazy)
    for k, want_frame in enumerate(expected):
        with Image.open(io.BytesIO(want_frame.data)) as want:
            assert frame_pixels(view[k]).tobytes() == want.convert("RGB").tobytes()
    assert made == []  # nor does looking at the pixels
    encode_rebuilt(lazy)
    for frame in lazy:
        frame_data(frame)
        assert cast(LazyData, frame.data).sha256 == hashlib.sha256(frame_data(frame)).hexdigest()
    assert len(made) == len(rebuilt)  # once each
    assert [frame_data(f) for f in lazy] == [f.data for f in expected]


def test_a_patched_frame_ocr_masks_is_encoded_once_masked_never_whole(
    consented: Consented, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OCR reads a rebuilt frame's pixels and the masks are painted on them: the frame is encoded
    once, masked, and its unmasked encoding is never made; the bundle is the in-memory one."""
    d, study = consented
    session = patched_session(d, strips=True)
    identity = keys.load_identity(d)
    eager = redacted(d, session, lazy=False)
    made = count_encodes(monkeypatch)
    lazy = redacted(d, session, lazy=True)
    frames = [e for e in lazy.events if isinstance(e, Frame)]
    assert frames and lazy.redaction.counts["screen"].get("EMAIL", 0) > 0
    bundle_bytes = b"".join(bundle.plan_tar(lazy, identity, study.id).chunks())
    assert len(made) == len(frames)  # once each: masked, or (no mask) as rebuilt; never both
    assert bundle_bytes == old_build_tar(eager, identity, study.id)


def test_with_ocr_masks_the_export_holds_one_frame_at_a_time(consented: Consented) -> None:
    """Python's allocations (tracemalloc) while a session is read, OCR-masked and streamed as a tar:
    four times the frames (each ~40 kB, most masked) add about nothing to the peak."""
    import tracemalloc

    d, study = consented
    rng = random.Random(3)  # noqa: S311 - reproducible data
    looks = []
    for k in range(6):
        img = Image.effect_noise((160, 120), 60 + 10 * k).convert("RGB").resize((320, 240))
        ImageDraw.Draw(img).rectangle((0, 0, 319, 20 + 9 * k), fill=(250, 250, 250))
        looks.append((320, 240, encode_image(img)))
    peaks = {}
    for n in (16, 64):
        session = masked_session(d, [looks[(k * 5 + rng.randrange(2)) % 6] for k in range(n)])
        identity = keys.load_identity(d)
        tracemalloc.start()
        try:
            prepared = redacted(d, session, lazy=True)
            sha = hashlib.sha256()
            for chunk in bundle.plan_tar(prepared, identity, study.id).chunks():
                sha.update(chunk)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        frames = sum(1 for e in prepared.events if isinstance(e, Frame))
        assert (
            sum(1 for e in prepared.events if isinstance(e, Frame) and isinstance(e.data, SpooledBytes))
            > frames / 2
        )
    added = 48 * len(looks[0][2])  # the bytes of the frames the longer session adds
    assert peaks[64] - peaks[16] < added / 4, (peaks, added)
