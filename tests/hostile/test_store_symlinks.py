"""P8: deletion never leaves the store.  Links, FIFOs and hard links where a session, a segment,
``meta.json`` or ``review.json`` should be are refused and reported, never followed: after every
deletion path (``sessions delete``, ``purge``, ``delete-last``, the budget and retention, a cut,
the study's ``after_export = "delete"``, ``uninstall --purge``, the start of ``optin run``) the
decoy outside the store has every byte it had.

Each case runs twice: with directory descriptors (Linux, macOS) and with the ``lstat`` checks
that stand in for them where the platform has none (``safe_fs.DIR_FD`` off).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from agent import cli
from agent.errors import StoreError
from agent.paths import Dirs, dirs
from agent.store import cut, keys, retention, safe_fs
from agent.store.safe_fs import UnsafeEntry
from tests.hostile.conftest import Tally
from tests.unit.test_store_retention import make_session

P8 = "P8 deletion stays in the store"
ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600.0


@pytest.fixture(params=["dir_fd", "lstat"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways safe_fs works: by directory descriptor, and by lstat where there are none."""
    if request.param == "lstat":
        monkeypatch.setattr(safe_fs, "DIR_FD", False)
    elif sys.platform == "linux":
        assert safe_fs.DIR_FD, "Linux must act by directory descriptor"
    return str(request.param)


@pytest.fixture
def store() -> tuple[Dirs, bytes, bytes]:
    d = dirs()
    keys.init_keys(d)
    return d, keys.load_recipient(d), keys.load_identity(d)


def tree(root: Path) -> dict[str, object]:
    """Every entry under ``root``, links not followed: file bytes, link targets, kinds."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            key = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[key] = ("link", os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                out[key] = ("file", path.read_bytes(), st.st_mtime_ns)
            else:
                out[key] = ("other", stat.S_IFMT(st.st_mode))
    return out


class Hung(BaseException):
    """Raised by :func:`deadline`; not an OSError, so no ``except OSError`` on the way swallows it."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""

    def expired(_sig: int, _frame: FrameType | None) -> None:
        msg = f"did not finish within {seconds} s (blocked on a FIFO?)"
        raise Hung(msg)

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def moved_out(session: Path, outside: Path) -> Path:
    """Move a real session out of the store and leave a link to it where it was (as a volunteer
    who moved a session to another disk would): the decoy is a real session's bytes."""
    decoy = outside / session.name
    shutil.move(str(session), decoy)
    session.symlink_to(decoy, target_is_directory=True)
    return decoy


def segment_linked_out(session: Path, outside: Path, name: str = "000001.seg") -> Path:
    """Replace one segment by a link to a copy of it outside the store."""
    decoy = outside / f"{session.name}-{name}"
    shutil.move(str(session / name), decoy)
    (session / name).symlink_to(decoy)
    return decoy


# --- the operations, as the volunteer (or the agent) runs them --------------------------------------


def op_sessions_delete(d: Dirs, sid: str, _identity: bytes, _recipient: bytes) -> object:
    return cli.main(["sessions", "delete", sid])


def op_purge(d: Dirs, _sid: str, _identity: bytes, _recipient: bytes) -> object:
    return cli.main(["purge", "--yes"])


def op_delete_last(d: Dirs, _sid: str, _identity: bytes, _recipient: bytes) -> object:
    return cli.main(["delete-last", "2h"])


def op_retention(d: Dirs, _sid: str, _identity: bytes, _recipient: bytes) -> object:
    return retention.enforce(d, max_bytes=0, max_age_days=0.0)  # everything is over budget and too old


def op_cut(d: Dirs, sid: str, identity: bytes, recipient: bytes) -> object:
    return cut.cut_session(d, sid, [(0, 10**15)], identity, recipient)


def op_shred_all(d: Dirs, _sid: str, _identity: bytes, _recipient: bytes) -> object:
    return retention.shred_all(d)


Op = Callable[[Dirs, str, bytes, bytes], object]
OPS: dict[str, Op] = {
    "sessions delete": op_sessions_delete,
    "purge": op_purge,
    "delete-last": op_delete_last,
    "retention": op_retention,
    "cut": op_cut,
    "shred_all": op_shred_all,
}


def run_op(op: Op, d: Dirs, sid: str, identity: bytes, recipient: bytes) -> tuple[object, str]:
    """Run ``op``; (its result or the error it raised, the error's message)."""
    try:
        with deadline(10):
            result = op(d, sid, identity, recipient)
    except StoreError as exc:
        return exc, str(exc)
    return result, ""


