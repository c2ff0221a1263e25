"""P6, study side: a SRC of hostile bundles next to good ones, built by ``optin dataset build``.

docs/dataset.md, "Limits and hostile input": every bundle of tests/hostile/test_bundles.py and
tests/unit/test_reason_codes.py (sealed to the study), bundles of optin's own writer that break only the
dataset's rules (a session id with a ``.`` or of 128 characters, frames whose image header lies), a
too-large bundle, two bundles of one session, links, a FIFO, a folder nested past the walk's depth and
names with control, bidi and non-UTF-8 characters share one SRC with good synthetic bundles
(tests/study/synth.py). One local build (and a second one over the same DEST) answers most cases; Ray
builds a smaller SRC; the PNG bombs run through the real command line in a child under ``RLIMIT_AS``
(tests/hostile/test_bundles.py ``run_limited``); what only a patched function can provoke
(``internal_error``, a withdrawn volunteer) calls pass 1's task in process.

Expected codes come from the spec's table (test_reason_codes.py's cases) or, for the randomised
headers, from ``optin inspect``'s own reader: the build must give the very answer inspect gives.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import random
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.dataset import intake, passes, tables
from agent.dataset.build import BuildOptions, BuildReport, build
from agent.dataset.manifest import Version
from agent.dataset.plan import Quarantined
from agent.dataset.source import open_source
from agent.dataset.stores import open_dest
from agent.dataset.version_files import ledger_rows
from agent.dataset.versions import read_current
from agent.errors import ExportError
from agent.events import Event, Frame, WindowFocus
from agent.export import bundle as writer
from agent.export import inspect
from agent.export.reasons import REASONS
from agent.redact.policy import Policy
from agent.store import signing
from agent.study import parse_study
from tests.hostile.conftest import Tally, fuzz_rounds
from tests.hostile.test_bundles import deep_bundle, run_limited, sparse_bomb, with_stanzas
from tests.study import synth
from tests.unit.test_inspect import (
    SECRET_TEXT,
    SESSION,
    STUDY,
    STUDY_KEY,
    VOLUNTEER,
    entries_for,
    manifest_for,
    sample_members,
    seal,
    tar_of,
    v1_manifest_for,
)
from tests.unit.test_reason_codes import AGE_CASES, CASES, canonical_manifest

P6 = "P6 hostile bundles (dataset build)"
KIB = 1 << 10
MB = 1 << 20
#: Stands for a bundle's content: a window title in every hand-made hostile bundle of the real writer.
CANARY = "CANARY-H9-title-5f3e"
#: The max-bundle-size of the main build: over every bundle but the one meant to be too large.
MAX_BUNDLE = 512 * KIB
#: The address space of the command-line builds (the driver and its worker each): a build of a few
#: small bundles runs in 600 MB with glibc's arenas capped (MALLOC_ARENA_MAX=2); a 50,000 x 50,000
#: image decoded would need 7.5 GB.
BUILD_ADDRESS_SPACE = 800 * MB
#: A pseudonym of its own for the hand-made bundles of the real writer.
REAL_SEED = 909
OTHER_STUDY = "other-web-tasks-2026"
#: Every name a DEST may hold (docs/dataset.md, "DEST layout", "Object names"; a local DEST's guard file).
_DATE = r"ingest_date=\d{4}-\d{2}-\d{2}"
_PLOT = r"plots/[a-z0-9][a-z0-9_-]{0,63}\.png"
LAYOUT = re.compile(
    rf"CURRENT|LOCK|\.optin-dest\.guard|README\.md|features\.json|wids\.json|{_PLOT}"
    rf"|versions/v\d{{6,}}\.json|versions/v\d{{6,}}\.wids\.json"
    rf"|shards/{_DATE}/[0-9a-f]{{32}}\.(?:tar|index\.jsonl)"
    rf"|tables/(?:sessions|steps|events|frames|tasks|ledger)/{_DATE}/[0-9a-f]{{32}}\.parquet"
    rf"|register/[0-9a-f]{{32}}\.jsonl"
    rf"|cards/v\d{{6,}}/(?:README\.md|features\.json|{_PLOT})"
)
HIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


# --- bundles -----------------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, idat: bytes | None = None, *, depth: int = 8, colour: int = 2) -> bytes:
    """A PNG whose ``IHDR`` says ``width x height``; ``idat`` its compressed data (default: two zeros)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    data = zlib.compress(b"\0\0") if idat is None else idat
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
    )


