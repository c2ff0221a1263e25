"""Every kind of file optin keeps, damaged: flipped, truncated, swapped, oversized, nested, not UTF-8.

A real store is built once per run (the fake backend records two sessions, both are approved and
exported, the volunteer excludes an app and pauses, a running agent's ``status.json`` is kept),
with a second store beside it (another volunteer, another study key, fewer scopes, a timed pause)
to swap files from.  :func:`test_every_kind_of_file_optin_keeps_is_covered` lists the store and
fails when a file kind appears that :data:`KINDS` does not know, so a new kind gets its cases.

Each case copies the store, damages one file and runs what the volunteer would run, in process
(``cli.main``, under a deadline): ``optin sessions`` (text and ``--json``), ``verify``, ``status``,
``consent show``, ``export A --out DIR``, ``export A --approve --out DIR``, then starts a
:class:`~agent.control.Recorder` on the fake backend (resumed when it starts paused, except in the
pause cases), types a key in an ordinary window and one in the excluded app, and stops.

What holds, for every case: no exception leaves ``cli.main`` and no traceback is printed; exit
codes are 0, 1 or 2 (``status``: 0, 1, or 3 for "not running"); an error on stderr names the
damaged file (or, for an approval, the session) and says the fix; ``verify``'s report names the
file.  Then, per kind:

* segment (authenticated): ``verify`` exits 1 naming the segment, no export writes a bundle, and
  starting the recorder does not make the damaged session verify (P9, P6);
* ``meta.json`` (not authenticated): ``verify`` exits 0 only if the state and the counts it
  compares are what the segments hold (a swapped file never passes with other counts), and
  crash recovery at the recorder's start leaves every event of the session readable (P9);
* ``review.json``: ``export`` without ``--approve`` writes a bundle exactly when the approval
  still carries the session's fingerprint and the policy's hash, ``sessions`` says "approved"
  only then (P6);
* the consent receipt: consent is GIVEN, the recorder records and the export runs only when
  every field that binds the study (id, version, text and terms hashes, terms) is intact and the
  scopes are a subset of those agreed; ``consent show``, the recorder and export agree (P1);
* the installed study file: the same, with the study parsing to what was agreed to (P1);
* the exclusions: the recorder refuses, naming the file and the fix, or the excluded app's key
  is not recorded (P4, fail closed);
* the pause: the recorder refuses or starts paused, and records no key (P3, fail closed);
* ``status.json``: ``optin status`` answers (0, 1 or 3); nothing else changes;
* the recipient and the identity: recording refuses, or what it records opens with the
  volunteer's own identity; ``verify`` and ``export`` refuse a damaged identity (P5).

A case that breaks a promise fails, and so does a refusal that names no fix.  The eight bugs this
suite found when it was written (deeply nested meta.json, review.json and status.json; review.json
"exports" of another type; status.json that is not an object or whose pid no C int holds; a
pause.json whose numbers make no sense; an exclusions.json from another store) and five refusals
without a fix were mended in the product, not listed here.

The default run tries 3 random bit flips and 3 re-typed JSON objects per kind besides the fixed
damages (about 130 cases, 15 s); ``OPTIN_FUZZ_ROUNDS`` (``make fuzz``) gives a tenth of its rounds
to each, since every case runs seven commands and a recorder.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

from agent import cli, consent, exclusions, pausing
from agent.backends.fake import FakeBackend
from agent.control import Recorder
from agent.deny_rules import DenyRule
from agent.errors import OptinError, StoreError
from agent.events import KeyPress, KeyRelease, PointerMove, now_ns
from agent.paths import Dirs, dirs
from agent.store import keyfile, keys
from agent.store.reader import read_session
from agent.study import demo_study_toml, install_study, installed_study
from tests.conftest import FAST_SCRYPT_LOG_N, TEST_PASSPHRASE
from tests.hostile.conftest import Tally, fuzz_rounds
from tests.hostile.test_store_symlinks import deadline

#: Seed of the flips, the re-typed fields and the garbage; a failure names its case.
SEED = 141_010
#: The volunteer's excluded application, and another volunteer's.
EXCLUDED, OTHERS_EXCLUDED = "Vault", "OtherVault"
#: The keys the recorder check types: one in an ordinary window, one in the excluded app.
ORDINARY_KEY, EXCLUDED_KEY = "n", "v"


# --- the file kinds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of file optin keeps: where it is, the promise it guards, what names it in messages."""

    pattern: str  # regular expression over the path relative to OPTIN_HOME
    target: str  # the file of this kind the cases damage; {a} is session A
    promise: str
    names: tuple[str, ...]  # a refusal must name one of these (the file, or the session: {a})
    per_session: bool = False
    json: bool = False


