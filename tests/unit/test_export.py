"""Export: redacted, signed, encrypted to the study's key alone, in WebDataset layout; only
sessions the volunteer approved leave, and the study decides whether they stay."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from pyrage import decrypt, x25519

from agent import cli, consent
from agent.backends.fake import DEFAULT_SCREEN_SIZE
from agent.canonical_json import canonical
from agent.control import Recorder
from agent.errors import ConsentRequired, ExportError, UsageError
from agent.events import ButtonPress, ButtonRelease, Event, KeyPress, KeyRelease, Marker, PointerMove, now_ns
from agent.export import approval, bundle
from agent.export.bundle import BUNDLE_SCHEMA, STEP_KEYS, ExportResult, export_session
from agent.paths import Dirs
from agent.redact.local_names import LocalNames
from agent.redact.screen import TesseractOcr
from agent.store import keys, signing
from agent.store.cut import cut_session
from agent.store.reader import list_sessions
from tests.tools import Consented, fake_backend, hooks_of, unavailable
from tests.unit.test_recorder import paint_and_wait_for_a_grab

SECRET = "alice.canary@example.com"  # noqa: S105 - a canary the detectors know (an e-mail address)
#: Stand-ins for this computer's names, put into a window title; the bundle must not hold them.
LOCAL = LocalNames(("lab-pc-7",), ("adalove",), ("/home/adalove",), ("02:42:ac:11:00:02",))
LOCAL_TITLE = "adalove@lab-pc-7: /home/adalove/src (02:42:ac:11:00:02)"


@pytest.fixture
def session(consented: Consented) -> str:
    d, study = consented
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    rec.start()
    _frames_written(rec, 1)  # the start frame, before the click asks for another
    backend.focus_window(f"Inbox - {SECRET}", "Thunderbird")
    fake = hooks_of(backend)
    for ch in f"to:{SECRET}":
        fake.emit(KeyPress(now_ns(), ch, None, ord(ch), ()))
        fake.emit(KeyRelease(now_ns(), ch, None, ord(ch), ()))
    fake.emit(KeyPress(now_ns(), None, "enter", 65293, ()))
    fake.emit(KeyRelease(now_ns(), None, "enter", 65293, ()))
    backend.focus_window(LOCAL_TITLE, "XTerm")
    paint_and_wait_for_a_grab(backend)
    fake.emit(PointerMove(now_ns(), 3, 4))
    fake.emit(ButtonPress(now_ns(), 3, 4, "left"))
    fake.emit(ButtonRelease(now_ns(), 3, 4, "left"))
    _frames_written(rec, 2)
    rec.stop()
    return str(rec.session_id)


def _frames_written(rec: Recorder, n: int) -> None:
    deadline = time.monotonic() + 5
    while rec.counters.frames < n:
        assert time.monotonic() < deadline, "frames were not written"
        time.sleep(0.005)


def _identity(study_file: Path) -> x25519.Identity:
    return x25519.Identity.from_str((study_file.parent / "study-identity.txt").read_text().strip())


def _export(consented: Consented, session: str, out: Path, **kw: Any) -> ExportResult:
    d, study = consented
    return export_session(d, session, out, study, approve=True, local=LOCAL, **kw)


def _members(tar_bytes: bytes, session: str) -> dict[str, bytes]:
    """The tar's members in order, names relative to the session directory (and every header checked)."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for info in tar:
            assert info.isfile() and info.mode == 0o644 and info.mtime == 0
            assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
            prefix, _, name = info.name.partition("/")
            assert prefix == session
            member = tar.extractfile(info)
            assert member is not None
            out[name] = member.read()
    return out


