"""P6, collector side: hostile bundles thrown at ``optin inspect`` and ``optin unpack``.

Anyone who has a study file can encrypt a bundle to the study, so every bundle is untrusted input.
The resource cases run the real command line in a child process under ``RLIMIT_AS`` (address
space) with a generous wall-clock timeout that proves "does not hang", not a speed: a sparse
bomb must be refused inside 300 MB, a 2,000- or 20,000-stanza age header, a 2,000-deep path and
``/dev/zero`` within seconds (before this was fixed they took 2-4 GB, 40 s to over 600 s, 53-94 s
and forever). The forgery and recount cases build bundles from the spec's words
(tests/unit/test_inspect.py's helpers) and run in process; their random rounds follow
``OPTIN_FUZZ_ROUNDS`` (``make fuzz``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.canonical_json import canonical
from agent.errors import ExportError
from agent.export import inspect
from agent.store import signing
from tests.hostile.conftest import Tally, fuzz_rounds
from tests.unit.test_inspect import (
    SAMPLE_COUNTS,
    SAMPLE_LOSS,
    SESSION,
    STUDY,
    STUDY_KEY,
    Entry,
    entries_for,
    manifest_for,
    sample_members,
    seal,
    tar_of,
    v1_manifest_for,
)

P6 = "P6 hostile bundles"
MB = 1 << 20
GIB = 1 << 30
#: The address space every resource case runs in: a sparse bomb used to take 2-4 GB.
ADDRESS_SPACE = 300 * MB
#: "Does not hang": generous for a loaded CI machine; the fixed code answers in well under a second.
TIMEOUT_S = 60.0
#: Peak memory (RSS) allowed for a refusal, far under the bombs' gigabytes (an idle run is ~30 MB).
REFUSAL_RSS = 150 * MB

_LIMITED = """
import atexit, resource, runpy, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
# VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across (v)fork and exec,
# so a child of a long pytest run would report pytest's memory, not its own.
peak = lambda: next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
atexit.register(lambda: sys.stderr.write(f"\\nmaxrss_kb={peak()}\\n"))
sys.argv = ["optin", *sys.argv[2:]]
runpy.run_module("agent", run_name="__main__", alter_sys=True)
"""


@dataclasses.dataclass(frozen=True)
class Run:
    exit: int
    out: str
    err: str
    seconds: float
    rss: int  # bytes

    @property
    def message(self) -> str:
        return self.err.rsplit("maxrss_kb=", 1)[0].strip()


def run_limited(*args: str, address_space: int = ADDRESS_SPACE, timeout: float = TIMEOUT_S) -> Run:
    """``optin ARGS`` in a child under ``RLIMIT_AS``: its exit code, output, wall time and peak RSS."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _LIMITED, str(address_space), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    seconds = time.monotonic() - start
    rss_kb = done.stderr.rsplit("maxrss_kb=", 1)[-1].strip() if "maxrss_kb=" in done.stderr else "0"
    return Run(done.returncode, done.stdout, done.stderr, seconds, int(rss_kb) * 1024)


def assert_refused(run: Run, match: str) -> None:
    """Refused as the spec says: exit 1, the named check, no traceback, small memory."""
    assert run.exit == 1, run.err
    assert "Traceback" not in run.err and "MemoryError" not in run.err, run.err
    assert match in run.message, run.message
    assert 0 < run.rss < REFUSAL_RSS, f"peak RSS {run.rss / MB:.0f} MB"


@pytest.fixture
def identity_file(tmp_path: Path) -> Path:
    path = tmp_path / "study-identity.txt"
    path.write_text(f"{STUDY_KEY}\n")
    return path


@pytest.fixture
def bundle_file(tmp_path: Path) -> Callable[[bytes], Path]:
    def write(blob: bytes, name: str = f"{SESSION}.optin.tar.age") -> Path:
        path = tmp_path / name
        path.write_bytes(blob)
        return path

    return write


def inspect_limited(path: Path, identity_file: Path, *more: str) -> Run:
    return run_limited("inspect", str(path), "--identity", str(identity_file), *more)


def unpack_limited(path: Path, identity_file: Path, out: Path) -> Run:
    return run_limited("unpack", str(path), "--identity", str(identity_file), "--out", str(out))


# --- the control: a valid bundle passes under the same limits ------------------------------------------


def test_p6_a_valid_bundle_opens_and_unpacks_under_the_same_limits(
    bundle_file: Callable[..., Path], identity_file: Path, tmp_path: Path
) -> None:
    path = bundle_file(seal(tar_of(entries_for(sample_members()))))
    run = inspect_limited(path, identity_file, "--json")
    assert run.exit == 0, run.err
    summary = json.loads(run.out)
    assert summary["volunteer"]["id_verified"] is True and summary["signature"] == "valid"
    run = unpack_limited(path, identity_file, tmp_path / "out")
    assert run.exit == 0, run.err
    assert (tmp_path / "out" / SESSION / "frames" / "000002.webp").read_bytes() == b"RIFF-frame-2"


# --- sparse and oversized members ----------------------------------------------------------------------


def sparse_bomb(copies: int, kind: str) -> bytes:
    """A small bundle whose tar declares ``copies`` sparse members of 1 GiB, each listed (with the
    SHA-256 of its 1 GiB of zeros and one byte) in a correctly signed manifest."""
    members = sample_members()
    manifest = manifest_for(members)
    digest = "c4b0f5a2b8cef2a3c56f6a9e2d5c1d8ee6f65b9b5a4d0a6f5b0b1f3c2f0c6b1d"  # refused before any hash
    names = [f"frames/{900000 + i:06d}.webp" for i in range(copies)]
    for name in names:
        manifest["members"][name] = {"sha256": digest, "size": GIB}
    entries = entries_for(members, manifest)
    for name in names:
        full = f"{SESSION}/{name}"
        if kind == "pax-0.1":
            pax = {"GNU.sparse.size": str(GIB), "GNU.sparse.map": f"{GIB - 1},1", "GNU.sparse.name": full}
            entries.append(Entry(full, b"\x01", size=1, pax=pax))
        elif kind == "pax-1.0":
            pax = {
                "GNU.sparse.major": "1",
                "GNU.sparse.minor": "0",
                "GNU.sparse.realsize": str(GIB),
                "GNU.sparse.name": full,
            }
            data = b"1\n1073741823\n1\n".ljust(512, b"\0") + b"\x01"
            entries.append(Entry(full, data, size=len(data), pax=pax))
        else:  # old GNU sparse header, type S
            entries.append(Entry(full, b"\x01", type=tarfile.GNUTYPE_SPARSE, size=1))
    return seal(tar_of(entries))