_SID = r"\d{8}T\d{6}Z-[0-9a-f]{8}"
KINDS: dict[str, Kind] = {
    "segment": Kind(
        rf"data/sessions/{_SID}/\d{{6}}\.seg",
        "data/sessions/{a}/000000.seg",
        "P9 segments",
        ("000000.seg", "{a}"),
        per_session=True,
    ),
    "meta.json": Kind(
        rf"data/sessions/{_SID}/meta\.json",
        "data/sessions/{a}/meta.json",
        "P9 meta.json",
        ("meta.json",),
        per_session=True,
        json=True,
    ),
    "review.json": Kind(
        rf"data/sessions/{_SID}/review\.json",
        "data/sessions/{a}/review.json",
        "P6 review approval",
        ("review.json", "{a}"),
        per_session=True,
        json=True,
    ),
    "consent receipt": Kind(
        r"config/consent\.json",
        "config/consent.json",
        "P1 consent receipt",
        ("consent.json", "consent"),
        json=True,
    ),
    "study file": Kind(
        r"config/study\.toml",
        "config/study.toml",
        "P1 installed study",
        (
            "study.toml",
            "the study has changed since you agreed",
            "the consent text has changed since you agreed",
        ),
    ),
    "exclusions": Kind(
        r"config/exclusions\.json", "config/exclusions.json", "P4 exclusions", ("exclusions.json",), json=True
    ),
    "pause": Kind(r"config/pause\.json", "config/pause.json", "P3 pause file", ("pause.json",), json=True),
    "status": Kind(r"run/status\.json", "run/status.json", "P9 status file", ("status.json",), json=True),
    "recipient": Kind(r"data/keys/recipient", "data/keys/recipient", "P5 recipient", ("recipient",)),
    "identity": Kind(r"data/keys/identity", "data/keys/identity", "P5 identity", ("identity",)),
    "delivery": Kind(
        rf"data/exports/{_SID}\.json",
        "data/exports/{a}.json",
        "P7 delivery records",
        ("{a}.json", "{a}"),
        per_session=True,
        json=True,
    ),
}


#: JSON nested deeper than any parser's recursion limit.
NESTED = b"[" * 100_000 + b"]" * 100_000

#: What a message that says the fix looks like.
FIX = re.compile(r"\bfix\b|run `optin |restore .* from your backup|did you mean", re.IGNORECASE)


# --- the stores -------------------------------------------------------------------------------------


@dataclass
class Store:
    home: Path
    sessions: list[str]
    identity: bytes  # the raw private key (to read what a case's recorder wrote)
    events: dict[str, int] = field(default_factory=dict)  # events per session


def _record(d: Dirs, study: Any, presses: int, *, screen: bool) -> tuple[str, bytes]:
    """One session on the fake backend; the running agent's status.json, as it was while recording."""
    backend = FakeBackend()
    rec = Recorder(d, backend, study)
    rec.start()
    fake = backend.last_input
    assert fake is not None
    end = time.monotonic() + 10
    while screen and rec.counters.frames < 1:  # the start frame
        assert time.monotonic() < end, "no start frame"
        time.sleep(0.005)
    for i in range(presses):
        fake.emit(PointerMove(now_ns(), i, i))
        fake.emit(KeyPress(now_ns(), "a", None, 97, ()))
        fake.emit(KeyRelease(now_ns(), "a", None, 97, ()))
    status = (d.runtime / "status.json").read_bytes()
    rec.stop()
    return str(rec.session_id), status