# --- a session folder that is a link ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPS))
def test_p8_a_session_folder_that_is_a_link_is_never_followed(  # noqa: PLR0917 - fixtures
    name: str,
    mode: str,
    store: tuple[Dirs, bytes, bytes],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    hostile: Tally,
) -> None:
    d, recipient, identity = store
    now = time.time()
    before_link = make_session(d, recipient, start=now - 2000, minutes=2)  # sorts before the link
    linked = make_session(d, recipient, start=now - 1000, minutes=3)
    after_link = make_session(d, recipient, start=now - 500, minutes=2)  # sorts after it
    outside = tmp_path / "outside"
    outside.mkdir()
    moved_out(linked, outside)
    decoy = tree(outside)
    hostile.tried(P8)

    result, message = run_op(OPS[name], d, linked.name, identity, recipient)

    assert tree(outside) == decoy  # every byte of the folder the link points to is still there
    assert linked.is_symlink()  # the link is left, never followed, never removed
    said = message or capsys.readouterr().err or caplog.text  # retention logs what it left alone
    assert str(linked) in said and "symbolic link" in said and "Fix:" in said, said
    if name in ("sessions delete", "purge", "delete-last"):
        assert result == 1
    if name == "shred_all":  # every real session is gone, the link is reported
        assert isinstance(result, UnsafeEntry)
        assert not before_link.exists() and not after_link.exists()
        shredded = sorted(x.session_id for x in result.partial)  # type: ignore[attr-defined]
        assert shredded == sorted([before_link.name, after_link.name])
    if name == "retention":
        assert not before_link.exists() and not after_link.exists()
    hostile.held(P8)


# --- a segment (or meta.json) that is a link, a FIFO or a hard link ---------------------------------------


def _plant(kind: str, session: Path, outside: Path) -> Path:
    """Put ``kind`` where segment 000001 (or meta.json) of ``session`` should be; the planted path."""
    if kind == "segment link":
        segment_linked_out(session, outside)
        return session / "000001.seg"
    if kind == "meta.json link":
        decoy = outside / "meta.json"
        shutil.move(str(session / "meta.json"), decoy)
        (session / "meta.json").symlink_to(decoy)
        return session / "meta.json"
    if kind == "segment hard link":
        decoy = outside / "precious.bin"
        decoy.write_bytes(os.urandom(400))
        (session / "000001.seg").unlink()
        os.link(decoy, session / "000001.seg")
        return session / "000001.seg"
    if kind == "segment FIFO":
        (session / "000001.seg").unlink()
        os.mkfifo(session / "000001.seg")
        return session / "000001.seg"
    if kind == "meta.json FIFO":
        (session / "meta.json").unlink()
        os.mkfifo(session / "meta.json")
        return session / "meta.json"
    if kind == "deletion temp link":
        decoy = outside / "tomb.bin"
        decoy.write_bytes(os.urandom(300))
        (session / ".deletion-0badcafe.tmp").symlink_to(decoy)
        return session / ".deletion-0badcafe.tmp"
    raise AssertionError(kind)


KINDS = [
    "segment link",
    "meta.json link",
    "segment hard link",
    "segment FIFO",
    "meta.json FIFO",
    "deletion temp link",
]
#: The store functions themselves, besides the command lines that call them.
STORE_OPS = ["delete-last (store)", "retention", "cut", "shred_all", "shred_session"]


def op_delete_last_store(d: Dirs, _sid: str, _identity: bytes, _recipient: bytes) -> object:
    return retention.delete_last(d, 2 * HOUR)


def op_shred_session(d: Dirs, sid: str, _identity: bytes, _recipient: bytes) -> object:
    return retention.shred_session(d, sid)


OPS["delete-last (store)"] = op_delete_last_store
OPS["shred_session"] = op_shred_session


CASES = [(kind, name) for kind in KINDS for name in [*STORE_OPS, "sessions delete", "purge", "delete-last"]]