def real_png(width: int, height: int) -> bytes:
    """A whole PNG of ``width x height`` grey pixels (Pillow's encoder)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(out, format="PNG")
    return out.getvalue()


def honest_huge_png(side: int) -> bytes:
    """A true 1-bit PNG of ``side x side`` black pixels: a few dozen KB that decode to ``side**2`` bytes."""
    row = b"\0" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return png(side, side, idat, depth=1, colour=0)


@dataclass(frozen=True)
class Real:
    """A bundle of optin's own writer (tests/study/synth.py's events), sealed to the study."""

    blob: bytes
    session: str
    volunteer: str


def _study(study_id: str) -> Any:
    if study_id == synth.STUDY_ID:
        return synth.synth_study(str(STUDY_KEY.to_public()))
    text = synth._STUDY_TOML.format(  # the synthetic study under another id
        study_id=study_id,
        recipient=STUDY_KEY.to_public(),
        task_id=synth.STUDY_TASK_ID,
        instruction=synth.STUDY_TASK_INSTRUCTION,
    )
    return parse_study(text, source="<other study>")


def real_bundle(
    *,
    session: str | None = None,
    frame: Callable[[Frame], Frame] | None = None,
    study_id: str = synth.STUDY_ID,
    canary: bool = True,
) -> Real:
    """A 6-step session of synth.py through the real redaction, step rules and writer, signed by its
    volunteer; ``session`` replaces its id, ``frame`` changes every frame, ``canary`` names a window
    :data:`CANARY` (content that no DEST object of a quarantined bundle may show)."""
    study = _study(study_id)
    receipt = synth.receipt_of(study)
    rng = random.Random("optin hostile dataset")  # noqa: S311 - test data, not secrets
    made, events = synth.session_events(0, rng, receipt, synth.variant(0), 6)
    changed: list[Event] = []
    for original in events:
        event = frame(original) if isinstance(original, Frame) and frame is not None else original
        if canary and isinstance(event, WindowFocus) and (event.title or "").startswith("Files"):
            event = dataclasses.replace(event, title=f"Files {CANARY}")
        changed.append(event)
    session = session or made
    identity = synth.volunteer_identity(REAL_SEED, 0)
    prepared = synth.prepare(session, changed, Policy.from_study(study), receipt)
    tar = writer.build_tar(prepared, identity, study.id)
    return Real(seal(tar), session, signing.volunteer_id(identity, study.id))


def png_frame(width: int, height: int, data: bytes) -> Callable[[Frame], Frame]:
    return lambda f: dataclasses.replace(f, format="png", width=width, height=height, data=data)


def reason_of(blob: bytes) -> tuple[str, str | None, str | None]:
    """What ``optin inspect``'s reader answers for ``blob``: (code, session, volunteer)."""
    try:
        inspect.open_bundle_stream(io.BytesIO(blob), len(blob), Path("x.optin.tar.age"), [STUDY_KEY])
    except ExportError as exc:
        return exc.reason, exc.session, exc.volunteer
    return "", None, None


def mutated_tars(rounds: int) -> Iterator[bytes]:
    """Random type flags, sizes and pax records on random members (as test_bundles.py's fuzz case)."""
    rng = random.Random(6061)  # noqa: S311 - test data, not secrets
    types = [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE, tarfile.XGLTYPE, b"Z"]
    made = 0
    while made < rounds:
        entries = entries_for(sample_members())
        i = rng.randrange(len(entries))
        what = rng.randrange(3)
        if what == 0:
            change: dict[str, Any] = {"type": rng.choice(types)}
        elif what == 1:
            change = {"size": rng.choice([0, 1, 511, 513, 1 << 30, (1 << 33) + 5])}
        else:
            key = rng.choice(["size", "path", "GNU.sparse.size", "GNU.sparse.realsize", "linkpath"])
            change = {"pax": {key: rng.choice(["0", "1", str(1 << 30), "x" * 300, f"{SESSION}/x"])}}
        tar = tar_of([dataclasses.replace(e, **change) if n == i else e for n, e in enumerate(entries)])
        try:
            inspect.check_tar(tar, Path("b"))
        except ExportError:
            made += 1
            yield tar


# --- SRC, DEST and what they hold -----------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """A hostile bundle in SRC and its quarantine row as the spec says it must be."""

    name: str
    reason: str
    session: str | None
    volunteer: str | None
    sha256: str
    size: int


def put(src: Path, name: str, blob: bytes) -> Path:
    path = Path(os.fsdecode(os.path.join(os.fsencode(src), os.fsencode(name))))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry below ``root`` (links not followed): mode, size, mtime."""
    found: dict[str, tuple[int, int, int]] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            found[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return found


def dest_files(dest: Path) -> dict[str, bytes]:
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


def current(dest: Path) -> Version:
    with open_dest(str(dest)) as d:
        version = read_current(d)
    assert version is not None
    return version


def ledger(dest: Path) -> dict[str, tables.LedgerRow]:
    """The current version's ledger rows by ``source``."""
    with open_dest(str(dest)) as d:
        rows = ledger_rows(d, read_current(d))
    by_source = {r.source: r for r in rows}
    assert len(by_source) == len(rows), "two ledger rows of one SRC name"
    return by_source


def table_sessions(dest: Path) -> set[str]:
    import pyarrow.parquet as pq

    version = current(dest)
    sessions: set[str] = set()
    with open_dest(str(dest)) as d:
        for part in version.parts:
            listed = part.tables["sessions"]
            data = d.get(listed.path, max_size=listed.size).data
            sessions |= {str(s) for s in pq.read_table(io.BytesIO(data)).column("session").to_pylist()}
    return sessions