def _build(home: Path, tmp: Path, *, scopes: list[str] | None, rule: str, pause_s: float | None) -> Store:
    home.mkdir(mode=0o700)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTIN_HOME", str(home))
        d = dirs()
        study_file = tmp / f"{home.name}-study.toml"
        recipient = str(x25519.Identity.generate().to_public())  # each store its own study key
        study_file.write_text(demo_study_toml(recipient) + '\n[redaction]\nocr = "off"\n')
        study = install_study(d, study_file)
        consent.grant(d, study, study.terms_sha256, scopes)
        keys.init_keys(d)
        sids, status = [], b""
        for presses in (3, 7) if scopes is None else (5,):
            sid, status = _record(d, study, presses, screen=scopes is None)
            sids.append(sid)
        for sid in sids:
            assert cli.main(["export", sid, "--approve", "--out", str(tmp / f"{home.name}-out")]) == 0
        exclusions.add(d, DenyRule("mine", app_class=rule))
        now = time.time()
        pausing.save(d, pausing.VolunteerPause(now, None if pause_s is None else now + pause_s))
        status_path = d.runtime / "status.json"  # the agent's, as while it ran (its pid: this process)
        status_path.write_bytes(status)
        status_path.chmod(0o600)
        identity = keys.load_identity(d)
        counts = {sid: len(read_session(d, sid, identity).events) for sid in sids}
    return Store(home, sids, identity, counts)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Store]]:
    """(ours, another volunteer's): built once; every case works on a copy of ours."""
    import keyring
    from keyring.backends import fail

    tmp = tmp_path_factory.mktemp("store-files")
    passphrase = tmp / "passphrase.txt"
    passphrase.write_text(TEST_PASSPHRASE + "\n")
    passphrase.chmod(0o600)
    with pytest.MonkeyPatch.context() as mp:  # what tests/conftest.py does per test, for the module
        mp.setenv("OPTIN_PASSPHRASE_FILE", str(passphrase))
        mp.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
        mp.delenv("OPTIN_BACKEND", raising=False)
        keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]  # keyring's __init__ has no hints
        mp.setattr(keyfile, "SCRYPT_PARAMS", keyfile.ScryptParams(FAST_SCRYPT_LOG_N, 8, 1))
        ours = _build(tmp / "ours", tmp, scopes=None, rule=EXCLUDED, pause_s=None)
        other = _build(tmp / "other", tmp, scopes=["pointer"], rule=OTHERS_EXCLUDED, pause_s=3600)
        yield ours, other


# --- the damage -------------------------------------------------------------------------------------

#: Values a re-typed JSON field gets.
WRONG: list[Any] = [None, 0, -1, 2**70, 1e308, "", "x" * 70, [], {}, True, [1, 2], {"a": {"b": []}}]


def _cases() -> list[tuple[str, str]]:
    out = []
    for name, kind in KINDS.items():
        rounds = fuzz_rounds(30) // 10  # each round runs seven commands and a recorder: a tenth of the rounds
        damages = [f"flip {i}" for i in range(rounds)]
        damages += ["empty", "half", "one byte short", "swap: another store"]
        damages += ["swap: another session"] if kind.per_session else []
        damages += ["10 MB garbage", "nested JSON", "nested 500", "invalid UTF-8"]
        damages += [f"retyped {i}" for i in range(rounds)] if kind.json else []
        out += [(name, damage) for damage in damages]
    return out


