"""Export: redacted, encrypted to the study's key alone, self-describing; the collector-side
check rejects anything the manifest does not vouch for."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import pytest
from pyrage import decrypt, x25519

from agent import cli, consent
from agent.backends import select_backend
from agent.control import Recorder
from agent.errors import ConsentRequired, ExportError, UsageError
from agent.events import ButtonPress, KeyPress, PointerMove, now_ns
from agent.export.bundle import export_session
from agent.export.inspect import read_bundle_tar
from tests.unit.test_recorder import paint_and_wait_for_a_grab

SECRET = "alice.canary@example.com"  # noqa: S105 - a canary the detectors know (an e-mail address)


@pytest.fixture
def session(consented) -> str:
    d, study = consented
    backend = select_backend("fake")
    rec = Recorder(d, backend, study)
    rec.start()
    _frames_written(rec, 1)  # the start frame, before the click asks for another
    backend.focus_window(f"Inbox - {SECRET}", "Thunderbird")
    for ch in f"to:{SECRET}":
        backend.last_input.emit(KeyPress(now_ns(), ch, None, ord(ch), ()))
    backend.last_input.emit(KeyPress(now_ns(), None, "enter", 65293, ()))
    paint_and_wait_for_a_grab(backend)
    backend.last_input.emit(PointerMove(now_ns(), 3, 4))
    backend.last_input.emit(ButtonPress(now_ns(), 3, 4, "left"))
    _frames_written(rec, 2)
    rec.stop()
    return str(rec.session_id)


def _frames_written(rec: Recorder, n: int) -> None:
    deadline = time.monotonic() + 5
    while rec.counters.by_kind.get("frame", 0) < n:
        assert time.monotonic() < deadline, "frames were not written"
        time.sleep(0.005)


def _identity(study_file: Path) -> x25519.Identity:
    return x25519.Identity.from_str((study_file.parent / "study-identity.txt").read_text().strip())


def test_bundle_is_redacted_encrypted_and_complete(
    consented, session: str, study_file: Path, tmp_path: Path
) -> None:
    d, study = consented
    res = export_session(d, session, tmp_path / "out", study)
    assert res.path.name == f"{session}.optin.tar.age"
    blob = res.path.read_bytes()
    assert blob.startswith(b"age-encryption.org/v1\n")
    assert SECRET.encode() not in blob
    tar_bytes = decrypt(blob, [_identity(study_file)])
    assert SECRET.encode() not in tar_bytes  # redacted before encryption, not only encrypted
    for ch in "@.":  # no key code of the address's characters spells it either
        assert f'"vk":{ord(ch)}'.encode() not in tar_bytes
    manifest, members = read_bundle_tar(tar_bytes)
    assert manifest["schema"] == "optin-bundle/0"
    assert manifest["session"] == session
    assert manifest["consent"]["text_sha256"] == study.text_sha256
    redaction = manifest["redaction"]
    assert redaction["counts"]["typed"] == {"EMAIL": 1}
    assert set(redaction["counts"]["titles"]) == {"EMAIL"}
    assert redaction["frames_masked_by_ocr"] is True
    assert redaction["policy"]["ocr"] == "required" and len(redaction["policy_sha256"]) == 64
    assert manifest["counts"]["key_press"] == len("to:") + 1 and manifest["counts"]["redacted"] == 1
    assert manifest["loss"] == {
        "dropped_events": 0,
        "frame_failures": 0,
        "frames_skipped": 0,
        "pastes_lost": 0,
        "clean_stop": True,
        "store_problems": [],
    }
    assert set(members) == {"events.jsonl", "frames.jsonl", "frames/000000.webp", "frames/000001.webp"}
    events = [json.loads(line) for line in members["events.jsonl"].decode().splitlines()]
    enter = [e for e in events if e["k"] == "key_press" and e["name"] == "enter"]
    assert enter and enter[0]["vk"] == 65293  # special keys survive for training
    assert "".join(e["char"] or "" for e in events if e["k"] == "key_press") == "to:"
    assert [e["entity"] for e in events if e["k"] == "redacted"] == ["EMAIL"]
    titles = [e["title"] for e in events if e["k"] == "window_focus" and e["title"]]
    assert titles == ["Fake window", "Inbox - [EMAIL]"]
    home = str(Path.home()).encode()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        assert all(name.startswith(f"{session}/") for name in tar.getnames())
    assert home not in tar_bytes or home == b"/"


def test_only_the_study_key_decrypts(consented, session: str, tmp_path: Path) -> None:
    d, study = consented
    res = export_session(d, session, tmp_path, study)
    with pytest.raises(Exception, match=r"(?i)decrypt|identity|no matching"):
        decrypt(res.path.read_bytes(), [x25519.Identity.generate()])


def test_withdrawn_consent_blocks_export(consented, session: str, tmp_path: Path) -> None:
    d, study = consented
    consent.withdraw(d)
    with pytest.raises(ConsentRequired, match="not in force"):
        export_session(d, session, tmp_path / "out", study)
    assert not (tmp_path / "out").exists()


def test_bad_recipient_is_a_usage_error(consented, session: str, tmp_path: Path) -> None:
    d, study = consented
    with pytest.raises(UsageError, match="not an age public key"):
        export_session(d, session, tmp_path, study, ["age1notakey"])


def test_cli_export_json(consented, session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", session, "--out", str(tmp_path), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["session"] == session and Path(row["path"]).exists() and row["frames"] == 2
    assert cli.main(["export", "20000101T000000Z-deadbeef", "--out", str(tmp_path)]) == 1
    assert "optin sessions" in capsys.readouterr().err


# -- collector side: tries to break the manifest check ------------------------------------------


def _retar(tar_bytes: bytes, edit) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else b""
            for new_info, new_data in edit(info, data):
                dst.addfile(new_info, io.BytesIO(new_data) if new_info.isfile() else None)
    return out.getvalue()


@pytest.fixture
def tar_bytes(consented, session: str, study_file: Path, tmp_path: Path) -> bytes:
    d, study = consented
    res = export_session(d, session, tmp_path, study)
    return decrypt(res.path.read_bytes(), [_identity(study_file)])


def _flip_frame(info, data):
    if info.name.endswith("000001.webp"):
        data = data[:-1] + bytes([data[-1] ^ 1])
    yield info, data


def _add_unlisted(info, data):
    yield info, data
    if info.name.endswith("manifest.json"):
        extra = tarfile.TarInfo(info.name.replace("manifest.json", "extra.bin"))
        extra.size = 3
        yield extra, b"abc"


def _traversal(info, data):
    if info.name.endswith("events.jsonl"):
        info.name = "../events.jsonl"
    yield info, data


def _symlink(info, data):
    if info.name.endswith("frames.jsonl"):
        link = tarfile.TarInfo(info.name)
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        yield link, b""
        return
    yield info, data


def _drop_member(info, data):
    if not info.name.endswith("events.jsonl"):
        yield info, data


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_flip_frame, "SHA-256"),
        (_add_unlisted, "unlisted"),
        (_traversal, "unsafe path"),
        (_symlink, "not a regular file"),
        (_drop_member, "missing"),
    ],
    ids=["flipped-bit", "unlisted-member", "path-traversal", "symlink", "missing-member"],
)
def test_inspect_rejects_tampered_bundles(tar_bytes: bytes, edit, message: str) -> None:
    read_bundle_tar(tar_bytes)  # the original passes
    with pytest.raises(ExportError, match=message):
        read_bundle_tar(_retar(tar_bytes, edit))


def test_inspect_rejects_garbage() -> None:
    with pytest.raises(ExportError, match="not a valid tar"):
        read_bundle_tar(b"\x00garbage" * 100)


def test_export_refuses_without_the_ocr_the_study_requires(
    consented,
    session: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent.export import bundle

    monkeypatch.setattr(bundle.TesseractOcr, "find", classmethod(lambda cls: None))
    assert cli.main(["export", session, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "requires OCR" in err and "apt-get install tesseract-ocr" in err
    assert not (tmp_path / "out").exists()  # fail closed: nothing written