@pytest.mark.parametrize(("kind", "name"), CASES)
def test_p8_what_stands_where_a_file_should_be_is_refused(  # noqa: PLR0917 - fixtures
    kind: str,
    name: str,
    mode: str,
    store: tuple[Dirs, bytes, bytes],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    hostile: Tally,
) -> None:
    d, recipient, identity = store
    now = time.time()
    session = make_session(d, recipient, start=now - 900, minutes=3)
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = _plant(kind, session, outside)
    decoy = tree(outside)
    hostile.tried(P8)

    result, message = run_op(OPS[name], d, session.name, identity, recipient)

    assert tree(outside) == decoy  # not one byte outside the store changed (60..139 above all)
    assert os.path.lexists(planted)  # refused: left where it was
    said = message or capsys.readouterr().err or caplog.text  # retention logs what it left alone
    if name == "retention" and mode == "lstat" and kind.startswith("meta.json"):
        # without a writer lock to ask, a session without a readable meta.json may be being
        # recorded: retention leaves it whole (and so says nothing about it)
        assert len(list(session.glob("*.seg"))) == 3
    else:
        assert str(planted) in said and "Fix:" in said, said
    if name in ("sessions delete", "purge", "delete-last"):
        assert result == 1
    if name in ("shred_session", "sessions delete", "shred_all", "purge"):
        # everything else of the session was shredded; the session stays listed until fixed
        left = sorted(p.name for p in session.iterdir())
        assert not [n for n in left if n.endswith(".seg") and session / n != planted], left
    hostile.held(P8)


def test_p8_a_fifo_is_never_opened(store: tuple[Dirs, bytes, bytes], mode: str, hostile: Tally) -> None:
    """Opening a FIFO for reading blocks until someone writes: every path must refuse it unopened."""
    d, recipient, _ = store
    session = make_session(d, recipient, start=time.time() - 900, minutes=2)
    for name in ("000000.seg", "meta.json", "review.json", ".deletion-0badcafe.tmp"):
        with contextlib.suppress(FileNotFoundError):
            (session / name).unlink()
        os.mkfifo(session / name)
    hostile.tried(P8, 4)
    with deadline(20):
        retention.enforce(d, max_bytes=0, max_age_days=0.0)
        assert retention.finish_interrupted_deletions(d) == []
        with pytest.raises(UnsafeEntry, match="FIFO"):
            retention.delete_last(d, 2 * HOUR)
        with pytest.raises(UnsafeEntry, match="FIFO"):
            retention.shred_session(d, session.name)
    assert all(
        stat.S_ISFIFO((session / n).lstat().st_mode) for n in ("000000.seg", "meta.json", "review.json")
    )
    hostile.held(P8, 4)


# --- crash leftovers whose names are links ------------------------------------------------------------