def _damaged(kind: str, damage: str, ours: Store, other: Store) -> bytes:
    spec = KINDS[kind]
    a, b = ours.sessions
    good = (ours.home / spec.target.format(a=a)).read_bytes()
    rng = random.Random(f"{SEED}/{kind}/{damage}")  # noqa: S311 - reproducible test inputs
    if damage.startswith("flip "):
        bit = rng.randrange(len(good) * 8)
        out = bytearray(good)
        out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)
    if damage.startswith("retyped "):
        obj = json.loads(good)
        return json.dumps({k: rng.choice(WRONG) for k in obj}).encode()
    if damage == "swap: another store":
        return (other.home / spec.target.format(a=other.sessions[0])).read_bytes()
    if damage == "swap: another session":
        return (ours.home / spec.target.format(a=b)).read_bytes()
    damaged: dict[str, Callable[[], bytes]] = {
        "empty": lambda: b"",
        "half": lambda: good[: len(good) // 2],
        "one byte short": lambda: good[:-1],
        "10 MB garbage": lambda: rng.randbytes(10 << 20),
        "nested JSON": lambda: NESTED,
        "nested 500": lambda: b"[" * 500 + b"]" * 500,
        "invalid UTF-8": lambda: good[: len(good) // 2] + b"\xff\xfe\xc3" + good[len(good) // 2 :],
    }
    return damaged[damage]()


# --- running what the volunteer runs ----------------------------------------------------------------


@dataclass
class Ran:
    """One command's answer: exit code, output, and the traceback if an exception left cli.main."""

    argv: list[str]
    code: int | None
    out: str
    err: str
    crash: str = ""
    name: str = ""


def _where(exc: BaseException) -> str:
    """``Type at agent/x.py:N`` for the innermost frame of optin's own code."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/agent/" in f.filename]
    at = (
        f"{frames[-1].filename[frames[-1].filename.rindex('/agent/') + 1 :]}:{frames[-1].lineno}"
        if frames
        else "?"
    )
    return f"{type(exc).__name__} at {at}"


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Ran:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    code: int | None = None
    crash = ""
    try:
        with deadline(60):
            code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    except Exception as exc:  # any exception out of cli.main is what this suite looks for
        crash = _where(exc)
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    got = capsys.readouterr()
    return Ran(argv, code, got.out, got.err, crash)


@dataclass
class Recorded:
    """What starting a recorder did: refused (and why), or the state it started in and what it wrote."""

    refused: str = ""  # the error type and message
    crash: str = ""
    started_in: str = ""
    session: str = ""
    keys: list[str] = field(default_factory=list)  # characters of the key presses stored
    readable: bool = False  # the session opened with the volunteer's own identity


def _recorder(d: Dirs, identity: bytes, *, resume: bool) -> Recorded:
    """Start a recorder as ``optin run`` would (the installed study), type a key in an ordinary window
    and one in the excluded app, stop, and read what was stored with the volunteer's identity."""
    out = Recorded()
    try:
        with deadline(30):
            study = installed_study(d)
            backend = FakeBackend()
            rec = Recorder(d, backend, study)
            rec.start()
            out.started_in, out.session = rec.state, str(rec.session_id)
            if rec.state == "paused" and resume:
                rec.resume()
            fake = backend.last_input
            backend.focus_window("Notes", "Editor")
            if fake is not None:
                fake.emit(KeyPress(now_ns(), ORDINARY_KEY, None, ord(ORDINARY_KEY), ()))
            backend.focus_window("Passwords", EXCLUDED)
            if fake is not None:
                fake.emit(KeyPress(now_ns(), EXCLUDED_KEY, None, ord(EXCLUDED_KEY), ()))
            rec.stop()
    except OptinError as exc:
        out.refused = f"{type(exc).__name__}: {exc}"
        return out
    except Exception as exc:  # a traceback is what this suite looks for
        out.crash = _where(exc)
        return out
    try:
        events = read_session(d, out.session, identity).events
    except StoreError:
        return out
    except Exception as exc:  # a traceback is what this suite looks for
        out.crash = f"reading what it recorded: {_where(exc)}"
        return out
    out.readable = True
    out.keys = [e.char for e in events if isinstance(e, KeyPress) and e.char]
    return out


# --- the checks -------------------------------------------------------------------------------------


@dataclass
class Case:
    kind: str
    damage: str
    bad: bytes
    ours: Store
    home: Path
    cli: Callable[[list[str]], Ran]
    out_plain: Path
    out_approve: Path
    runs: dict[str, Ran] = field(default_factory=dict)
    recorded: Recorded = field(default_factory=Recorded)
    violations: list[str] = field(default_factory=list)

    @property
    def a(self) -> str:
        return self.ours.sessions[0]

    def good(self) -> bytes:
        """The damaged file as it was."""
        return (self.ours.home / KINDS[self.kind].target.format(a=self.a)).read_bytes()

    def wrong(self, what: str) -> None:
        self.violations.append(what)

    def bundle(self, out: Path) -> bool:
        return out.exists() and any(out.iterdir())


def _parsed_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _common(case: Case) -> None:
    """No traceback, known exit codes, and a refusal that names the file and says the fix."""
    spec = KINDS[case.kind]
    names = [n.format(a=case.a) for n in spec.names]
    for ran in case.runs.values():
        if ran.crash:
            case.wrong(f"{ran.name}: {ran.crash}")
            continue
        if "Traceback" in ran.out + ran.err:
            case.wrong(f"{ran.name}: printed a traceback")
        allowed = (0, 1, 3) if ran.argv[0] == "status" else (0, 1, 2)
        if ran.code not in allowed:
            case.wrong(f"{ran.name}: exit {ran.code}")
        if ran.code in (0, 3) or (ran.argv[0] == "status" and ran.code == 1):
            continue
        said = ran.err if ran.err.strip() else ran.out
        if not any(n in said for n in names):
            case.wrong(
                f"{ran.name}: exit {ran.code} without naming {' or '.join(names)}: {said.strip()[:300]!r}"
            )
        if ran.argv[0] == "verify" and not ran.err.strip():
            continue  # a report of problems, each naming its file (no single fix)
        if not FIX.search(said):
            case.wrong(f"{ran.name}: exit {ran.code} without a fix: {said.strip()[:300]!r}")
    if case.recorded.crash:
        case.wrong(f"recorder: {case.recorded.crash}")
    elif case.recorded.refused and not any(n in case.recorded.refused for n in names):
        case.wrong(f"recorder refused without naming {' or '.join(names)}: {case.recorded.refused[:300]!r}")


def _ok(case: Case, *commands: str) -> None:
    """These commands are not about the damaged file: they answer as on an untouched store."""
    for name in commands:
        ran = case.runs[name]
        if not ran.crash and ran.code not in (0, 3 if name == "status" else 0):
            case.wrong(
                f"{name}: exit {ran.code} over a file it does not need: {(ran.err or ran.out)[:300]!r}"
            )


def _records_as_asked(case: Case) -> None:
    """The recorder started and kept the excluded app out (and recorded the ordinary key)."""
    rec = case.recorded
    if rec.refused or rec.crash:
        if not rec.crash:
            case.wrong(f"recorder refused over a file it does not need: {rec.refused[:300]!r}")
        return
    if not rec.readable:
        case.wrong("what the recorder wrote does not open with the volunteer's identity")
    if EXCLUDED_KEY in rec.keys:
        case.wrong("a key typed in the excluded app was recorded")
    if ORDINARY_KEY not in rec.keys:
        case.wrong("the recorder did not record the ordinary key")


def _no_export(case: Case) -> None:
    for out, name in ((case.out_plain, "export"), (case.out_approve, "export --approve")):
        if case.bundle(out):
            case.wrong(f"{name} wrote a bundle of a damaged session")
        if case.runs[name].code == 0:
            case.wrong(f"{name} exited 0")


def check_segment(case: Case, d: Dirs) -> None:
    verify = case.runs["verify"]
    if verify.code != 1 or f"{case.a}/000000.seg" not in verify.out:
        case.wrong(f"verify did not report {case.a}/000000.seg: exit {verify.code} {verify.out[-300:]!r}")
    _no_export(case)
    _ok(case, "sessions", "sessions --json", "status", "consent show")
    _records_as_asked(case)
    again = case.cli(["verify", case.a])  # the recorder's start (crash recovery) repaired nothing quietly
    if again.code != 1:
        case.wrong(f"after the recorder's start verify {case.a} exits {again.code}")


def _meta_counts(meta: Any) -> tuple[Any, ...] | None:
    if not isinstance(meta, dict) or not isinstance(meta.get("events"), dict):
        return None
    values = list(meta["events"].values())
    total = sum(values) if all(type(v) is int for v in values) else None
    return meta.get("schema"), meta.get("state"), meta.get("records"), total


def check_meta(case: Case, d: Dirs) -> None:
    verify = case.runs["verify"]
    same = _meta_counts(_parsed_json(case.bad)) == _meta_counts(_parsed_json(case.good()))
    if verify.code == 0 and not same:
        case.wrong("verify passed a meta.json whose state or counts differ from what the segments hold")
    if verify.code == 1 and f"{case.a}/meta.json" not in verify.out:
        case.wrong(f"verify failed without naming {case.a}/meta.json: {verify.out[-300:]!r}")
    _ok(case, "status", "consent show")
    _records_as_asked(case)
    try:
        after = len(read_session(d, case.a, case.ours.identity).events)
    except StoreError as exc:
        case.wrong(f"after the recorder's start session A no longer reads: {exc}")
        return
    except Exception as exc:  # a traceback is what this suite looks for
        case.wrong(f"reading session A: {_where(exc)}")
        return
    if after != case.ours.events[case.a]:
        case.wrong(
            f"after the recorder's start session A holds {after} events, not {case.ours.events[case.a]}"
        )


def _approval(data: bytes) -> tuple[Any, Any] | None:
    record = _parsed_json(data)
    approval = record.get("approval") if isinstance(record, dict) else None
    if not isinstance(approval, dict):
        return None
    return approval.get("fingerprint"), approval.get("policy_sha256")


def check_review(case: Case, d: Dirs) -> None:
    bad, good = _approval(case.bad), _approval(case.good())
    approved = bad is not None and bad == good
    plain = case.runs["export"]
    if not plain.crash and (approved != (plain.code == 0) or approved != case.bundle(case.out_plain)):
        state = "intact" if approved else "not"
        case.wrong(f"export without --approve: exit {plain.code} though the approval is {state}")
    listing = case.runs["sessions --json"]
    if listing.code == 0 and not listing.crash:
        rows = {r["id"]: r for r in json.loads(listing.out)}
        shown = rows[case.a]["review"]["approval"]
        fingerprint = bad is not None and good is not None and bad[0] == good[0]  # `sessions` asks no policy
        if (shown == "approved") != fingerprint:
            state = "intact" if fingerprint else "not"
            case.wrong(f"sessions shows {shown!r} for an approval whose fingerprint is {state}")
    again = case.runs["export --approve"]
    if again.code == 0 and not case.bundle(case.out_approve):
        case.wrong("export --approve exited 0 without a bundle")
    _ok(case, "verify", "status", "consent show")
    _records_as_asked(case)


_BINDING = ("study_id", "consent_version", "text_sha256", "terms_sha256", "terms")


def _binds_the_same(bad: Any, good: dict[str, Any]) -> bool:
    return (
        isinstance(bad, dict)
        and all(bad.get(k) == good[k] for k in _BINDING)
        and isinstance(bad.get("scopes"), list)
        and set(map(str, bad["scopes"])) <= set(good["scopes"])
    )


def _consent_agrees(case: Case, same: bool) -> None:
    """consent show, the recorder and export say the same, and say "given" only when ``same``."""
    show = case.runs["consent show"]
    if show.crash or case.runs["export"].crash or case.recorded.crash:
        return  # a violation already
    given = show.code == 0 and "consent: GIVEN" in show.out
    started = not case.recorded.refused and not case.recorded.crash
    exported = case.runs["export"].code == 0
    if given and not same:
        case.wrong("consent show says GIVEN for a consent that does not bind this study")
    if started and not same:
        case.wrong("the recorder recorded under a consent that does not bind this study")
    if exported and not same:
        case.wrong("export ran under a consent that does not bind this study")
    if len({given, started, exported}) != 1:
        case.wrong(
            f"consent show (given: {given}), the recorder (started: {started}), export ({exported}) disagree"
        )
    if not exported and case.bundle(case.out_plain):
        case.wrong("a refused export left a bundle")


def check_consent(case: Case, d: Dirs) -> None:
    good, bad = json.loads(case.good()), _parsed_json(case.bad)
    _consent_agrees(case, _binds_the_same(bad, good))
    scopes = bad.get("scopes") if isinstance(bad, dict) else None
    if case.recorded.keys and not (isinstance(scopes, list) and "keyboard" in scopes):
        case.wrong("keys were recorded under a consent without the keyboard scope")
    if case.recorded.refused and "ConsentRequired" not in case.recorded.refused:
        case.wrong(f"the recorder refused for another reason: {case.recorded.refused[:200]!r}")
    _ok(case, "sessions", "sessions --json", "verify", "status")


def check_study(case: Case, d: Dirs) -> None:
    try:
        same = tomllib.loads(case.bad.decode("utf-8")) == tomllib.loads(case.good().decode("utf-8"))
    except (ValueError, RecursionError):
        same = False
    _consent_agrees(case, same)
    _ok(case, "sessions", "sessions --json", "verify", "status")


def check_exclusions(case: Case, d: Dirs) -> None:
    rec = case.recorded
    if rec.refused and ("exclusions.json" not in rec.refused or "Fix" not in rec.refused):
        case.wrong(f"the recorder refused without naming the exclusions and the fix: {rec.refused[:300]!r}")
    elif not rec.refused:
        _records_as_asked(case)
    _ok(case, "sessions", "sessions --json", "verify", "status", "consent show", "export", "export --approve")


def check_pause(case: Case, d: Dirs) -> None:
    rec = case.recorded
    if not rec.refused and not rec.crash:
        if rec.started_in != "paused":
            case.wrong("the recorder started recording though the volunteer had paused")
        if rec.keys:
            case.wrong("keys were recorded while paused")
    _ok(case, "sessions", "sessions --json", "verify", "status", "consent show", "export", "export --approve")


def check_status(case: Case, d: Dirs) -> None:
    _ok(case, "sessions", "sessions --json", "verify", "consent show", "export", "export --approve")
    _records_as_asked(case)


def check_keys(case: Case, d: Dirs) -> None:
    rec = case.recorded
    if not rec.refused and not rec.crash and not rec.readable:
        case.wrong("the recorder recorded to a key the volunteer's identity cannot open")
    if case.kind == "identity":
        for name in ("verify", "export", "export --approve"):
            if case.runs[name].code == 0 and case.bad != case.good():
                case.wrong(f"{name} exited 0 with a damaged identity")
    if case.bundle(case.out_plain) and case.runs["export"].code != 0:
        case.wrong("a refused export left a bundle")
    _ok(case, "sessions", "sessions --json", "status", "consent show")


def check_delivery(case: Case, d: Dirs) -> None:
    """A damaged delivery record is shown as damaged, never as delivered; nothing else minds it, and a
    new export writes a good one."""
    listing = case.runs["sessions --json"]
    if listing.code == 0 and not listing.crash:
        rows = {r["id"]: r for r in json.loads(listing.out)}
        shown = (rows[case.a].get("delivery") or {}).get("state")
        if shown not in ("exported", "damaged"):  # a damaged record never reads as sent (or sending)
            case.wrong(f"sessions shows the delivery of a damaged record as {shown!r}")
        if shown != "damaged" and not isinstance(_parsed_json(case.bad), dict):
            case.wrong(f"sessions shows a delivery record that is not JSON as {shown!r}")
    _ok(case, "sessions", "sessions --json", "verify", "status", "consent show", "export", "export --approve")
    _records_as_asked(case)
    from agent.export import deliveries

    after = deliveries.load(d, case.a)
    if after is None or after.state != "exported":
        case.wrong(f"after a new export the delivery record reads as {after and after.state!r}")


CHECKS: dict[str, Callable[[Case, Dirs], None]] = {
    "segment": check_segment,
    "meta.json": check_meta,
    "review.json": check_review,
    "consent receipt": check_consent,
    "study file": check_study,
    "exclusions": check_exclusions,
    "pause": check_pause,
    "status": check_status,
    "recipient": check_keys,
    "identity": check_keys,
    "delivery": check_delivery,
}


@dataclass
class Env:
    """The test's own fixtures a case needs."""

    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]


def run_case(
    kind: str, damage: str, stores: tuple[Store, Store], env: Env, *, bad: bytes | None = None
) -> Case:
    """Copy our store, put ``damage`` into its file of ``kind``, run every command and the recorder."""
    ours, other = stores
    tmp_path, capsys = env.tmp_path, env.capsys
    home = tmp_path / "home"
    shutil.copytree(ours.home, home, symlinks=True)
    env.monkeypatch.setenv("OPTIN_HOME", str(home))
    bad = _damaged(kind, damage, ours, other) if bad is None else bad
    target = home / KINDS[kind].target.format(a=ours.sessions[0])
    target.write_bytes(bad)
    case = Case(
        kind=kind,
        damage=damage,
        bad=bad,
        ours=ours,
        home=home,
        cli=lambda argv: _cli(argv, capsys),
        out_plain=tmp_path / "out",
        out_approve=tmp_path / "out-approved",
    )
    a = case.a
    for name, argv in {
        "sessions": ["sessions"],
        "sessions --json": ["sessions", "--json"],
        "verify": ["verify"],
        "status": ["status"],
        "consent show": ["consent", "show"],
        "export": ["export", a, "--out", str(case.out_plain)],
        "export --approve": ["export", a, "--approve", "--out", str(case.out_approve)],
    }.items():
        case.runs[name] = case.cli(argv)
        case.runs[name].name = name
    d = dirs()
    case.recorded = _recorder(d, ours.identity, resume=kind != "pause")
    _common(case)
    CHECKS[kind](case, d)
    return case


def _judge(case: Case, hostile: Tally) -> None:
    """Count the case, and fail it on any violation (each names the command and what went wrong)."""
    promise = KINDS[case.kind].promise
    hostile.tried(promise)
    where = f"{case.kind} / {case.damage} (seed {SEED})"
    assert not case.violations, f"{where}:\n  " + "\n  ".join(case.violations)
    hostile.held(promise)


# --- the tests --------------------------------------------------------------------------------------


def test_every_kind_of_file_optin_keeps_is_covered(stores: tuple[Store, Store]) -> None:
    """Every file in a store that has recorded, approved, exported, excluded and paused is of a kind
    this suite damages, and every kind is there (a new kind of file fails here until it has cases)."""
    ours, _ = stores
    found: dict[str, list[str]] = {name: [] for name in KINDS}
    unknown = []
    for path in sorted(ours.home.rglob("*")):
        rel = path.relative_to(ours.home).as_posix()
        if path.is_dir() and not path.is_symlink():
            continue
        kind = next((n for n, k in KINDS.items() if re.fullmatch(k.pattern, rel) and path.is_file()), None)
        if kind is None:
            unknown.append(rel)
        else:
            found[kind].append(rel)
    assert not unknown, f"files of a kind tests/hostile/test_store_files.py does not damage: {unknown}"
    assert all(found.values()), f"kinds the store no longer holds: {[n for n, f in found.items() if not f]}"


def test_the_untouched_store_passes_every_check(
    stores: tuple[Store, Store],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The checks can pass: on an unchanged copy every command answers 0 and the recorder records the
    ordinary key, not the excluded one (it starts paused: the volunteer's pause)."""
    ours, _ = stores
    env = Env(tmp_path, monkeypatch, capsys)
    case = run_case("status", "none", stores, env, bad=(ours.home / KINDS["status"].target).read_bytes())
    assert {name: ran.code for name, ran in case.runs.items()} == dict.fromkeys(case.runs, 0), case.runs
    assert case.recorded.started_in == "paused" and case.recorded.keys == [ORDINARY_KEY], case.recorded
    assert case.bundle(case.out_plain) and case.bundle(case.out_approve)
    assert not case.violations, case.violations


@pytest.mark.parametrize(("kind", "damage"), _cases())
def test_p1_p9_a_damaged_file_is_refused_or_harmless(  # noqa: PLR0917 - fixtures
    kind: str,
    damage: str,
    stores: tuple[Store, Store],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    hostile: Tally,
) -> None:
    _judge(run_case(kind, damage, stores, Env(tmp_path, monkeypatch, capsys)), hostile)