def test_bundle_is_signed_webdataset_layout_and_complete(
    consented: Consented, session: str, study_file: Path, tmp_path: Path
) -> None:
    d, study = consented
    res = _export(consented, session, tmp_path / "out")
    assert res.path.name == f"{session}.optin.tar.age"
    blob = res.path.read_bytes()
    assert blob.startswith(b"age-encryption.org/v1\n") and res.sha256 == hashlib.sha256(blob).hexdigest()
    members = _members(decrypt(blob, [_identity(study_file)]), session)
    names = list(members)
    assert names[:2] == ["manifest.json", "manifest.sig"]
    # one sample per step, its json and webp side by side (WebDataset groups adjacent members)
    steps = ["000000.json", "000000.webp", "000001.json", "000001.webp", "000002.json", "000002.webp"]
    # tasks.jsonl third (empty: no task), before the first step
    assert names[2:] == ["tasks.jsonl", *steps, "events.jsonl", "frames.jsonl"]  # every frame is some step's
    assert members["tasks.jsonl"] == b""
    manifest_bytes = members["manifest.json"]
    manifest = json.loads(manifest_bytes)
    assert manifest_bytes == canonical(manifest)
    assert manifest["schema"] == BUNDLE_SCHEMA == "optin-bundle/3"
    assert manifest["tasks"] == [] and manifest["elements"] == {"version": 1, "api": None}
    assert manifest["loss"]["elements"] is None
    assert (
        manifest["redaction"]["counts"]["instructions"] == manifest["redaction"]["counts"]["elements"] == {}
    )
    assert manifest["session"] == session
    assert manifest["consent"]["text_sha256"] == study.text_sha256
    identity = keys.load_identity(d)
    public = base64.b64decode(manifest["volunteer"]["signing_key"])
    assert public == signing.public_signing_key(identity, study.id)
    assert manifest["volunteer"]["id"] == signing.volunteer_id(identity, study.id)
    assert manifest["volunteer"]["id"] == signing.id_of_key(
        manifest["consent"]["study_id"], public
    )  # checkable
    assert signing.verify(public, manifest_bytes, members["manifest.sig"])
    assert not signing.verify(public, manifest_bytes + b" ", members["manifest.sig"])
    listed = manifest["members"]
    assert set(listed) == set(names) - {"manifest.json", "manifest.sig"}
    for name, entry in listed.items():
        assert entry == {"sha256": hashlib.sha256(members[name]).hexdigest(), "size": len(members[name])}
    assert manifest["steps"] == {"version": 2, "count": 3, "by_action": {"click": 1, "key": 1, "type": 1}}
    assert manifest["duration_s"] > 0
    assert manifest["loss"]["clean_stop"] is True and manifest["loss"]["dropped_events"] == 0
    assert manifest["loss"]["pauses"] == 0 and manifest["loss"]["cuts"] == 0


def test_steps_point_into_the_stream(
    consented: Consented, session: str, study_file: Path, tmp_path: Path
) -> None:
    res = _export(consented, session, tmp_path)
    members = _members(decrypt(res.path.read_bytes(), [_identity(study_file)]), session)
    events = [json.loads(line) for line in members["events.jsonl"].splitlines()]
    frames = [json.loads(line) for line in members["frames.jsonl"].splitlines()]
    steps = [json.loads(members[f"{n:06d}.json"]) for n in range(3)]
    assert [s["action"] for s in steps] == ["type", "key", "click"]
    typed, enter, click = steps
    assert typed["text"] == "to:[EMAIL]"  # the address was redacted before the steps were made
    assert {events[i]["k"] for i in typed["events"]} == {"key_press", "key_release", "redacted"}
    assert enter["keys"] == ["enter"] and {events[i]["name"] for i in enter["events"]} == {"enter"}
    assert (click["x"], click["y"], click["button"]) == (3, 4, "left")
    assert [events[i]["k"] for i in click["events"]] == ["button_press", "button_release"]
    assert click["window"]["app_class"] == "XTerm"
    assert typed["window"]["title"] == "Inbox - [EMAIL]"
    assert typed["frame"] == 0 and click["frame"] == 1  # the pre-action frames: start, then the repaint
    assert [f["member"] for f in frames] == ["000000.webp", "000002.webp"]
    assert members["000000.webp"] == members["000001.webp"]  # steps that share a frame each carry it
    assert {tuple(sorted(s)) for s in steps} == {tuple(sorted(STEP_KEYS))}  # uniform samples
    assert all(s["task"] is None and s["element"] is None for s in steps)
    assert (typed["x"], typed["dx"], typed["keys"], click["text"], click["keys"]) == (
        None,
        None,
        [],
        None,
        [],
    )
    for step in steps:
        assert step["t_start_ns"] <= step["t_end_ns"]
        assert all(step["t_start_ns"] <= events[i]["t_ns"] <= step["t_end_ns"] for i in step["events"])
    assert all(e["k"] != "frame" for e in events) and all("data" not in f for f in frames)