def test_p8_interrupted_cut_and_deletion_leftovers_that_are_links(
    store: tuple[Dirs, bytes, bytes], mode: str, tmp_path: Path, hostile: Tally
) -> None:
    d, recipient, _ = store
    now = time.time()
    real = make_session(d, recipient, start=now - 900, minutes=2)
    victim = make_session(d, recipient, start=now - 600, minutes=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    moved = moved_out(victim, outside)  # a whole closed session's folder, outside the store
    victim.unlink()
    (d.sessions / f".cut-old-{real.name}-0badcafe").symlink_to(moved, target_is_directory=True)
    (d.sessions / f".cut-new-{victim.name}-0badcafe").symlink_to(moved, target_is_directory=True)
    tomb = outside / "tomb.bin"
    tomb.write_bytes(os.urandom(300))
    (real / ".deletion-0badcafe.tmp").symlink_to(tomb)
    decoy = tree(outside)
    hostile.tried(P8, 3)

    assert cut.finish_interrupted_cuts(d) == []
    assert retention.finish_interrupted_deletions(d) == []

    assert tree(outside) == decoy
    assert not victim.exists() and not victim.is_symlink()  # the linked copy was not moved into place
    assert (d.sessions / f".cut-old-{real.name}-0badcafe").is_symlink()
    assert len(list(real.glob("*.seg"))) == 2  # the real session was not trimmed by a linked tombstone
    hostile.held(P8, 3)


# --- approval and export ----------------------------------------------------------------------------------


def test_p8_review_and_export_refuse_links(study_file: Path, tmp_path: Path, hostile: Tally) -> None:
    from agent import consent
    from agent.backends import select_backend
    from agent.control import Recorder
    from agent.export import approval
    from agent.export.bundle import export_session
    from agent.study import install_study

    # a study whose after_export = "delete" shreds a session once it is exported
    study_file.write_text(study_file.read_text() + '\n[retention]\nafter_export = "delete"\n')
    d = dirs()
    study = install_study(d, study_file)
    assert study.retention_after_export == "delete"
    consent.grant(d, study, study.terms_sha256)
    keys.init_keys(d)
    rec = Recorder(d, select_backend("fake"), study)
    rec.start()
    rec.stop()
    sid = str(rec.session_id)
    session = d.sessions / sid
    outside = tmp_path / "outside"
    outside.mkdir()
    review = outside / "review.json"
    review.write_text('{"approval": {"fingerprint": "x"}}\n')
    (session / "review.json").symlink_to(review)
    decoy = tree(outside)
    hostile.tried(P8, 2)

    assert approval.load(d, sid) == {}  # a link is not a review record: not approved
    with pytest.raises(UnsafeEntry, match=r"review\.json is a symbolic link"):
        approval.approve(d, sid, "0" * 64, {})
    (session / "review.json").unlink()

    # meta.json linked out: the bundle is written, the study's after_export = "delete" shreds every
    # segment, and the link (with what it points to) is left and reported
    meta = outside / "meta.json"
    shutil.move(str(session / "meta.json"), meta)
    (session / "meta.json").symlink_to(meta)
    decoy = tree(outside)
    with pytest.raises(UnsafeEntry, match=r"meta\.json is a symbolic link") as err:
        export_session(d, sid, tmp_path / "out", study, approve=True)
    bundle = tmp_path / "out" / f"{sid}.optin.tar.age"
    assert f"the bundle was written to {bundle}, but session {sid} was not deleted completely" in str(
        err.value
    )
    assert bundle.exists()
    assert tree(outside) == decoy
    assert not list(session.glob("*.seg"))
    hostile.held(P8, 2)


def test_p8_a_segment_link_makes_an_approved_session_unexportable(
    store: tuple[Dirs, bytes, bytes], tmp_path: Path, hostile: Tally
) -> None:
    from agent.export import approval

    d, recipient, _ = store
    session = make_session(d, recipient, start=time.time() - 900, minutes=3)
    approval.approve(d, session.name, "0" * 64, {})
    assert approval.state(d, session.name, "0" * 64) == "approved"
    outside = tmp_path / "outside"
    outside.mkdir()
    segment_linked_out(session, outside)
    decoy = tree(outside)
    hostile.tried(P8)
    assert approval.state(d, session.name, "0" * 64) == "changed"
    with pytest.raises(UnsafeEntry, match=r"000001\.seg is a symbolic link"):
        approval.require(d, session.name, "0" * 64)
    assert tree(outside) == decoy
    hostile.held(P8)


# --- the start of `optin run` ------------------------------------------------------------------------------


def test_p8_retention_at_start_leaves_a_linked_session_alone(
    consented: tuple[Dirs, object], tmp_path: Path, caplog: pytest.LogCaptureFixture, hostile: Tally
) -> None:
    """A closed session moved out of the store and linked back, older than the retention: the agent
    starts, enforces the retention, and the folder the link points to keeps every byte."""
    from agent.backends import select_backend
    from agent.control import Recorder

    d, study = consented
    old = make_session(d, keys.load_recipient(d), start=time.time() - 90 * 86400, minutes=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    moved_out(old, outside)
    decoy = tree(outside)
    hostile.tried(P8)
    rec = Recorder(d, select_backend("fake"), study)  # type: ignore[arg-type]
    rec.start()
    rec.stop()
    assert tree(outside) == decoy
    assert old.is_symlink()
    assert f"{old} is a symbolic link" in caplog.text  # the log names it, with the fix
    hostile.held(P8)


def test_p8_optin_run_never_writes_or_deletes_through_a_linked_interrupted_session(
    consented: tuple[Dirs, object], tmp_path: Path, hostile: Tally
) -> None:
    from agent.backends import select_backend
    from agent.control import Recorder

    d, study = consented
    crashed = make_session(d, keys.load_recipient(d), start=time.time() - 90 * 86400, minutes=2, close=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    moved_out(crashed, outside)
    decoy = tree(outside)
    hostile.tried(P8)
    rec = Recorder(d, select_backend("fake"), study)  # type: ignore[arg-type]
    rec.start()
    rec.stop()
    assert tree(outside) == decoy
    hostile.held(P8)


def test_p8_crash_recovery_never_truncates_through_a_segment_link(
    store: tuple[Dirs, bytes, bytes], tmp_path: Path, hostile: Tally
) -> None:
    from agent.store.recovery import recover_sessions

    d, recipient, _ = store
    crashed = make_session(d, recipient, start=time.time() - 900, minutes=2, close=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    decoy_file = segment_linked_out(crashed, outside)
    with decoy_file.open("ab") as fh:
        fh.write(b"\x00\x00\x01")  # a torn record head: what recovery cuts off
    decoy = tree(outside)
    hostile.tried(P8)
    recover_sessions(d, recipient)
    assert tree(outside) == decoy
    hostile.held(P8)


# --- uninstall --purge, as the volunteer types it --------------------------------------------------------


def test_p8_uninstall_purge_through_the_command_line(
    store: tuple[Dirs, bytes, bytes], tmp_path: Path, hostile: Tally
) -> None:
    d, recipient, _ = store
    now = time.time()
    real = make_session(d, recipient, start=now - 900, minutes=2)
    linked = make_session(d, recipient, start=now - 600, minutes=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    moved_out(linked, outside)
    other = outside / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(os.urandom(500))
    (d.data / "photos").symlink_to(other, target_is_directory=True)  # a link elsewhere in optin's data
    decoy = tree(outside)
    home = tmp_path / "user-home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    }
    env.pop("XDG_CONFIG_HOME", None)
    hostile.tried(P8, 2)

    def uninstall() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent", "uninstall", "--purge", "--yes"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    first = uninstall()
    assert first.returncode == 1, first.stderr
    assert f"{linked} is a symbolic link" in first.stderr and "Fix:" in first.stderr
    assert tree(outside) == decoy
    assert keys.load_recipient(d) == recipient  # stopped before the keys and the data went

    linked.unlink()  # the volunteer follows the fix
    second = uninstall()
    assert second.returncode == 0, second.stderr
    assert not d.data.exists() and not real.exists()
    assert tree(outside) == decoy  # the data folder's link was removed, not followed
    hostile.held(P8, 2)


def test_p8_refusals_show_hostile_names_visibly(
    store: tuple[Dirs, bytes, bytes], tmp_path: Path, hostile: Tally
) -> None:
    """A link's name or target could carry terminal escapes; the message shows them as \\u escapes."""
    d, recipient, _ = store
    session = make_session(d, recipient, start=time.time() - 900, minutes=1)
    evil = session / "x\x1b[2K\rdeleted everything.seg"
    evil.symlink_to(tmp_path / "\x1b]0;owned\x07")
    hostile.tried(P8)
    with pytest.raises(UnsafeEntry) as err:
        retention.shred_session(d, session.name)
    text = str(err.value)
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "\\u001b[2K\\u000ddeleted everything.seg" in text
    assert json.dumps([r.to_dict() for r in err.value.refused])  # JSON-ready
    hostile.held(P8)


# --- crash recovery at the start of `optin run` ----------------------------------------------------------


def torn(segment: Path) -> None:
    """Append a torn record head to ``segment``: what crash recovery cuts off."""
    with segment.open("ab") as fh:
        fh.write(b"\x00\x00\x01")


def test_p8_crash_recovery_reports_a_linked_session_with_the_fix(
    store: tuple[Dirs, bytes, bytes], tmp_path: Path, hostile: Tally
) -> None:
    from agent.store.recovery import recover_sessions

    d, recipient, _ = store
    now = time.time()
    real = make_session(d, recipient, start=now - 900, minutes=2, close=False)
    crashed = make_session(d, recipient, start=now - 600, minutes=2, close=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    moved_out(crashed, outside)
    decoy = tree(outside)
    hostile.tried(P8)
    reports = {r.session_id: r for r in recover_sessions(d, recipient)}
    assert reports[real.name].action == "recovered"  # the real one next to it is recovered
    skipped = reports[crashed.name]
    assert skipped.action == "skipped" and skipped.problem is not None
    assert f"{crashed} is a symbolic link" in skipped.problem and "Fix:" in skipped.problem
    assert tree(outside) == decoy and crashed.is_symlink()
    hostile.held(P8)


RECOVERY_KINDS = [
    "segment link",
    "segment hard link",
    "segment FIFO",
    "meta.json FIFO",
    "meta.json link",
    "temp link",
]


@pytest.mark.parametrize("kind", RECOVERY_KINDS)
def test_p8_crash_recovery_changes_nothing_beside_what_is_not_a_regular_file(
    kind: str, store: tuple[Dirs, bytes, bytes], tmp_path: Path, hostile: Tally
) -> None:
    """A crashed session whose last segment, meta.json or a temp file is a link, a FIFO or a hard
    link to a file outside the store: recovery cuts, writes and removes nothing there (a FIFO
    would block it for ever), and reports the session as skipped with the path and the fix."""
    from agent.store.recovery import recover_sessions

    d, recipient, _ = store
    session = make_session(d, recipient, start=time.time() - 900, minutes=2, close=False)
    torn(session / "000001.seg")
    outside = tmp_path / "outside"
    outside.mkdir()
    if kind == "segment hard link":  # the same bytes outside the store: cutting one cuts both
        planted = session / "000001.seg"
        os.link(planted, outside / "backup.seg")
    elif kind == "temp link":
        planted = session / ".recovery-0badcafe.tmp"
        (outside / "tmp.bin").write_bytes(os.urandom(300))
        planted.symlink_to(outside / "tmp.bin")
    else:
        planted = _plant(kind, session, outside)
    if kind == "segment link":
        torn(outside / f"{session.name}-000001.seg")
    decoy = tree(outside)
    inside = {name: value for name, value in tree(session).items() if name != planted.name}
    hostile.tried(P8)
    with deadline(10):
        [report] = recover_sessions(d, recipient)
    assert report.action == "skipped" and report.problem is not None, report
    assert str(planted) in report.problem and "Fix:" in report.problem, report.problem
    assert tree(outside) == decoy  # not cut, not written, not removed
    assert os.path.lexists(planted)
    after = {name: value for name, value in tree(session).items() if name != planted.name}
    assert after == inside  # no recovery segment, no meta.json written, nothing cut
    hostile.held(P8)


# --- listing, reading and verifying: never blocked by a FIFO, never through a link ---------------------


def optin(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``optin ARGV`` as the volunteer would, in this test's OPTIN_HOME; a hang fails (timeout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "agent", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_p8_optin_sessions_never_blocks_on_a_fifo_nor_crashes_on_a_dangling_link(
    store: tuple[Dirs, bytes, bytes], tmp_path: Path, hostile: Tally
) -> None:
    d, recipient, _ = store
    now = time.time()
    fifo_meta = make_session(d, recipient, start=now - 2000, minutes=2)
    dangling = make_session(d, recipient, start=now - 1500, minutes=3)
    linked = make_session(d, recipient, start=now - 1000, minutes=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    _plant("meta.json FIFO", fifo_meta, outside)
    kept = sum(p.stat().st_size for p in dangling.glob("*.seg") if p.name != "000001.seg")
    (dangling / "000001.seg").unlink()
    (dangling / "000001.seg").symlink_to(outside / "gone.seg")  # points nowhere
    moved_out(linked, outside)
    decoy = tree(outside)
    hostile.tried(P8, 3)

    listed = optin("sessions", "--json")

    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {fifo_meta.name, dangling.name}  # a link is not a session
    assert rows[fifo_meta.name]["state"] == "unknown"  # its meta.json was not opened
    assert rows[dangling.name]["segments"] == 2 and rows[dangling.name]["bytes"] == kept
    assert tree(outside) == decoy
    assert stat.S_ISFIFO((fifo_meta / "meta.json").lstat().st_mode)
    hostile.held(P8, 3)


@pytest.mark.parametrize("kind", ["segment FIFO", "segment link", "meta.json FIFO"])
def test_p8_verify_names_what_is_not_a_regular_file_and_never_blocks(
    kind: str, store: tuple[Dirs, bytes, bytes], tmp_path: Path, hostile: Tally
) -> None:
    from agent.store.reader import read_session

    d, recipient, identity = store
    session = make_session(d, recipient, start=time.time() - 900, minutes=3)
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = _plant(kind, session, outside)
    decoy = tree(outside)
    hostile.tried(P8, 2)

    checked = optin("verify", "--json")

    assert checked.returncode == 1, checked.stderr
    report = json.loads(checked.stdout)
    [problem] = [p for p in report["problems"] if p["kind"] == "unsafe"]
    assert problem["file"] == planted.name
    assert str(planted) in problem["message"] and "Fix:" in problem["message"]
    with deadline(10):
        if kind.startswith("segment"):  # what a reader would decrypt: refused, never opened
            with pytest.raises(UnsafeEntry, match=f"{planted.name} is a"):
                read_session(d, session.name, identity)
        else:  # meta.json is no part of what is read: said, and the segments read
            data = read_session(d, session.name, identity)
            assert any(str(planted) in p for p in data.problems) and data.events
    assert tree(outside) == decoy and os.path.lexists(planted)
    hostile.held(P8, 2)


def test_p8_a_linked_session_is_not_read_by_its_id(
    store: tuple[Dirs, bytes, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str], hostile: Tally
) -> None:
    from agent.store.reader import read_session, session_dir, session_paths

    d, recipient, identity = store
    session = make_session(d, recipient, start=time.time() - 900, minutes=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    moved_out(session, outside)
    hostile.tried(P8, 3)
    with pytest.raises(UnsafeEntry, match="is a symbolic link"):
        session_dir(d, session.name)
    with pytest.raises(UnsafeEntry, match="is a symbolic link"):
        read_session(d, session.name, identity)
    assert session_paths(d) == []
    assert cli.main(["verify", session.name]) == 1
    err = capsys.readouterr().err
    assert f"{session} is a symbolic link" in err and "Fix:" in err
    hostile.held(P8, 3)


def test_p8_the_writer_lock_is_never_taken_through_a_link(
    store: tuple[Dirs, bytes, bytes], tmp_path: Path
) -> None:
    from agent.store.writer import lock_session, writer_active

    d, recipient, _ = store
    session = make_session(d, recipient, start=time.time() - 900, minutes=1)
    outside = tmp_path / "outside"
    outside.mkdir()
    moved_out(session, outside)
    assert writer_active(session) is None  # cannot be told: no lock through a link
    with pytest.raises(OSError):  # ELOOP or ENOTDIR, by platform
        lock_session(session)


def test_p8_export_refuses_a_fifo_segment_without_blocking(
    consented: tuple[Dirs, object], tmp_path: Path, hostile: Tally
) -> None:
    from agent.export.bundle import export_session

    d, study = consented
    session = make_session(d, keys.load_recipient(d), start=time.time() - 900, minutes=3)
    outside = tmp_path / "outside"
    outside.mkdir()
    _plant("segment FIFO", session, outside)
    hostile.tried(P8)
    with deadline(20), pytest.raises(UnsafeEntry, match=r"000001\.seg is a FIFO"):
        export_session(d, session.name, tmp_path / "out", study, approve=True)  # type: ignore[arg-type]
    assert not list(tmp_path.glob("out/*.age"))  # refused before a bundle was written
    hostile.held(P8)


# --- the command lines say what they did delete (--json) -----------------------------------------------


def test_p8_purge_json_lists_what_was_deleted_and_what_was_left(
    store: tuple[Dirs, bytes, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str], hostile: Tally
) -> None:
    d, recipient, _ = store
    now = time.time()
    first = make_session(d, recipient, start=now - 2000, minutes=2)
    linked = make_session(d, recipient, start=now - 1000, minutes=2)
    last = make_session(d, recipient, start=now - 500, minutes=3)
    sizes = sum(p.stat().st_size for s in (first, last) for p in s.glob("*.seg"))
    outside = tmp_path / "outside"
    outside.mkdir()
    moved_out(linked, outside)
    decoy = tree(outside)
    hostile.tried(P8)
    with deadline(10):
        assert cli.main(["purge", "--yes", "--json"]) == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert sorted(x["session_id"] for x in report["deleted"]) == sorted([first.name, last.name])
    assert report["bytes"] == sizes
    assert [r["path"] for r in report["refused"]] == [str(linked)]
    assert f"{linked} is a symbolic link" in err and "2 sessions were deleted" in err
    assert not first.exists() and not last.exists() and tree(outside) == decoy
    hostile.held(P8)


def test_p8_purge_says_the_bytes_it_shredded(
    store: tuple[Dirs, bytes, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    d, recipient, _ = store
    now = time.time()
    sessions = [
        make_session(d, recipient, start=now - 900, minutes=2),
        make_session(d, recipient, start=now - 300, minutes=1),
    ]
    sizes = sum(p.stat().st_size for s in sessions for p in s.glob("*.seg"))
    assert cli.main(["purge", "--yes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes"] == sizes


def test_p8_delete_last_and_sessions_delete_json_say_what_was_deleted(
    store: tuple[Dirs, bytes, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str], hostile: Tally
) -> None:
    d, recipient, _ = store
    now = time.time()
    whole = make_session(d, recipient, start=now - 900, minutes=2)
    linked = make_session(d, recipient, start=now - 600, minutes=2)
    fifo = make_session(d, recipient, start=now - 2 * 86400, minutes=3)  # outside the range
    outside = tmp_path / "outside"
    outside.mkdir()
    moved_out(linked, outside)
    planted = _plant("segment FIFO", fifo, outside)
    decoy = tree(outside)
    hostile.tried(P8, 2)
    with deadline(10):
        assert cli.main(["delete-last", "1h", "--json"]) == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert [x["session_id"] for x in report["deleted"]] == [whole.name] and report["segments"] == 2
    # the FIFO's session is older than the range, but only its segments' times could tell: not checked
    assert sorted(r["path"] for r in report["refused"]) == sorted([str(linked), str(planted)])
    assert f"{linked} is a symbolic link" in err and f"{planted} is a FIFO" in err
    with deadline(10):
        assert cli.main(["sessions", "delete", fifo.name, "--json"]) == 1
    out, err = capsys.readouterr()
    partial = json.loads(out)
    assert partial["session_id"] == fifo.name and partial["segments"] == 2  # the two regular ones
    assert [r["path"] for r in partial["refused"]] == [str(planted)]
    assert f"{planted} is a FIFO" in err
    assert tree(outside) == decoy and os.path.lexists(planted)
    hostile.held(P8, 2)


# --- opting out and uninstalling ---------------------------------------------------------------------------


def test_p8_opting_out_shreds_every_real_session_and_reports_the_link(
    consented: tuple[Dirs, object], tmp_path: Path, caplog: pytest.LogCaptureFixture, hostile: Tally
) -> None:
    from agent import consent
    from agent.backends import select_backend
    from agent.control import Recorder

    d, study = consented
    now = time.time()
    recipient = keys.load_recipient(d)
    real = make_session(d, recipient, start=now - 900, minutes=2)
    linked = make_session(d, recipient, start=now - 600, minutes=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    moved_out(linked, outside)
    decoy = tree(outside)
    hostile.tried(P8)
    rec = Recorder(d, select_backend("fake"), study)  # type: ignore[arg-type]
    rec.start()
    with pytest.raises(UnsafeEntry, match="is a symbolic link") as err:
        rec.opt_out()
    assert consent.current_receipt(d) is None  # withdrawn all the same
    assert not real.exists() and linked.is_symlink()
    assert [x.session_id for x in err.value.partial] == sorted([real.name, str(rec.session_id)])  # type: ignore[attr-defined]
    assert tree(outside) == decoy
    assert f"{linked} is a symbolic link" in caplog.text and "opted out: 2 sessions deleted" in caplog.text
    hostile.held(P8)


@pytest.mark.parametrize("which", ["config", "data", "runtime"])
def test_p8_uninstall_purge_refuses_a_linked_folder_before_removing_anything(  # noqa: PLR0917 - fixtures
    which: str,
    store: tuple[Dirs, bytes, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    hostile: Tally,
) -> None:
    """optin's own folder moved elsewhere and linked back: ``uninstall --purge`` would shred through the
    link and then fail to remove the link after the keys were gone; it stops before anything."""
    d, recipient, _ = store
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert cli.main(["autostart", "enable"]) == 0
    entries = sorted(str(p) for p in home.rglob("*") if p.is_file())
    assert entries
    session = make_session(d, recipient, start=time.time() - 900, minutes=2)
    folder = getattr(d, which)
    folder.mkdir(mode=0o700, exist_ok=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(str(folder), outside / which)
    folder.symlink_to(outside / which, target_is_directory=True)
    decoy = tree(outside)
    capsys.readouterr()
    hostile.tried(P8)
    assert cli.main(["uninstall", "--purge", "--yes"]) == 1
    err = capsys.readouterr().err
    assert f"{folder} is a symbolic link" in err and "Fix:" in err and "removed nothing" in err
    assert tree(outside) == decoy
    assert sorted(str(p) for p in home.rglob("*") if p.is_file()) == entries  # autostart kept too
    assert keys.load_recipient(d) == recipient and session.exists()
    hostile.held(P8)


def test_p8_verify_of_the_whole_store_reports_a_linked_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], hostile: Tally
) -> None:
    """`optin verify` without an id names a link by a session's name (exit 1), and never follows it."""
    from agent import cli
    from agent.paths import dirs as optin_dirs
    from agent.store import keys

    d = optin_dirs()
    keys.init_keys(d)
    d.sessions.mkdir(parents=True, exist_ok=True)
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "000000.seg").write_bytes(b"not optin's")
    before = (decoy / "000000.seg").stat()
    (d.sessions / "20260101T000000Z-0badc0de").symlink_to(decoy, target_is_directory=True)
    hostile.tried(P8)
    assert cli.main(["verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [p["kind"] for p in report["problems"]] == ["unsafe"]
    assert "symbolic link" in report["problems"][0]["message"]
    assert (decoy / "000000.seg").read_bytes() == b"not optin's"
    assert (decoy / "000000.seg").stat().st_mtime_ns == before.st_mtime_ns
    hostile.held(P8)