@pytest.mark.parametrize("kind", ["pax-0.1", "pax-1.0", "gnu"])
def test_p6_sparse_bombs_are_refused_within_300_mb(
    hostile: Tally, bundle_file: Callable[..., Path], identity_file: Path, tmp_path: Path, kind: str
) -> None:
    """Before: 2.1 GB RSS for one 1 GiB sparse member (three: 4.1 GB), accepted; unpack wrote 3 GiB."""
    blob = sparse_bomb(3, kind)
    assert len(blob) < 64 << 10
    path = bundle_file(blob)
    for run in (inspect_limited(path, identity_file), unpack_limited(path, identity_file, tmp_path / "out")):
        hostile.tried(P6)
        assert_refused(run, "sparse")
        hostile.held(P6)
    assert not (tmp_path / "out" / SESSION).exists()


@pytest.mark.parametrize("where", ["pax-size", "ustar-size"])
def test_p6_a_member_declaring_more_than_the_file_holds_is_refused_before_reading(
    hostile: Tally, bundle_file: Callable[..., Path], identity_file: Path, where: str
) -> None:
    members = sample_members()
    manifest = manifest_for(members)
    manifest["members"]["frames/000002.webp"]["size"] = GIB
    entries = entries_for(members, manifest)
    last = entries[-1]
    if where == "pax-size":
        entries[-1] = dataclasses.replace(last, pax={"size": str(GIB)})
    else:
        entries[-1] = dataclasses.replace(last, size=GIB)
    hostile.tried(P6)
    assert_refused(inspect_limited(bundle_file(seal(tar_of(entries))), identity_file), "cut short")
    hostile.held(P6)


# --- depth ---------------------------------------------------------------------------------------------


def deep_bundle(count: int, depth: int) -> bytes:
    members = sample_members()
    for i in range(count):
        members["/".join(["d"] * depth) + f"/{i:06d}.webp"] = b"x"
    return seal(tar_of(entries_for(members)))


@pytest.mark.parametrize("count", [1, 600], ids=["one", "many"])
def test_p6_deep_paths_are_refused_quickly(
    hostile: Tally, bundle_file: Callable[..., Path], identity_file: Path, tmp_path: Path, count: int
) -> None:
    """Before: one 2,000-deep path took unpack 53-94 s; a 9.7 MB bundle of them, inspect 22 s."""
    path = bundle_file(deep_bundle(count, 2000))
    for run in (inspect_limited(path, identity_file), unpack_limited(path, identity_file, tmp_path / "out")):
        hostile.tried(P6)
        assert_refused(run, "not a name a bundle holds")
        assert run.seconds < TIMEOUT_S
        hostile.held(P6)
    assert not (tmp_path / "out" / SESSION).exists()


# --- the age header ------------------------------------------------------------------------------------


def with_stanzas(sealed: bytes, extra: int) -> bytes:
    """``sealed`` with ``extra`` well-formed X25519 stanzas for nobody inserted into its header."""
    rng = random.Random(extra)  # noqa: S311 - test data, not secrets
    head, _, rest = sealed.partition(b"\n")

    def b64(n: int) -> bytes:
        return base64.b64encode(rng.randbytes(n)).rstrip(b"=")

    stanzas = b"".join(b"-> X25519 " + b64(32) + b"\n" + b64(32) + b"\n" for _ in range(extra))
    return head + b"\n" + stanzas + rest


@pytest.mark.parametrize("extra", [2_000, 20_000])
def test_p6_an_age_header_with_thousands_of_stanzas_is_refused_before_decryption(
    hostile: Tally, bundle_file: Callable[..., Path], identity_file: Path, extra: int
) -> None:
    """Before: 2,000 stanzas took 38-40 s to decrypt; 20,000, over 600 s (the age CLI: 0.1 s)."""
    path = bundle_file(with_stanzas(seal(tar_of(entries_for(sample_members()))), extra))
    hostile.tried(P6)
    run = inspect_limited(path, identity_file)
    assert_refused(run, "recipient stanzas; a bundle has at most 64")
    hostile.held(P6)


def test_p6_an_age_header_of_one_huge_stanza_is_refused(
    hostile: Tally, bundle_file: Callable[..., Path], identity_file: Path
) -> None:
    sealed = seal(tar_of(entries_for(sample_members())))
    head, _, rest = sealed.partition(b"\n")
    body = (b"A" * 64 + b"\n") * 20_000  # 1.3 MB of one stanza's body
    hostile.tried(P6)
    run = inspect_limited(
        bundle_file(head + b"\n-> X25519 " + b"B" * 43 + b"\n" + body + rest), identity_file
    )
    assert_refused(run, "age header longer than 16384 bytes")
    hostile.held(P6)


# --- paths that are not files --------------------------------------------------------------------------


def test_p6_dev_zero_and_a_fifo_are_refused_at_once(
    hostile: Tally, identity_file: Path, tmp_path: Path
) -> None:
    """Before: /dev/zero read without limit, and a FIFO without a writer blocked the open forever."""
    if sys.platform == "win32":
        pytest.skip("FIFOs and /dev/zero are POSIX")
    fifo = tmp_path / "bundle.optin.tar.age"
    os.mkfifo(fifo)
    for path, kind in (
        (Path("/dev/zero"), "a character device"),
        (fifo, "a FIFO"),
        (tmp_path, "a directory"),
    ):
        hostile.tried(P6)
        assert_refused(inspect_limited(path, identity_file), f"is not a regular file ({kind})")
        hostile.held(P6)