def options(src: Path, dest: Path, identity: Path, **more: Any) -> BuildOptions:
    return BuildOptions(
        src=str(src), dest=str(dest), identity_file=identity, workers=2, study_id=synth.STUDY_ID, **more
    )


@dataclass
class World:
    """The main SRC, its two builds and what was watched around them."""

    src: Path
    dest: Path
    expected: dict[str, Expect]
    good: dict[str, str]  # SRC name -> session
    elsewhere: list[str]  # sessions reachable only through a link or past the depth limit
    elsewhere_sha: set[str]
    duplicate: tuple[str, str, str]  # session, the smaller SHA-256, the larger
    late_duplicate: Expect
    first: BuildReport
    second: BuildReport
    outside_before: dict[str, tuple[int, int, int]]
    outside_after: dict[str, tuple[int, int, int]]
    src_unchanged: bool
    temp_left: list[str]
    real_blobs: list[bytes] = field(default_factory=list)


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("identity") / "study-identity.txt"
    path.write_text(f"# public key: {STUDY_KEY.to_public()}\n{STUDY_KEY}\n")
    return path


def _hostile(src: Path) -> tuple[dict[str, Expect], list[bytes]]:
    """Every hostile bundle of the SRC, written into it, with its expected quarantine row."""
    expected: dict[str, Expect] = {}

    def add(name: str, blob: bytes, reason: str, session: str | None = None, vol: str | None = None) -> None:
        put(src, name, blob)
        expected[name] = Expect(name, reason, session, vol, hashlib.sha256(blob).hexdigest(), len(blob))

    for key, case in CASES.items():
        tar = case.tar()
        vouched = (SESSION, canonical_manifest(tar)["volunteer"]["id"]) if case.vouched else (None, None)
        add(f"reason-codes/{key.replace('/', '-')}.optin.tar.age", seal(tar), case.reason, *vouched)
    for key, (make, reason, _) in AGE_CASES.items():
        add(f"age/{key.replace('/', '-')}.optin.tar.age", make(), reason)
    bombs: list[tuple[str, bytes, str]] = [
        *((f"sparse-{kind}", sparse_bomb(3, kind), "tar_header") for kind in ("pax-0.1", "pax-1.0", "gnu")),
        ("deep-path", deep_bundle(1, 2000), "member_name"),
        (
            "stanzas-2000",
            with_stanzas(seal(tar_of(entries_for(sample_members()))), 2000),
            "age_header_limits",
        ),
    ]
    members = sample_members()
    cut = manifest_for(members)
    cut["members"]["frames/000002.webp"]["size"] = 1 << 30
    entries = entries_for(members, cut)
    entries[-1] = dataclasses.replace(entries[-1], pax={"size": str(1 << 30)})
    bombs.append(("cut-short", seal(tar_of(entries)), "member_size"))
    for name, blob, reason in bombs:
        _, session, vol = reason_of(blob)
        add(f"bundles/{name}.optin.tar.age", blob, reason, session, vol)
    for n, tar in enumerate(mutated_tars(fuzz_rounds(6))):
        blob = seal(tar)
        reason, session, vol = reason_of(blob)
        add(f"fuzz/{n:03d}.optin.tar.age", blob, reason, session, vol)

    # The dataset's own rules, on bundles of optin's own writer that inspect accepts.
    dot = real_bundle(session="20261201T090000Z.1a2b3c4d")
    add("dataset/session-dot.optin.tar.age", dot.blob, "session_id_unsupported", None, dot.volunteer)
    long = real_bundle(session="a" * 128)
    add("dataset/session-128.optin.tar.age", long.blob, "session_id_unsupported", None, long.volunteer)
    images = {
        "png-1x1-holding-50000x50000": png_frame(1, 1, png(50_000, 50_000)),
        "png-50000x50000-holding-1x1": png_frame(50_000, 50_000, png(1, 1)),
        "png-not-a-png": png_frame(64, 40, synth.frame_images()[0]),
        "webp-32x32-holding-64x40": lambda f: dataclasses.replace(f, width=32, height=32),
        "webp-not-a-webp": lambda f: dataclasses.replace(f, data=b"RIFF" + CANARY.encode()),
    }
    reals = [dot.blob, long.blob]
    for name, change in images.items():
        bad = real_bundle(frame=change)
        add(f"dataset/{name}.optin.tar.age", bad.blob, "image_invalid", bad.session, bad.volunteer)
        reals.append(bad.blob)
    other = real_bundle(study_id=OTHER_STUDY)
    add("dataset/other-study.optin.tar.age", other.blob, "study_mismatch", other.session, other.volunteer)
    padding = random.Random(5).randbytes(MAX_BUNDLE)  # noqa: S311 - test data, not secrets
    big = real_bundle(frame=lambda f: dataclasses.replace(f, data=padding))
    add("dataset/too-large.optin.tar.age", big.blob, "too_large")
    # Names that would draw on a terminal, break a line or are no UTF-8 (a fresh seal each: new bytes).
    for name in ("names/evil\x1b[2J\x1b[1A\u202egpj.optin.tar.age", "names/two\nlines.optin.tar.age"):
        tar = CASES["member_hash"].tar()
        add(name, seal(tar), "member_hash", SESSION, canonical_manifest(tar)["volunteer"]["id"])
    add(os.fsdecode(b"names/bad\xff.optin.tar.age"), AGE_CASES["not_age/text"][0]() + b"\xff", "not_age")
    return expected, reals


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, identity: Path) -> Iterator[World]:
    base = tmp_path_factory.mktemp("world")
    src, outside, temp = base / "src", base / "out", base / "tmp"
    for folder in (src, outside, temp):
        folder.mkdir()
    dest = outside / "dest"
    recipient = str(STUDY_KEY.to_public())
    expected, reals = _hostile(src)

    good = {
        f"good/{b.path.name}": b.session
        for b in synth.make_bundles(src / "good", recipient, volunteers=2, sessions=2, seed=17)
    }
    shutil.copyfile(src / next(iter(good)), src / "copy-of-a-good-one.optin.tar.age")  # same SHA-256
    fine = real_bundle(frame=png_frame(64, 40, real_png(64, 40)), canary=False)
    put(src, "dataset/png-frame.optin.tar.age", fine.blob)
    good["dataset/png-frame.optin.tar.age"] = fine.session

    twins = [
        synth.make_bundles(base / f"twin{n}", recipient, volunteers=1, sessions=1, seed=23)[0] for n in "abc"
    ]
    assert twins[0].session == twins[1].session == twins[2].session
    for n, twin in enumerate(twins[:2]):
        shutil.copyfile(twin.path, src / f"twin-{n}.optin.tar.age")
    low, high = sorted(twins[:2], key=lambda t: t.sha256)
    good[f"twin-{twins[:2].index(low)}.optin.tar.age"] = low.session
    loser = f"twin-{twins[:2].index(high)}.optin.tar.age"
    expected[loser] = Expect(loser, "duplicate_session", high.session, high.volunteer, high.sha256, high.size)

    # Not bundles of SRC: links to bundles elsewhere, a FIFO, other names, a folder past the walk's depth.
    away = synth.make_bundles(base / "elsewhere", recipient, volunteers=1, sessions=2, seed=31)
    (src / "link.optin.tar.age").symlink_to(away[0].path)
    (src / "linked-folder").symlink_to(away[0].path.parent, target_is_directory=True)
    os.mkfifo(src / "fifo.optin.tar.age")
    (src / "notes.txt").write_text("not a bundle\n")
    shutil.copyfile(away[1].path, src / "upload.optin.tar.age.part")
    deep = src.joinpath("deep", *["d"] * 33)
    deep.mkdir(parents=True)
    shutil.copyfile(away[1].path, deep / away[1].path.name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(temp))
        mp.setattr(tempfile, "tempdir", str(temp))
        outside_before, src_before = snapshot(outside), snapshot(src)
        first = build(options(src, dest, identity, max_bundle_size=MAX_BUNDLE))
        src_unchanged = snapshot(src) == src_before
        third = twins[2]
        shutil.copyfile(third.path, src / "twin-late.optin.tar.age")
        late = Expect(
            "twin-late.optin.tar.age",
            "duplicate_session",
            third.session,
            third.volunteer,
            third.sha256,
            third.size,
        )
        src_before = snapshot(src)
        second = build(options(src, dest, identity, max_bundle_size=MAX_BUNDLE))
        src_unchanged = src_unchanged and snapshot(src) == src_before
        outside_after = snapshot(outside)
    yield World(
        src=src,
        dest=dest,
        expected=expected,
        good=good,
        elsewhere=[b.session for b in away],
        elsewhere_sha={b.sha256 for b in away},
        duplicate=(low.session, low.sha256, high.sha256),
        late_duplicate=late,
        first=first,
        second=second,
        outside_before=outside_before,
        outside_after=outside_after,
        src_unchanged=src_unchanged,
        temp_left=sorted(p.name for p in temp.iterdir()),
        real_blobs=reals,
    )