def test_no_secret_and_no_name_of_this_computer_in_any_byte(
    consented: Consented, session: str, study_file: Path, tmp_path: Path
) -> None:
    res = _export(consented, session, tmp_path)
    blob = res.path.read_bytes()
    tar_bytes = decrypt(blob, [_identity(study_file)])
    for needle in (SECRET, "lab-pc-7", "adalove", "/home/adalove", "02:42:ac:11:00:02"):
        assert needle.encode() not in blob and needle.encode() not in tar_bytes, needle
    for ch in "@.":  # no key code of the address's characters spells it either
        assert f'"vk":{ord(ch)}'.encode() not in tar_bytes
    members = _members(tar_bytes, session)
    events = [json.loads(line) for line in members["events.jsonl"].splitlines()]
    titles = [e["title"] for e in events if e["k"] == "window_focus" and e["title"]]
    assert titles[-2:] == ["Inbox - [EMAIL]", "[USER_NAME]@[HOSTNAME]: [HOME_PATH]/src ([MAC_ADDRESS])"]
    manifest = json.loads(members["manifest.json"])
    assert manifest["redaction"]["counts"]["titles"] == {
        "EMAIL": 1,
        "HOME_PATH": 1,
        "HOSTNAME": 1,
        "MAC_ADDRESS": 1,
        "USER_NAME": 1,
    }
    assert {r["name"] for r in manifest["redaction"]["redactors"]} >= {"detectors", "local-names"}


def test_this_computers_real_names_are_redacted(
    consented: Consented, study_file: Path, tmp_path: Path
) -> None:
    """Without stand-ins: the hostname and home path the agent reads itself."""
    d, study = consented
    host = socket.gethostname()
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    rec.start()
    backend.focus_window(f"shell on {host} in {Path.home()}", "XTerm")
    _frames_written(rec, 1)
    rec.stop()
    res = export_session(d, str(rec.session_id), tmp_path, study, approve=True)
    tar_bytes = decrypt(res.path.read_bytes(), [_identity(study_file)])
    assert f"on {host} in".encode() not in tar_bytes and b"on [HOSTNAME] in" in tar_bytes
    if str(Path.home()) != "/":
        assert str(Path.home()).encode() not in tar_bytes


# webdataset 1.0.2 leaves the shard file open when the iteration ends (its tariterators.py)
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_bundle_loads_with_the_webdataset_library(
    consented: Consented, session: str, study_file: Path, tmp_path: Path
) -> None:
    try:
        import webdataset as wds
    except ImportError:
        unavailable("the webdataset library (pip install -e '.[test]')")
    res = _export(consented, session, tmp_path)
    tar_path = tmp_path / "bundle.tar"  # the collector's decrypted copy (synthetic content)
    tar_path.write_bytes(decrypt(res.path.read_bytes(), [_identity(study_file)]))
    loader = wds.WebDataset(str(tar_path), shardshuffle=False).decode("pil")
    samples = list(loader.select(lambda s: "action" in s.get("json", {})))
    assert [s["json"]["action"] for s in samples] == ["type", "key", "click"]
    assert [s["__key__"] for s in samples] == [f"{session}/{n:06d}" for n in range(3)]
    assert all(s["webp"].size == DEFAULT_SCREEN_SIZE for s in samples)


def test_only_the_study_key_decrypts(consented: Consented, session: str, tmp_path: Path) -> None:
    res = _export(consented, session, tmp_path)
    with pytest.raises(Exception, match=r"(?i)decrypt|identity|no matching"):
        decrypt(res.path.read_bytes(), [x25519.Identity.generate()])