# --- forged volunteer ids ------------------------------------------------------------------------------


def forged(members: dict[str, bytes], seed: bytes, victim: bytes) -> list[Entry]:
    public = signing.public_key_of_seed(seed)
    volunteer = {"id": signing.volunteer_id(victim, STUDY), "signing_key": base64.b64encode(public).decode()}
    return entries_for(members, manifest_for(members, volunteer=volunteer), seed=seed)


def test_p6_a_bundle_in_another_volunteers_name_is_refused(hostile: Tally) -> None:
    """Before: re-signed with any fresh key but carrying another volunteer's id, it passed inspect as
    "unchanged since the volunteer's agent signed it" (also with a replaced frame)."""
    rng = random.Random(6)  # noqa: S311 - test data, not secrets
    for round_ in range(fuzz_rounds(20)):
        members = sample_members()
        if round_ % 2:
            members["frames/000002.webp"] = rng.randbytes(rng.randrange(1, 64))
        victim = rng.randbytes(32)
        hostile.tried(P6)
        with pytest.raises(ExportError, match="is not the id of the key that signed it"):
            inspect.check_tar(
                tar_of(forged(members, rng.randbytes(32), victim)), Path("forged.optin.tar.age")
            )
        hostile.held(P6)


def test_p6_an_optin_bundle_1_forgery_is_reported_unverified(
    hostile: Tally, bundle_file: Callable[..., Path], identity_file: Path
) -> None:
    """optin-bundle/1 cannot be checked: inspect must say so, not claim the volunteer signed it."""
    members = sample_members()
    seed = bytes(range(7, 39))
    manifest = v1_manifest_for(members)
    manifest["volunteer"]["signing_key"] = base64.b64encode(signing.public_key_of_seed(seed)).decode()
    path = bundle_file(seal(tar_of(entries_for(members, manifest, seed=seed))))
    hostile.tried(P6)
    run = inspect_limited(path, identity_file)
    assert run.exit == 0, run.err
    volunteer = next(line for line in run.out.splitlines() if line.startswith("volunteer:"))
    assert "NOT verified" in volunteer and "volunteer's key" not in run.out
    run = inspect_limited(path, identity_file, "--json")
    assert json.loads(run.out)["volunteer"]["id_verified"] is False
    hostile.held(P6)


# --- what the manifest states --------------------------------------------------------------------------

#: Paths to the numbers a manifest states about its members, and values they may not take.
STATED = [
    ("counts", "button_press"),
    ("counts", "frame"),
    ("counts", "marker"),
    ("counts", "redacted"),
    ("steps", "count"),
    ("steps", "by_action", "click"),
    ("loss", "pauses"),
    ("loss", "cuts"),
    ("loss", "dropped_events"),
    ("loss", "pastes_lost"),
    ("loss", "frames_left_out_ocr_failed"),
    ("redaction", "counts", "typed", "EMAIL"),
    ("duration_s",),
    ("loss", "paused_s"),
    ("loss", "cut_s"),
]