# --- the main build ---------------------------------------------------------------------------------------


def test_p6_every_hostile_bundle_is_quarantined_with_its_code_and_never_stops_the_build(
    hostile: Tally, world: World
) -> None:
    report = world.first
    assert report.deferred == [] and report.version == 1
    rows = ledger(world.dest)
    assert len(world.expected) > 60
    for name, want in world.expected.items():
        hostile.tried(P6)
        row = rows.get(tables.source_name(name))
        assert row is not None, f"{name!r} has no ledger row"
        got = (row.outcome, row.reason, row.stage, row.session, row.volunteer, row.sha256, row.size, row.part)
        assert got == (
            "quarantined",
            want.reason,
            REASONS[want.reason],
            want.session,
            want.volunteer,
            want.sha256,
            want.size,
            None,
        ), name
        assert want.reason != "internal_error", name
        hostile.held(P6)
    quarantined = {q.name: q.reason for q in report.quarantined}
    assert quarantined == {name: want.reason for name, want in world.expected.items()}


def test_p6_the_good_bundles_next_to_them_are_ingested(world: World) -> None:
    report = world.first
    rows = ledger(world.dest)
    copied = next(iter(world.good))  # also in SRC as copy-of-a-good-one: one bundle, either name
    for name, session in world.good.items():
        row = rows.get(tables.source_name(name)) or rows["copy-of-a-good-one.optin.tar.age"]
        assert (row.outcome, row.reason, row.session) == ("ingested", None, session), name
        assert name in (copied, row.source)
    assert (tables.source_name(copied) in rows) != ("copy-of-a-good-one.optin.tar.age" in rows)
    assert report.ingested == len(world.good) == 6
    assert table_sessions(world.dest) == set(world.good.values())
    bundles = len(world.expected) + len(world.good) + 1  # + the copy of a good one, skipped
    assert (report.found, report.skipped, report.ignored) == (bundles + 6, 1, 6)