def test_withdrawn_consent_blocks_export(consented: Consented, session: str, tmp_path: Path) -> None:
    d, _study = consented
    consent.withdraw(d)
    with pytest.raises(ConsentRequired, match="not in force"):
        _export(consented, session, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_recipient_is_a_usage_error(consented: Consented, session: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not an age public key"):
        _export(consented, session, tmp_path, recipients=["age1notakey"])


# -- approval -------------------------------------------------------------------------------------


def test_export_needs_an_approval_of_the_session_as_it_is(
    consented: Consented, session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d, _study = consented
    assert cli.main(["export", session, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "was not approved" in err and f"optin review {session}" in err and "--approve" in err
    assert not (tmp_path / "out").exists()
    assert approval.state(d, session) == "not approved"

    assert cli.main(["export", session, "--out", str(tmp_path / "out"), "--approve"]) == 0
    out = capsys.readouterr().out
    assert f"approving {session}" in out and "3 steps" in out and "click 1, key 1, type 1" in out
    assert approval.state(d, session) == "approved"
    assert cli.main(["export", session, "--out", str(tmp_path / "again")]) == 0  # approved: no flag needed
    record = approval.load(d, session)
    assert [e["bundle"] for e in record["exports"]] == [f"{session}.optin.tar.age"] * 2
    assert cli.main(["sessions"]) == 0
    assert "approved, exported 2x" in capsys.readouterr().out  # exported sessions are marked
    assert cli.main(["sessions", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["review"]["approval"] == "approved" and row["review"]["exports"] == 2
    assert str(tmp_path) not in json.dumps(record)  # no directory names in the local record

    start = min(e.t_ns for e in _events(d, session))
    cut_session(d, session, [(start + 1, start + 2)], keys.load_identity(d), keys.load_recipient(d))
    assert approval.state(d, session) == "changed"
    assert cli.main(["export", session, "--out", str(tmp_path / "out")]) == 2
    assert "changed since it was approved" in capsys.readouterr().err


def test_a_changed_redaction_policy_needs_a_new_approval(
    consented: Consented, session: str, tmp_path: Path
) -> None:
    import dataclasses

    d, study = consented
    _export(consented, session, tmp_path)
    stricter = dataclasses.replace(study, redaction_typed_text="drop")
    consent.grant(d, stricter, stricter.terms_sha256)  # the volunteer agreed to the new terms
    with pytest.raises(approval.NotApproved, match="changed since"):
        export_session(d, session, tmp_path, stricter)


def test_no_export_under_terms_the_volunteer_did_not_agree_to(
    consented: Consented, session: str, tmp_path: Path
) -> None:
    """P1/P6: a study file whose recipient changed since consent exports nothing until agreed to."""
    import dataclasses

    d, study = consented
    other = str(x25519.Identity.generate().to_public())
    swapped = dataclasses.replace(study, recipients=(other,))
    with pytest.raises(ConsentRequired, match="who can read exports"):
        export_session(d, session, tmp_path, swapped, approve=True, local=LOCAL)
    assert not list(tmp_path.glob("*.optin.tar.age"))


def test_the_study_decides_whether_an_exported_session_stays(
    consented: Consented, session: str, tmp_path: Path
) -> None:
    import dataclasses

    d, study = consented
    deleting = dataclasses.replace(study, retention_after_export="delete")
    consent.grant(d, deleting, deleting.terms_sha256)
    res = export_session(
        d,
        session,
        tmp_path,
        deleting,
        approve=True,
        local=LOCAL,
    )
    assert res.deleted_locally and res.path.exists()
    assert session not in [i.id for i in list_sessions(d)]


def test_cli_export_json(
    consented: Consented, session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["export", session, "--out", str(tmp_path), "--approve", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["session"] == session and Path(row["path"]).exists() and row["frames"] == 2
    assert row["steps"] == 3 and row["approved"]["by_action"] == {"click": 1, "key": 1, "type": 1}
    assert cli.main(["export", "20000101T000000Z-deadbeef", "--out", str(tmp_path), "--approve"]) == 1
    assert "optin sessions" in capsys.readouterr().err


def _events(d: Dirs, session: str) -> list[Event]:
    from agent.store.reader import read_session

    return read_session(d, session, keys.load_identity(d)).events


def test_loss_counts_pauses_and_cuts() -> None:
    events = [
        Marker(0, "session_start", {}),
        Marker(1_000_000_000, "pause", {}),
        Marker(3_000_000_000, "resume", {}),
        Marker(4_000_000_000, "cut", {"from_ns": 4_000_000_000, "to_ns": 4_500_000_000}),
        Marker(5_000_000_000, "pause", {}),
        Marker(6_000_000_000, "session_stop", {"loss": {"events": 2, "pastes_lost": 1}}),
    ]
    found = bundle.loss(events, ["a crash tail"], 1)
    assert found["pauses"] == 2 and found["paused_s"] == 3.0
    assert found["cuts"] == 1 and found["cut_s"] == 0.5
    assert found["dropped_events"] == 2 and found["pastes_lost"] == 1 and found["clean_stop"] is True
    assert found["frames_left_out_ocr_failed"] == 1 and found["store_problems"] == ["a crash tail"]
    assert bundle.loss(events[:3], [], 0)["clean_stop"] is False


def test_export_refuses_without_the_ocr_the_study_requires(
    consented: Consented,
    session: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    monkeypatch.setattr(TesseractOcr, "find", classmethod(lambda cls: None))
    assert cli.main(["export", session, "--out", str(tmp_path / "out"), "--approve"]) == 2
    err = capsys.readouterr().err
    assert "requires OCR" in err and "apt-get install tesseract-ocr" in err
    assert not (tmp_path / "out").exists()  # fail closed: nothing written


def test_what_export_writes_is_what_inspect_accepts(
    consented: Consented, session: str, study_file: Path, tmp_path: Path
) -> None:
    from agent.export import inspect

    res = _export(consented, session, tmp_path)
    identities = inspect.load_identity_file(study_file.parent / "study-identity.txt")
    opened = inspect.open_bundle(res.path, identities)
    summary = inspect.summarise(opened)
    assert summary["session"] == session and summary["signature"] == "valid"
    assert summary["steps"] == {"count": 3, "by_action": {"click": 1, "key": 1, "type": 1}}
    assert summary["frames"] == 2
    where = inspect.unpack(opened, tmp_path / "dataset")
    assert (where / "manifest.sig").read_bytes() == opened.signature


def test_an_approval_notices_a_rewritten_segment_of_the_same_size(consented: Consented, session: str) -> None:
    d, _study = consented
    approval.approve(d, session, "policy", {})
    assert approval.state(d, session, "policy") == "approved"
    assert approval.state(d, session, "another policy") == "changed"
    seg = sorted((d.sessions / session).glob("*.seg"))[0]
    blob = bytearray(seg.read_bytes())
    blob[100] ^= 0xFF  # inside the wrapped key: same name, same size
    seg.write_bytes(bytes(blob))
    assert approval.state(d, session, "policy") == "changed"


def test_the_volunteer_can_see_the_id_their_bundles_carry(
    consented: Consented, session: str, study_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = _export(consented, session, tmp_path)
    members = _members(decrypt(res.path.read_bytes(), [_identity(study_file)]), session)
    in_bundle = json.loads(members["manifest.json"])["volunteer"]["id"]
    assert cli.main(["keys", "show", "--volunteer-id"]) == 0
    assert f"volunteer id:  {in_bundle} (study " in capsys.readouterr().out
    assert cli.main(["keys", "show", "--volunteer-id", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["volunteer"]
    assert shown["id"] == in_bundle
    # the id of the volunteer's optin-bundle/1 bundles, for a withdrawal that covers them too
    d, study = consented
    assert shown["v1_id"] == signing.v1_volunteer_id(keys.load_identity(d), study.id) != in_bundle


def test_a_paused_and_cut_session_exports_what_inspect_recomputes(
    consented: Consented, study_file: Path, tmp_path: Path
) -> None:
    """Pauses, a cut and redactions: every count the manifest states, the collector recomputes."""
    from agent.export import inspect

    d, study = consented
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    rec.start()
    _frames_written(rec, 1)
    fake = hooks_of(backend)
    for ch in f"to:{SECRET} ":
        fake.emit(KeyPress(now_ns(), ch, None, ord(ch), ()))
        fake.emit(KeyRelease(now_ns(), ch, None, ord(ch), ()))
    rec.pause()
    time.sleep(0.05)
    rec.resume()
    fake = hooks_of(backend)  # resume makes new listeners
    fake.emit(ButtonPress(now_ns(), 3, 4, "left"))
    fake.emit(ButtonRelease(now_ns(), 3, 4, "left"))
    rec.stop()
    session = str(rec.session_id)
    clicks = [e.t_ns for e in _events(d, session) if isinstance(e, (ButtonPress, ButtonRelease))]
    cut_session(d, session, [(min(clicks), max(clicks) + 1)], keys.load_identity(d), keys.load_recipient(d))
    res = _export(consented, session, tmp_path)
    opened = inspect.open_bundle(
        res.path, inspect.load_identity_file(study_file.parent / "study-identity.txt")
    )
    loss = opened.manifest["loss"]
    assert loss["pauses"] == 1 and loss["paused_s"] > 0 and loss["cuts"] == 1 and loss["clean_stop"] is True
    assert opened.manifest["redaction"]["counts"]["typed"] == {"EMAIL": 1}
    assert opened.manifest["counts"]["redacted"] == 1 and opened.id_verified


def test_the_bundle_is_signed_for_the_study_of_its_consent(consented: Consented, session: str) -> None:
    d, study = consented
    prepared = bundle.prepare(d, session, study, keys.load_identity(d), local=LOCAL)
    with pytest.raises(ExportError, match="consent to another study than 'other-study'"):
        bundle.build_tar(prepared, keys.load_identity(d), "other-study")


def test_a_bundle_is_encrypted_to_at_most_63_recipients(
    consented: Consented, session: str, tmp_path: Path
) -> None:
    many = [str(x25519.Identity.generate().to_public()) for _ in range(64)]
    with pytest.raises(UsageError, match="at most 63 recipients, not 64"):
        _export(consented, session, tmp_path / "out", recipients=many)
    assert not (tmp_path / "out").exists()