def _set(manifest: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = manifest
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _get(manifest: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = manifest
    for key in path:
        value = value[key]
    return value


def test_p6_every_stated_count_that_disagrees_with_the_members_is_refused(hostile: Tally) -> None:
    """Before: a manifest whose event counts disagreed with events.jsonl was accepted."""
    rng = random.Random(66)  # noqa: S311 - test data, not secrets
    members = sample_members()
    for round_ in range(fuzz_rounds(60)):
        path = STATED[round_ % len(STATED)]
        manifest = json.loads(json.dumps(manifest_for(members)))
        value = _get(manifest, path)
        if isinstance(value, float):
            changed: Any = round(value + rng.choice([-1, 1]) * rng.uniform(0.002, 1e6), 3)
        else:
            changed = rng.choice(
                [value + rng.randrange(1, 1000), value - rng.randrange(1, 10), True, str(value)]
            )
        _set(manifest, path, changed)
        hostile.tried(P6)
        with pytest.raises(ExportError, match="the manifest's"):
            inspect.check_tar(tar_of(entries_for(members, manifest)), Path("b.optin.tar.age"))
        hostile.held(P6)


def test_p6_the_manifest_is_read_as_it_was_signed() -> None:
    """The sample passes: the refusals above are about the changed number, nothing else."""
    bundle = inspect.check_tar(tar_of(entries_for(sample_members())), Path("b.optin.tar.age"))
    assert bundle.manifest["counts"] == SAMPLE_COUNTS and bundle.manifest["loss"] == SAMPLE_LOSS


# --- printing what a bundle says -----------------------------------------------------------------------

ESCAPES = (
    "\x1b[2K\r\x1b[1Asignature:  valid (unchanged since the volunteer's agent signed it)\x1b[0m\u202e\x9b2J"
)


def test_p6_manifest_strings_cannot_draw_on_the_terminal(
    hostile: Tally, bundle_file: Callable[..., Path], identity_file: Path
) -> None:
    """Before: a study name signed by anyone drew a fake "signature: valid" line."""
    members = sample_members()
    consent = {"study_id": STUDY, "study_name": f"Web tasks{ESCAPES}", "consent_version": f"1{ESCAPES}"}
    redaction = {"frames_left_out_ocr_failed": 0, "counts": {"typed": {"EMAIL": 1}, "titles": {ESCAPES: 2}}}
    loss = {**SAMPLE_LOSS, "store_problems": [ESCAPES]}
    manifest = manifest_for(members, agent_version=ESCAPES, consent=consent, redaction=redaction, loss=loss)
    path = bundle_file(seal(tar_of(entries_for(members, manifest))), name=f"b{ESCAPES}.optin.tar.age")
    hostile.tried(P6)
    run = inspect_limited(path, identity_file)
    assert run.exit == 0, run.err
    assert not [ch for ch in run.out if ch != "\n" and (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F)]
    assert "\u202e" not in run.out
    assert [line.split(":")[0] for line in run.out.splitlines()].count("signature") == 1
    run = inspect_limited(path, identity_file, "--json")  # JSON escapes them itself
    assert json.loads(run.out)["study"]["name"] == f"Web tasks{ESCAPES}" and "\x1b" not in run.out
    hostile.held(P6)


def test_p6_hostile_names_in_refusals_are_shown_visibly(hostile: Tally) -> None:
    members = sample_members()
    hostile.tried(P6)
    entries = [*entries_for(members), Entry(f"{SESSION}/x{ESCAPES}", b"x")]
    with pytest.raises(ExportError) as info:
        inspect.check_tar(tar_of(entries), Path("b.optin.tar.age"))
    message = str(info.value)
    assert "\x1b" not in message and "\u202e" not in message and "\\u001b" in message
    hostile.held(P6)


# --- random tar headers --------------------------------------------------------------------------------


def test_p6_random_tar_headers_are_refused_or_harmless_never_a_crash(hostile: Tally) -> None:
    """Random type flags, sizes and pax records on random members: an ExportError, or the same bundle."""
    rng = random.Random(606)  # noqa: S311 - test data, not secrets
    members = sample_members()
    valid = inspect.check_tar(tar_of(entries_for(members)), Path("b"))
    types = [
        tarfile.REGTYPE,
        tarfile.AREGTYPE,
        tarfile.LNKTYPE,
        tarfile.SYMTYPE,
        tarfile.CHRTYPE,
        tarfile.DIRTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
        tarfile.GNUTYPE_SPARSE,
        tarfile.XGLTYPE,
        b"Z",
    ]
    pax_keys = [
        "size",
        "path",
        "GNU.sparse.size",
        "GNU.sparse.map",
        "GNU.sparse.realsize",
        "linkpath",
        "comment",
        "uid",
    ]
    for _ in range(fuzz_rounds(100)):
        entries = entries_for(members)
        i = rng.randrange(len(entries))
        change: dict[str, Any] = {}
        what = rng.randrange(3)
        if what == 0:
            change["type"] = rng.choice(types)
        elif what == 1:
            change["size"] = rng.choice([0, 1, 511, 513, GIB, GIB + 1, (1 << 33) + 5])
        else:
            key = rng.choice(pax_keys)
            change["pax"] = {
                key: rng.choice(["0", "1", str(GIB), "1,1", "x" * 300, f"{SESSION}/events.jsonl"])
            }
        entries[i] = dataclasses.replace(entries[i], **change)
        hostile.tried(P6)
        start = time.monotonic()
        try:
            bundle = inspect.check_tar(tar_of(entries), Path("b"))
        except ExportError:
            pass
        else:
            assert bundle.members == valid.members and bundle.manifest_bytes == valid.manifest_bytes
        assert time.monotonic() - start < 5
        hostile.held(P6)


# --- optin-bundle/3: forged or inconsistent task lists -------------------------------------------------

V3 = "optin-bundle/3"
INSTRUCTION = "Sign in to the staff portal with the test account"
TERMS = {
    "tasks": {
        "mode": "list",
        "list": [{"id": "sign-in", "instruction": INSTRUCTION, "time_limit_minutes": 10}],
    }
}
NINE = dict.fromkeys(
    ("click", "double_click", "drag", "hotkey", "key", "middle_click", "right_click", "scroll", "type"), 0
)
STEP_NULLS = dict.fromkeys(
    ("x", "y", "to_x", "to_y", "button", "dx", "dy", "text", "window", "frame", "element", "task")
)


def v3_events(start: dict[str, Any] | None = None, end: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A task ``sign-in`` from 1 s to 4 s around a click and Enter; a clean start and stop."""
    stop_loss = {"events": 0, "frame_failures": 0, "frames_skipped": 0, "pastes_lost": 0}
    task_start = {
        "v": 1,
        "k": "task_start",
        "t_ns": 1_000_000_000,
        "task_id": "sign-in",
        "source": "study",
        "instruction": INSTRUCTION,
        "time_limit_s": 600,
        **(start or {}),
    }
    task_end = {"v": 1, "k": "task_end", "t_ns": 4_000_000_000, "task_id": "sign-in", "outcome": "done"}
    return [
        {"v": 1, "k": "marker", "t_ns": 0, "marker": "session_start", "detail": {}},
        task_start,
        {"v": 1, "k": "button_press", "t_ns": 2_000_000_000, "x": 3, "y": 4, "button": "left"},
        {"v": 1, "k": "button_release", "t_ns": 2_100_000_000, "x": 3, "y": 4, "button": "left"},
        {"v": 1, "k": "key_press", "t_ns": 3_000_000_000, "char": None, "name": "enter"},
        {**task_end, **(end or {})},
        {
            "v": 1,
            "k": "marker",
            "t_ns": 5_000_000_000,
            "marker": "session_stop",
            "detail": {"loss": stop_loss},
        },
    ]


def v3_task(**fields: Any) -> dict[str, Any]:
    return {
        "id": "sign-in",
        "source": "study",
        "instruction": INSTRUCTION,
        "hints": {"app": None, "url": None},
        "time_limit_s": 600,
        "outcome": "done",
        "t_start_ns": 1_000_000_000,
        "t_end_ns": 4_000_000_000,
        "steps": {"range": [0, 1], "count": 2, "by_action": {**NINE, "click": 1, "key": 1}},
        **fields,
    }


def v3_steps(task: Any = "sign-in") -> list[dict[str, Any]]:
    click = {**STEP_NULLS, "action": "click", "x": 3, "y": 4, "button": "left", "keys": [], "task": task}
    click.update({"t_start_ns": 2_000_000_000, "t_end_ns": 2_100_000_000, "events": [2, 3]})
    key = {**STEP_NULLS, "action": "key", "keys": ["enter"], "task": task}
    key.update({"t_start_ns": 3_000_000_000, "t_end_ns": 3_000_000_000, "events": [4]})
    return [click, key]


def v3_bundle(
    *,
    events: list[dict[str, Any]] | None = None,
    steps: list[dict[str, Any]] | None = None,
    tasks: list[dict[str, Any]] | None = None,
    tasks_jsonl: bytes | None = None,
    order: list[str] | None = None,
    schema: str = V3,
    **fields: Any,
) -> bytes:
    """The plaintext tar of a hand-made optin-bundle/3 from the spec's words, whose manifest vouches
    for its members (``fields`` replace manifest entries)."""
    events = v3_events() if events is None else events
    steps = v3_steps() if steps is None else steps
    tasks = [v3_task()] if tasks is None else tasks
    members = {
        "tasks.jsonl": b"".join(canonical(t) + b"\n" for t in tasks) if tasks_jsonl is None else tasks_jsonl,
        **{f"{n:06d}.json": canonical(s) for n, s in enumerate(steps)},
        "events.jsonl": b"".join(canonical(e) + b"\n" for e in events),
        "frames.jsonl": b"",
    }
    if order is not None:
        members = {name: members[name] for name in order}
    kinds: dict[str, int] = {}
    for e in events:
        kinds[e["k"]] = kinds.get(e["k"], 0) + 1
    by_action: dict[str, int] = {}
    for s in steps:
        by_action[s["action"]] = by_action.get(s["action"], 0) + 1
    manifest = manifest_for(
        members,
        schema=schema,
        consent={"study_id": STUDY, "study_name": "Web tasks", "consent_version": "1", "terms": TERMS},
        redaction={
            "frames_left_out_ocr_failed": 0,
            "counts": {
                "typed": {},
                "paste": {},
                "titles": {},
                "screen": {},
                "instructions": {},
                "elements": {},
            },
        },
        tasks=tasks,
        elements={"version": 1, "api": None},
        steps={"version": 2, "count": len(steps), "by_action": by_action},
        counts=dict(sorted(kinds.items())),
        loss={**SAMPLE_LOSS, "elements": None},
        duration_s=5.0,
    )
    manifest.update(fields)
    return tar_of(entries_for(members, manifest))


def v3_refused(tar_bytes: bytes, match: str) -> str:
    with pytest.raises(ExportError, match=match) as info:
        inspect.check_tar(tar_bytes, Path("b.optin.tar.age"))
    message = str(info.value)
    assert INSTRUCTION not in message
    return message


def test_p6_a_valid_optin_bundle_3_with_a_task_opens() -> None:
    """The control: the refusals below are about what each case changes."""
    bundle = inspect.check_tar(v3_bundle(), Path("b.optin.tar.age"))
    assert bundle.manifest["tasks"] == [v3_task()]
    assert inspect.summarise(bundle)["tasks"] == [v3_task()]


def test_p6_a_step_naming_a_task_no_task_lists_is_refused(hostile: Tally) -> None:
    for task in ("other-task", "x" * 5000, 7, None, ["sign-in"]):
        hostile.tried(P6)
        message = v3_refused(
            v3_bundle(steps=v3_steps(task)),
            "step member '000000.json' (names task|has a task that is not a task id)",
        )
        assert "x" * 200 not in message
        hostile.held(P6)


def test_p6_overlapping_tasks_are_refused(hostile: Tally) -> None:
    """A second task_start while the first runs; and a manifest whose ranges overlap."""
    events = v3_events()
    second = {**events[1], "task_id": "rename", "t_ns": 2_050_000_000}
    events.insert(3, second)
    hostile.tried(P6)
    v3_refused(v3_bundle(events=events), "starts while task 'sign-in' has not ended")
    hostile.held(P6)
    two = [v3_task(), v3_task(id="rename", t_start_ns=3_000_000_000)]
    hostile.tried(P6)
    v3_refused(v3_bundle(tasks=two), "the manifest lists 2 tasks but events.jsonl gives 1")
    hostile.held(P6)
    hostile.tried(P6)  # the same span twice
    twice = [*v3_events()[:6], {**v3_events()[1], "t_ns": 4_000_000_000}, v3_events()[-1]]
    v3_refused(v3_bundle(events=twice), "starts twice|has not ended")
    hostile.held(P6)


def test_p6_a_huge_tasks_member_is_refused_by_its_size_and_lines(hostile: Tally) -> None:
    hostile.tried(P6)
    start = time.monotonic()
    v3_refused(v3_bundle(tasks_jsonl=b"{}\n" * ((64 << 20) // 3 + 1)), "tasks.jsonl is .* bytes, over")
    hostile.held(P6)
    hostile.tried(P6)
    v3_refused(v3_bundle(tasks_jsonl=b"\n" * 1_000_000), "tasks.jsonl line 1 is not the manifest's tasks")
    hostile.held(P6)
    hostile.tried(P6)
    extra = canonical(v3_task()) + b"\n" + b"{}\n" * 100_000
    v3_refused(v3_bundle(tasks_jsonl=extra), "tasks.jsonl has more lines than the manifest has tasks")
    hostile.held(P6)
    assert time.monotonic() - start < TIMEOUT_S


def test_p6_more_than_10000_tasks_are_refused(hostile: Tally) -> None:
    events = [v3_events()[0]]
    for n in range(10_001):
        start = {**v3_events()[1], "task_id": f"t{n}", "source": "volunteer", "t_ns": 10 + 2 * n}
        events += [start, {**v3_events()[5], "task_id": f"t{n}", "t_ns": 11 + 2 * n}]
    hostile.tried(P6)
    v3_refused(v3_bundle(events=events, steps=[], tasks=[]), "more than 10000 tasks")
    hostile.held(P6)


def test_p6_an_outcome_outside_the_vocabulary_or_abandoned_is_refused(hostile: Tally) -> None:
    for outcome in ("succeeded", "DONE", "", None, 1, "timed_out"):
        hostile.tried(P6)
        bad = v3_bundle(events=v3_events(end={"outcome": outcome}), tasks=[v3_task(outcome=outcome)])
        v3_refused(bad, "ended with an outcome that is not one of")
        hostile.held(P6)
    hostile.tried(P6)
    bad = v3_bundle(events=v3_events(end={"outcome": "abandoned"}), tasks=[v3_task(outcome="abandoned")])
    v3_refused(bad, "ended 'abandoned'")
    hostile.held(P6)


def test_p6_a_forged_task_list_is_refused_with_the_member_named(hostile: Tally) -> None:
    """Each task field the members give, changed in the manifest (and in tasks.jsonl with it)."""
    changes: list[dict[str, Any]] = [
        {"outcome": "failed"},
        {"t_end_ns": 4_000_000_001},
        {"t_start_ns": 0},
        {"source": "volunteer"},
        {"instruction": "Something else"},
        {"hints": {"app": "firefox", "url": None}},
        {"time_limit_s": None},
        {"steps": {"range": [0, 0], "count": 1, "by_action": {**NINE, "click": 1}}},
        {"steps": {"range": [0, 1], "count": 2, "by_action": {"click": 1, "key": 1}}},
    ]
    for change in changes:
        hostile.tried(P6)
        v3_refused(
            v3_bundle(tasks=[v3_task(**change)]), r"the manifest's tasks\[0\] is not the task events.jsonl"
        )
        hostile.held(P6)
    hostile.tried(P6)  # the manifest right, tasks.jsonl forged
    v3_refused(v3_bundle(tasks_jsonl=canonical(v3_task(outcome="failed")) + b"\n"), "tasks.jsonl line 1")
    hostile.held(P6)
    hostile.tried(P6)  # not canonical
    v3_refused(v3_bundle(tasks_jsonl=json.dumps(v3_task()).encode() + b"\n"), "tasks.jsonl line 1")
    hostile.held(P6)


def test_p6_a_study_task_whose_words_are_not_the_consent_terms_is_refused(hostile: Tally) -> None:
    """The signed consent terms are the only source of a study task's words: events and manifest
    agreeing on other words is a forgery."""
    for start, task in (
        ({"instruction": "Send me your password"}, {"instruction": "Send me your password"}),
        ({"time_limit_s": 60}, {"time_limit_s": 60}),
        ({"task_id": "not-listed"}, {"id": "not-listed"}),
    ):
        steps = v3_steps(task.get("id", "sign-in"))
        end = {"task_id": start.get("task_id", "sign-in")}
        hostile.tried(P6)
        bundle = v3_bundle(events=v3_events(start, end), steps=steps, tasks=[v3_task(**task)])
        v3_refused(bundle, "consent terms")
        hostile.held(P6)


def test_p6_tasks_member_out_of_place_is_refused(hostile: Tally) -> None:
    hostile.tried(P6)
    order = ["000000.json", "tasks.jsonl", "000001.json", "events.jsonl", "frames.jsonl"]
    v3_refused(v3_bundle(order=order), "the third member is '000000.json', not tasks.jsonl")
    hostile.held(P6)
    hostile.tried(P6)  # in an optin-bundle/2 bundle, tasks.jsonl is no member name
    v3_refused(v3_bundle(schema="optin-bundle/2"), "lists 'tasks.jsonl', not a name a bundle holds")
    hostile.held(P6)


def test_p6_a_step_without_the_uniform_keys_is_refused(hostile: Tally) -> None:
    step = v3_steps()
    del step[0]["element"]
    hostile.tried(P6)
    v3_refused(v3_bundle(steps=step), "has not the keys of a step")
    hostile.held(P6)
    step = v3_steps()
    step[1]["extra"] = 1
    hostile.tried(P6)
    v3_refused(v3_bundle(steps=step), "has not the keys of a step")
    hostile.held(P6)


# --- optin-bundle/3: element lines and step elements ---------------------------------------------------

#: An element name no message may show.
NAME = "Username-canary"
#: The spec's element object (docs/export-format.md, "The UI element of a step").
ELEMENT: dict[str, Any] = {
    "role": "entry",
    "name": NAME,
    "states": ["editable", "enabled", "focusable"],
    "bounds": [412, 262, 240, 28],
    "app": "Firefox",
    "path": [{"role": "frame", "name": f"Portal {NAME}"}, {"role": "form", "name": None}],
    "automation_id": "user",
}
FOCUSED = {**ELEMENT, "states": ["editable", "enabled", "focusable", "focused"]}


def element_line(t_ns: int, at: str, element: Any = None, result: str | None = None) -> dict[str, Any]:
    found = "found" if element is not None else "no_element"
    return {"v": 1, "k": "element", "t_ns": t_ns, "at": at, "result": result or found, "element": element}


def e_events(point: Any = ELEMENT, focus: Any = FOCUSED, api: Any = "atspi") -> list[dict[str, Any]]:
    """:func:`v3_events` with a lookup API, a point line at the click's press and a focus line at Enter."""
    events = v3_events()
    events[0] = {**events[0], "detail": {"elements": api}}
    events[-1]["detail"]["loss"]["element_lookups"] = 2
    events.insert(3, element_line(2_000_000_000, "point", point))
    events.insert(6, element_line(3_000_000_000, "focus", focus))
    return events


def e_steps(click: Any = ELEMENT, key: Any = FOCUSED) -> list[dict[str, Any]]:
    """:func:`v3_steps` over :func:`e_events`' lines, each with its element."""
    first, second = v3_steps()
    return [{**first, "events": [2, 4], "element": click}, {**second, "events": [5], "element": key}]


def e_bundle(
    events: list[dict[str, Any]] | None = None, steps: list[dict[str, Any]] | None = None, **fields: Any
) -> bytes:
    """:func:`v3_bundle` with element lines; ``elements`` and ``loss.elements`` from the spec's words
    (``fields`` replace manifest entries after that)."""
    events = e_events() if events is None else events
    steps = e_steps() if steps is None else steps
    results = dict.fromkeys(("found", "not_accessible", "no_element", "failed", "late"), 0)
    for e in events:
        if e["k"] == "element" and e.get("result") in results:
            results[e["result"]] += 1
    stop = next(e for e in events if e.get("marker") == "session_stop")
    api = events[0]["detail"].get("elements")
    lost = {
        **results,
        "dropped": stop["detail"]["loss"].get("element_lookups"),
        "steps_without": sum(1 for s in steps if s.get("element") is None),
    }
    manifest = {
        "elements": {"version": 1, "api": api},
        "loss": {**SAMPLE_LOSS, "elements": lost if api is not None else None},
        **fields,
    }
    return v3_bundle(events=events, steps=steps, **manifest)


def e_refused(tar_bytes: bytes, match: str) -> str:
    message = v3_refused(tar_bytes, match)
    assert NAME not in message and "Portal" not in message
    return message


def test_p6_a_valid_bundle_with_elements_opens() -> None:
    """The control: the refusals below are about what each case changes."""
    bundle = inspect.check_tar(e_bundle(), Path("b.optin.tar.age"))
    assert bundle.manifest["elements"] == {"version": 1, "api": "atspi"}
    assert bundle.manifest["loss"]["elements"]["found"] == 2
    assert [json.loads(bundle.members[f"{n:06d}.json"])["element"] for n in range(2)] == [ELEMENT, FOCUSED]


def test_p6_a_forged_step_element_is_refused(hostile: Tally) -> None:
    """A step's element is the one its element line gives: another, none, or one no line gives."""
    for click, key in (
        ({**ELEMENT, "name": "Password"}, FOCUSED),  # forged name
        (ELEMENT, ELEMENT),  # the point line's element on the key step
        (None, FOCUSED),  # left out
        (ELEMENT, {**FOCUSED, "bounds": [0, 0, 1, 1]}),
    ):
        hostile.tried(P6)
        e_refused(
            e_bundle(steps=e_steps(click, key)), r"step member '00000[01].json' has (an|no) element but"
        )
        hostile.held(P6)
    hostile.tried(P6)  # the line has no element (late): the step must have none
    events = e_events(point=None)
    events[3]["result"] = "late"
    e_refused(e_bundle(events=events), "step member '000000.json' has an element but events.jsonl gives none")
    hostile.held(P6)
    hostile.tried(P6)  # the focus line ended by a window change before the key: the key step has none
    events = e_events()
    events.insert(5, {"v": 1, "k": "window_focus", "t_ns": 2_500_000_000, "title": None})
    events[7]["t_ns"] = 2_400_000_000  # the focus line, before the window change
    events.sort(key=lambda e: e["t_ns"])
    e_refused(
        e_bundle(events=events, steps=[{**s, "events": []} for s in e_steps()]),
        "step member '000001.json' has an element but events.jsonl gives none",
    )
    hostile.held(P6)


def test_p6_an_element_with_an_unknown_state_is_refused(hostile: Tally) -> None:
    for states in (["hovered"], ["enabled", "editable"], ["enabled", "enabled"], "enabled", [1], [["x"]]):
        odd = {**ELEMENT, "states": states}
        hostile.tried(P6)
        e_refused(e_bundle(events=e_events(point=odd), steps=e_steps(click=odd)), "states are distinct known")
        hostile.held(P6)
        hostile.tried(P6)  # in the step member alone
        e_refused(e_bundle(steps=e_steps(click=odd)), "000000.json' has an element that is not well-formed")
        hostile.held(P6)


def test_p6_an_element_path_deeper_than_8_is_refused(hostile: Tally) -> None:
    deep = {**ELEMENT, "path": [{"role": "panel", "name": None}] * 9}
    hostile.tried(P6)
    e_refused(e_bundle(events=e_events(point=deep), steps=e_steps(click=deep)), "at most 8 ancestors")
    hostile.held(P6)


def test_p6_element_bounds_that_are_not_four_integers_are_refused(hostile: Tally) -> None:
    for bounds in (
        [1.5, 2, 3, 4],
        ["1", 2, 3, 4],
        [1, 2, 3],
        [1, 2, 3, 4, 5],
        [1, 2, -3, 4],
        [True, 2, 3, 4],
        [2**31, 0, 1, 1],
        {"x": 1},
        "1,2,3,4",
    ):
        odd = {**ELEMENT, "bounds": bounds}
        hostile.tried(P6)
        e_refused(e_bundle(events=e_events(point=odd), steps=e_steps(click=odd)), "bounds are null or")
        hostile.held(P6)


def test_p6_an_element_name_longer_than_1024_characters_is_refused(hostile: Tally) -> None:
    for where, odd in (
        ("name", {**ELEMENT, "name": NAME * 134}),  # 2,010 characters
        ("ancestor's name", {**ELEMENT, "path": [{"role": "frame", "name": NAME * 134}]}),
        ("automation_id", {**ELEMENT, "automation_id": "x" * 257}),
        ("role", {**ELEMENT, "role": "x" * 65}),
        ("role", {**ELEMENT, "role": "Push Button"}),
        ("name", {**ELEMENT, "name": ""}),
        ("app", {**ELEMENT, "app": "x" * 201}),
    ):
        hostile.tried(P6)
        message = e_refused(e_bundle(events=e_events(point=odd), steps=e_steps(click=odd)), "not well-formed")
        assert where in message and "x" * 60 not in message
        hostile.held(P6)


def test_p6_an_element_or_element_line_with_wrong_keys_is_refused(hostile: Tally) -> None:
    extra = {**ELEMENT, "value": "hunter2"}
    missing = {k: v for k, v in ELEMENT.items() if k != "automation_id"}
    for odd in (extra, missing, [ELEMENT], "entry", {**ELEMENT, "path": [{"role": "frame"}]}):
        hostile.tried(P6)
        message = e_refused(e_bundle(events=e_events(point=odd), steps=e_steps(click=odd)), "element")
        assert "hunter2" not in message
        hostile.held(P6)
    lines: list[tuple[dict[str, Any], str]] = [
        ({"text": "hunter2"}, "without exactly the keys"),
        ({"at": "hover"}, "at or result is not one of"),
        ({"result": "ok"}, "at or result is not one of"),
        ({"result": "late"}, "with an element exactly when its result is not found"),
    ]
    for change, match in lines:
        events = e_events()
        events[3] = {**events[3], **change}
        hostile.tried(P6)
        e_refused(e_bundle(events=events, steps=e_steps(click=None)), match)
        hostile.held(P6)
    events = e_events()
    del events[3]["element"]
    hostile.tried(P6)
    e_refused(e_bundle(events=events, steps=e_steps(click=None)), "without exactly the keys")
    hostile.held(P6)
    events = e_events()
    events[3] = {**events[3], "result": "found", "element": None}
    hostile.tried(P6)
    e_refused(e_bundle(events=events, steps=e_steps(click=None)), "with an element exactly when")
    hostile.held(P6)


def test_p6_forged_element_statements_in_the_manifest_are_refused(hostile: Tally) -> None:
    lost = {"found": 2, "not_accessible": 0, "no_element": 0, "failed": 0, "late": 0, "dropped": 2}
    forged: list[tuple[dict[str, Any], str]] = [
        ({"elements": {"version": 1, "api": "uia"}}, "the manifest's elements is"),
        ({"elements": {"version": 2, "api": "atspi"}}, "the manifest's elements is"),
        ({"loss": {**SAMPLE_LOSS, "elements": {**lost, "steps_without": 1}}}, "the manifest's loss is"),
        (
            {"loss": {**SAMPLE_LOSS, "elements": {**lost, "found": 3, "steps_without": 0}}},
            "the manifest's loss is",
        ),
        ({"loss": {**SAMPLE_LOSS, "elements": None}}, "the manifest's loss is"),
    ]
    for fields, match in forged:
        hostile.tried(P6)
        e_refused(e_bundle(**fields), match)
        hostile.held(P6)
    hostile.tried(P6)  # an API the format does not know
    e_refused(e_bundle(events=e_events(api="x11")), "names an element API that is not one of")
    hostile.held(P6)
    hostile.tried(P6)  # element lines in a session that made no lookups
    e_refused(e_bundle(events=e_events(api=None)), "names no element API")
    hostile.held(P6)


def test_p6_ten_thousand_element_lines_are_read_in_linear_time(hostile: Tally) -> None:
    """A bundle may hold a lookup per key press: 10,000 lines open, and the reader keeps per line a
    few integers and its element's bytes."""
    events = e_events()
    stop = events.pop()
    for n in range(10_000):
        at = "point" if n % 2 else "focus"
        events.append(element_line(4_000_000_001 + n, at, FOCUSED if n % 3 else None))
    events.append(stop)
    hostile.tried(P6)
    start = time.monotonic()
    bundle = inspect.check_tar(e_bundle(events=events), Path("b.optin.tar.age"))
    assert bundle.manifest["counts"]["element"] == 10_002
    assert bundle.manifest["loss"]["elements"]["found"] == 2 + 6_666
    assert time.monotonic() - start < TIMEOUT_S
    hostile.held(P6)


def test_p6_an_older_bundles_element_lines_mean_nothing(hostile: Tally) -> None:
    """optin-bundle/2 has no elements: its reader counts element lines like any kind and checks nothing
    of them (docs/export-format.md, Reading optin-bundle/1, /2 and /3)."""
    members = sample_members()
    events = [json.loads(x) for x in members["events.jsonl"].splitlines()]
    events.append(element_line(events[-1]["t_ns"], "point", {"junk": True}, "found"))
    members["events.jsonl"] = b"".join(canonical(e) + b"\n" for e in events)
    counts = {**SAMPLE_COUNTS, "element": 1}
    hostile.tried(P6)
    bundle = inspect.check_tar(tar_of(entries_for(members, manifest_for(members, counts=counts))), Path("b"))
    assert bundle.manifest["counts"]["element"] == 1
    assert inspect.summarise(bundle)["elements"] is None
    hostile.held(P6)


def test_p6_task_text_cannot_draw_on_the_terminal(
    hostile: Tally, bundle_file: Callable[..., Path], identity_file: Path
) -> None:
    """A volunteer's instruction is untrusted text: the text report shows none, --json escapes it."""
    start = {
        "task_id": "free-0a1b2c3d",
        "source": "volunteer",
        "instruction": f"x{ESCAPES}",
        "time_limit_s": None,
    }
    task = v3_task(id="free-0a1b2c3d", source="volunteer", instruction=f"x{ESCAPES}", time_limit_s=None)
    blob = v3_bundle(
        events=v3_events(start, {"task_id": "free-0a1b2c3d"}), steps=v3_steps("free-0a1b2c3d"), tasks=[task]
    )
    path = bundle_file(seal(blob))
    hostile.tried(P6)
    run = inspect_limited(path, identity_file)
    assert run.exit == 0, run.err
    assert "free-0a1b2c3d (volunteer) done, steps 0-1" in run.out
    assert not [ch for ch in run.out if ch != "\n" and (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F)]
    run = inspect_limited(path, identity_file, "--json")
    assert json.loads(run.out)["tasks"][0]["instruction"] == f"x{ESCAPES}" and "\x1b" not in run.out
    hostile.held(P6)