def test_p6_nothing_is_written_outside_dest(world: World) -> None:
    """The folder holding DEST gains only DEST; SRC is as it was; no temporary file anywhere."""
    assert world.outside_before == {}
    assert set(world.outside_after) == {"dest"} | {k for k in world.outside_after if k.startswith("dest/")}
    assert world.src_unchanged
    assert world.temp_left == []
    files = dest_files(world.dest)
    odd = [name for name in files if not LAYOUT.fullmatch(name)]
    assert odd == [], odd
    for path in [world.dest, *world.dest.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert not path.is_symlink() and mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_p6_links_in_src_are_ignored_and_never_followed(hostile: Tally, world: World) -> None:
    """A link to a bundle elsewhere, a link to a folder of bundles and a folder past the walk's depth
    are counted ``ignored``: nothing they lead to is read, ingested or recorded."""
    hostile.tried(P6, 3)
    rows = ledger(world.dest)
    assert not {r.sha256 for r in rows.values()} & world.elsewhere_sha
    assert not set(world.elsewhere) & table_sessions(world.dest)
    assert not [s for s in rows if s.startswith(("link", "deep/", "upload.")) or "elsewhere" in s]
    assert world.first.ignored == 6
    hostile.held(P6, 3)


def test_p6_a_fifo_in_src_does_not_hang_the_build(hostile: Tally, world: World) -> None:
    """The build finished (this fixture would hang otherwise); the FIFO is ignored, never opened."""
    hostile.tried(P6)
    assert stat.S_ISFIFO((world.src / "fifo.optin.tar.age").lstat().st_mode)
    assert "fifo.optin.tar.age" not in ledger(world.dest)
    hostile.held(P6)


def test_p6_session_ids_the_dataset_cannot_key_are_quarantined(hostile: Tally, world: World) -> None:
    """Accepted by inspect (1-128 characters, dots allowed), refused by the dataset (sample keys);
    the ledger names no such session id."""
    rows = ledger(world.dest)
    for name in ("dataset/session-dot.optin.tar.age", "dataset/session-128.optin.tar.age"):
        hostile.tried(P6)
        row = rows[name]
        assert (row.reason, row.stage, row.session) == ("session_id_unsupported", "dataset", None)
        assert row.volunteer == world.expected[name].volunteer
        hostile.held(P6)
    for blob in world.real_blobs[:2]:  # the control: inspect opens them
        assert reason_of(blob)[0] == ""


def test_p6_an_image_whose_header_is_not_its_frame_is_image_invalid(hostile: Tally, world: World) -> None:
    rows = ledger(world.dest)
    names = [n for n in world.expected if n.startswith(("dataset/png-", "dataset/webp-"))]
    assert len(names) == 5
    for name in names:
        hostile.tried(P6)
        assert (rows[name].reason, rows[name].stage) == ("image_invalid", "dataset"), name
        hostile.held(P6)
    for blob in world.real_blobs[2:]:  # inspect opens them: only the dataset's image check refuses
        assert reason_of(blob)[0] == ""
    assert rows["dataset/png-frame.optin.tar.age"].outcome == "ingested"  # a true PNG is transcoded


def test_p6_two_bundles_of_one_session_keep_the_smaller_sha256(hostile: Tally, world: World) -> None:
    session, low, high = world.duplicate
    hostile.tried(P6, 2)
    by_sha = {r.sha256: r for r in ledger(world.dest).values()}
    assert (by_sha[low].outcome, by_sha[high].outcome, by_sha[high].reason) == (
        "ingested",
        "quarantined",
        "duplicate_session",
    )
    assert [(d.session, d.kept, d.quarantined) for d in world.first.duplicates] == [(session, low, high)]
    late = world.late_duplicate  # a third bundle of it in a later build: the ingested one stays
    assert [(d.session, d.kept, d.quarantined) for d in world.second.duplicates] == [
        (session, low, late.sha256)
    ]
    assert (by_sha[late.sha256].outcome, by_sha[late.sha256].reason) == ("quarantined", "duplicate_session")
    hostile.held(P6, 2)


def test_p6_a_second_build_reads_no_quarantined_bundle_again(world: World) -> None:
    report = world.second
    assert (report.ingested, report.version, report.deferred) == (0, 2, [])
    assert [q.name for q in report.quarantined] == [world.late_duplicate.name]
    assert report.skipped == world.first.found - world.first.ignored
    assert len(ledger(world.dest)) == len(world.expected) + len(world.good) + 1


def test_p6_a_too_large_bundle_is_quarantined_without_being_decrypted(
    hostile: Tally, world: World, identity: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = "dataset/too-large.optin.tar.age"
    hostile.tried(P6)
    row = ledger(world.dest)[name]
    assert (row.reason, row.stage, row.session, row.volunteer) == ("too_large", "source", None, None)
    assert row.size > MAX_BUNDLE
    # Pass 1's task itself, with every reader of the bundle's bytes broken: it must not call one.
    src = tmp_path / "src"
    shutil.copyfile(world.src / name, put(src, "big.optin.tar.age", b""))

    def never(*_: Any, **__: Any) -> Any:
        pytest.fail("a too-large bundle was opened")

    monkeypatch.setattr(passes, "read_bundle", never)
    monkeypatch.setattr(inspect, "open_bundle_stream", never)
    result = passes.check(settings(src, identity, max_bundle_size=MAX_BUNDLE), candidate(src))
    assert isinstance(result, Quarantined)
    assert (result.reason, result.sha256) == ("too_large", row.sha256)
    hostile.held(P6)


def test_p6_the_quarantine_stores_no_content(hostile: Tally, world: World) -> None:
    """No DEST object (Parquet read back, shards, index, manifests, card) holds a string of a
    quarantined bundle's members; the same scan finds the ingested bundles' content."""
    import pyarrow.parquet as pq

    needles = [CANARY, SECRET_TEXT, "RIFF-frame", "to:alice"]
    for blob in world.real_blobs:  # the canary is in the hostile bundles' plaintext
        hostile.tried(P6)
        assert CANARY.encode() in pyrage_decrypt(blob)
    texts: list[bytes] = []
    for name, data in dest_files(world.dest).items():
        texts.append(data)
        if name.endswith(".parquet"):
            texts.append(repr(pq.read_table(io.BytesIO(data)).to_pylist()).encode())
    everything = b"\n".join(texts)
    assert "Files — Documents".encode() in everything  # an ingested window title: the scan sees content
    for needle in needles:
        assert needle.encode() not in everything, needle
    hostile.held(P6, len(world.real_blobs))


def pyrage_decrypt(blob: bytes) -> bytes:
    import pyrage

    plain: bytes = pyrage.decrypt(blob, [STUDY_KEY])
    return plain


def test_p6_src_names_reach_the_ledger_escaped(hostile: Tally, world: World) -> None:
    rows = ledger(world.dest)
    sources = [s for s in rows if s.startswith("names/")]
    assert sorted(sources) == sorted(
        [
            "names/evil\\u001b[2J\\u001b[1A\\u202egpj.optin.tar.age",
            "names/two\\u000alines.optin.tar.age",
            "names/bad\\udcff.optin.tar.age",
        ]
    )
    for source in rows:
        hostile.tried(P6)
        assert not HIDDEN.search(source), source
        hostile.held(P6)


# --- pass 1's task in process: what only a patched function provokes ----------------------------------


def settings(src: Path, identity: Path, **more: Any) -> passes.Settings:
    fields: dict[str, Any] = {
        "source": str(src),
        "dest": "unused",
        "identity": intake.Identity((str(STUDY_KEY),)),
        "withdrawn": frozenset(),
        "known": frozenset(),
        "max_bundle_size": 1 << 30,
    }
    return passes.Settings(**(fields | more))


def candidate(src: Path) -> Any:
    with open_source(str(src)) as source:
        (only,) = [c for c in source.list() if c.kind == "bundle"]
    return only


class Planted(KeyError):
    """A bug of optin's code, as a check's unexpected exception (its text is content)."""


def test_p6_an_exception_inside_a_task_is_internal_error_with_its_class_name_only(
    hostile: Tally, identity: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fine = real_bundle()
    src = tmp_path / "src"
    put(src, "b.optin.tar.age", fine.blob)
    sha = hashlib.sha256(fine.blob).hexdigest()
    accepted = passes.check(settings(src, identity), candidate(src))
    assert not isinstance(accepted, Quarantined)  # the control: the bundle itself is fine

    def boom(*_: Any, **__: Any) -> Any:
        raise Planted(CANARY)

    for module, name in ((inspect, "open_bundle_stream"), (intake, "samples"), (intake, "check_bundle")):
        hostile.tried(P6)
        with monkeypatch.context() as mp:
            mp.setattr(module, name, boom)
            result = passes.check(settings(src, identity), candidate(src))
        assert isinstance(result, Quarantined), name
        assert (result.reason, result.stage, result.sha256) == ("internal_error", "dataset", sha), name
        assert result.message == "unexpected Planted" and CANARY not in repr(result), name
        hostile.held(P6)


def test_p6_a_forged_optin_bundle_1_of_a_withdrawn_volunteer_is_refused(
    hostile: Tally, identity: Path, tmp_path: Path
) -> None:
    """optin-bundle/1 ids are not bound to their key: the register's pseudonym and signing key both
    refuse, whichever of the two a forger keeps."""
    members = sample_members()
    forger = bytes(range(50, 82))
    claimed = v1_manifest_for(members)
    claimed["volunteer"]["signing_key"] = base64.b64encode(signing.public_key_of_seed(forger)).decode()
    own_key = v1_manifest_for(members)
    own_key["volunteer"]["id"] = "f" * 32  # the withdrawn volunteer's own key under a made-up id
    victim_id = signing.v1_volunteer_id(VOLUNTEER, STUDY)
    victim_key = v1_manifest_for(members)["volunteer"]["signing_key"]
    cases = [
        (entries_for(members, claimed, seed=forger), victim_id),
        (entries_for(members, own_key, seed=signing.v1_signing_seed(VOLUNTEER)), victim_key),
    ]
    for n, (entries, withdrawn) in enumerate(cases):
        src = tmp_path / f"src{n}"
        put(src, "b.optin.tar.age", seal(tar_of(entries)))
        hostile.tried(P6)
        control = passes.check(settings(src, identity), candidate(src))
        assert not (isinstance(control, Quarantined) and control.reason == "volunteer_withdrawn")
        result = passes.check(settings(src, identity, withdrawn=frozenset({withdrawn})), candidate(src))
        assert isinstance(result, Quarantined)
        assert (result.reason, result.session, result.volunteer) == ("volunteer_withdrawn", None, None)
        hostile.held(P6)


# Found by this suite: a PNG frame whose header is right but whose data does not decode was
# `deferred` (Pillow's OSError looked like an I/O failure to intake.read_bundle), so every later build
# read it again and exited 1.
def test_p6_a_png_frame_that_does_not_decode_is_image_invalid(
    hostile: Tally, identity: Path, tmp_path: Path
) -> None:
    broken = {
        "bad-data": png(64, 40, b"not zlib"),
        "cut-short": png(64, 40),
        "header-only": png(64, 40)[:33],
    }
    for n, data in enumerate(broken.values()):
        src = tmp_path / f"src{n}"
        put(src, "b.optin.tar.age", real_bundle(frame=png_frame(64, 40, data)).blob)
        hostile.tried(P6)
        result = passes.check(settings(src, identity), candidate(src))
        assert isinstance(result, Quarantined), result
        assert result.reason == "image_invalid"
        hostile.held(P6)


def test_p6_checking_png_frames_leaves_pillows_process_wide_limit_alone(
    identity: Path, tmp_path: Path
) -> None:
    """An earlier build set Image.MAX_IMAGE_PIXELS to each frame's size: in one process (a test run,
    an operator's notebook), every later image over it was refused as a bomb."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    put(tmp_path / "src", "b.optin.tar.age", real_bundle(frame=png_frame(64, 40, real_png(64, 40))).blob)
    result = passes.check(settings(tmp_path / "src", identity), candidate(tmp_path / "src"))
    assert not isinstance(result, Quarantined), result
    assert before == Image.MAX_IMAGE_PIXELS


# --- small builds of their own ------------------------------------------------------------------------


# Found by this suite: the same refused bytes under two SRC names gave two ledger rows of one SHA-256,
# and layout.ledger_id refuses repeated digests: the build failed at its commit, and every later one.
def test_p6_one_refused_bundle_under_two_names_is_one_bundle(
    hostile: Tally, identity: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    synth.make_bundles(src, str(STUDY_KEY.to_public()), volunteers=1, sessions=1, seed=43)
    blob = seal(CASES["member_hash"].tar())
    put(src, "upload-1.optin.tar.age", blob)
    put(src, "upload-2.optin.tar.age", blob)
    hostile.tried(P6)
    report = build(options(src, tmp_path / "dest", identity))
    assert (report.ingested, len(report.quarantined), report.skipped) == (1, 1, 1)
    rows = ledger(tmp_path / "dest")
    assert [r.reason for r in rows.values() if r.outcome == "quarantined"] == ["member_hash"]
    hostile.held(P6)


def test_p6_both_engines_quarantine_alike_and_keep_the_smaller_sha256(
    hostile: Tally, identity: Path, tmp_path: Path
) -> None:
    """The same SRC with ``--engine local`` and ``--engine ray``: the same quarantine, the same parts.

    Ray is the engine's own local one (started and stopped by the build), or the session's when a
    test already started it: the ``ray_local`` fixture is defined twice (tests/conftest.py imports
    tests/servers.py's), so a session Ray started from here would make tests/study's own
    ``ray_local`` call ``ray.init`` a second time and fail.
    """
    src = tmp_path / "src"
    recipient = str(STUDY_KEY.to_public())
    twins = [
        synth.make_bundles(tmp_path / f"t{n}", recipient, volunteers=1, sessions=1, seed=41)[0] for n in "ab"
    ]
    for n, twin in enumerate(twins):
        put(src, f"twin-{n}.optin.tar.age", twin.path.read_bytes())
    synth.make_bundles(src / "good", recipient, volunteers=1, sessions=2, seed=42)
    put(src, "hostile/member_hash.optin.tar.age", seal(CASES["member_hash"].tar()))
    put(src, "hostile/stanzas.optin.tar.age", AGE_CASES["age_header_limits/stanzas"][0]())
    put(src, "hostile/session-dot.optin.tar.age", real_bundle(session="x.y").blob)
    low, high = sorted(twins, key=lambda t: t.sha256)
    answers = {}
    for engine in ("local", "ray"):
        hostile.tried(P6)
        # One part per bundle: pass 2 has several tasks (Ray Data warns about a single one, see the report).
        report = build(options(src, tmp_path / engine, identity, engine=engine, shard_size=1))
        assert [(d.kept, d.quarantined) for d in report.duplicates] == [(low.sha256, high.sha256)], engine
        answers[engine] = (
            sorted((q.name, q.reason) for q in report.quarantined),
            sorted((p.id, p.shard.sha256) for p in current(tmp_path / engine).parts),
        )
        hostile.held(P6)
    assert answers["local"] == answers["ray"]
    assert answers["ray"][0] == [
        ("hostile/member_hash.optin.tar.age", "member_hash"),
        ("hostile/session-dot.optin.tar.age", "session_id_unsupported"),
        ("hostile/stanzas.optin.tar.age", "age_header_limits"),
        (f"twin-{twins.index(high)}.optin.tar.age", "duplicate_session"),
    ]


# --- the command line, under RLIMIT_AS ----------------------------------------------------------------


def cli_build(src: Path, dest: Path, identity: Path, *more: str) -> Any:
    return run_limited(
        "dataset",
        "build",
        str(src),
        str(dest),
        "--identity",
        str(identity),
        "--workers",
        "1",
        *more,
        address_space=BUILD_ADDRESS_SPACE,
    )


@pytest.fixture
def small_arenas(monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc reserves 64 MB of address space per thread arena: a capped count keeps RLIMIT_AS about memory."""
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")


@pytest.mark.usefixtures("small_arenas")
def test_p6_a_png_bomb_is_image_invalid_in_bounded_memory_and_names_print_escaped(
    hostile: Tally, identity: Path, tmp_path: Path
) -> None:
    """A frame that claims 1 x 1 but whose PNG header says 50,000 x 50,000 (7.5 GB of pixels), and
    the reverse, are refused from their headers inside the address-space limit; the command's output
    (text and --json) shows SRC names with their control, bidi and non-UTF-8 characters escaped."""
    src = tmp_path / "src"
    synth.make_bundles(src, str(STUDY_KEY.to_public()), volunteers=1, sessions=1, seed=44)
    bombs = {
        "bomb\x1b[31m\u202e\u2066.optin.tar.age": png_frame(1, 1, png(50_000, 50_000)),
        os.fsdecode(b"liar\xfe\n.optin.tar.age"): png_frame(50_000, 50_000, png(1, 1)),
    }
    for name, change in bombs.items():
        put(src, name, real_bundle(frame=change).blob)
    os.mkfifo(src / "fifo.optin.tar.age")
    text = cli_build(src, tmp_path / "dest-text", identity)
    shown = cli_build(src, tmp_path / "dest-json", identity, "--json")
    for run in (text, shown):
        hostile.tried(P6, 2)
        assert run.exit == 0, run.err
        assert "Traceback" not in run.err and "MemoryError" not in run.err, run.err
        hostile.held(P6, 2)
    assert "image_invalid 2" in text.out
    for line in text.out.splitlines() + text.message.splitlines():
        assert not HIDDEN.search(line), line
    assert "bomb\\u001b[31m\\u202e\\u2066.optin.tar.age" in text.out
    assert "liar\\udcfe\\u000a.optin.tar.age" in text.out
    report = json.loads(shown.out)
    assert report["bundles"]["ignored"] == 1 and report["bundles"]["ingested"] == 1
    assert sorted((q["source"], q["reason"]) for q in report["quarantined"]) == [
        ("bomb\\u001b[31m\\u202e\\u2066.optin.tar.age", "image_invalid"),
        ("liar\\udcfe\\u000a.optin.tar.age", "image_invalid"),
    ]


# Found by this suite: a frame that said honestly that it is 20,000 x 20,000 pixels (over the first
# draft's 2^28 for a png frame) was decoded: a 48 KB PNG took a worker to 3.7 GB and 13 s and ended as
# `internal_error` (WebP's 16,383 limit). Now a png frame over 2^25 pixels or 16,383 a side is
# `image_invalid` before anything is decoded.
@pytest.mark.usefixtures("small_arenas")
def test_p6_a_png_frame_over_2_28_pixels_is_image_invalid_in_bounded_memory(
    hostile: Tally, identity: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    synth.make_bundles(src, str(STUDY_KEY.to_public()), volunteers=1, sessions=1, seed=45)
    put(src, "huge.optin.tar.age", real_bundle(frame=png_frame(20_000, 20_000, honest_huge_png(20_000))).blob)
    hostile.tried(P6)
    run = cli_build(src, tmp_path / "dest", identity, "--json")
    assert run.exit == 0, run.err
    assert [(q["source"], q["reason"]) for q in json.loads(run.out)["quarantined"]] == [
        ("huge.optin.tar.age", "image_invalid")
    ]
    hostile.held(P6)
