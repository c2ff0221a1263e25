"""End to end on a real X display, the whole way a demonstration travels:

a scripted session in an xterm (a click, secrets typed and left visible on screen, Enter, a
scroll, a hotkey, a click) → the volunteer approves it in the review window → ``optin export``
→ the Debian ``age`` command decrypts it with the study's identity → the ``webdataset`` library
loads the samples.  The secrets appear in no byte of any member nor in any text OCR reads from
the exported frames; the steps are the scripted actions; ``optin inspect`` accepts the bundle and
refuses a modified one; ``optin unpack`` writes exactly the members.

The stored (unredacted) session is read too, as the control: there the secrets must be found,
by the same OCR — otherwise this test could not fail.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from agent.backends import select_backend
from agent.backends.virtual_display import VirtualDisplay, wait_for
from agent.control import Recorder
from agent.events import Frame, KeyPress
from agent.paths import Dirs
from agent.redact.screen import TesseractOcr, canonical, lines
from agent.store import keys
from agent.store.reader import read_session
from agent.study import Study
from tests.tools import Consented, require_tool, unavailable

SECRETS = {
    "EMAIL": "alice.canary@example.com",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "GITHUB_TOKEN": "ghp_R8x2Lq7Vw3Nz5Kp1Tb9Yc4Hd6Mf0Sg2Ja7Ue",
}
#: The scripted actions, as steps (docs/export-format.md).
EXPECTED_ACTIONS = ["click", "type", "key", "scroll", "hotkey", "click"]


def _compact(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def _screen_text(engine: TesseractOcr, data: bytes) -> str:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return "\n".join(line.text for line in lines(engine(image, [(0, 0, *image.size)])))


def _changed_share(before: bytes, after: bytes) -> float:
    """Share of pixels that differ between two encoded frames of the same size."""
    a = Image.open(io.BytesIO(before)).convert("RGB")
    b = Image.open(io.BytesIO(after)).convert("RGB")
    same = ImageChops.difference(a, b).convert("L").histogram()[0]
    total = a.size[0] * a.size[1]
    return (total - same) / total


def _visible(secret: str, text: str) -> bool:
    """Whether OCR text shows any 8 characters of the secret in a row (case, spaces,
    punctuation and OCR's O/0, I/l/1, S/5, B/8, Z/2 confusions folded)."""
    core, seen = canonical(secret), canonical(text)
    return any(core[i : i + 8] in seen for i in range(len(core) - 7))


def _optin(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=300, check=check
    )


def _record(xdisplay: VirtualDisplay, d: Dirs, study: Study) -> str:
    term = xdisplay.spawn(
        ["xterm", "-T", "e2e-export", "-fa", "DejaVu Sans Mono", "-fs", "13", "-geometry", "90x12+40+40"]
    )
    try:
        assert wait_for(lambda: bool(xdisplay.search("e2e-export")), 10)
        wid = xdisplay.search("e2e-export")[0]
        rec = Recorder(d, select_backend("xorg"), study)
        rec.start()
        try:
            xdisplay.xdotool("windowactivate", "--sync", wid)
            xdisplay.xdotool("mousemove", "--sync", "300", "120")
            xdisplay.xdotool("click", "1")  # click
            time.sleep(0.4)
            xdisplay.xdotool("type", "--delay", "20", "echo " + "  ".join(SECRETS.values()))  # type
            xdisplay.xdotool("key", "Return")  # key
            time.sleep(0.8)
            xdisplay.xdotool("click", "5")  # scroll (down)
            time.sleep(0.6)
            xdisplay.xdotool("key", "ctrl+a")  # hotkey (readline: start of line)
            time.sleep(0.6)
            xdisplay.xdotool("mousemove", "--sync", "420", "150")
            xdisplay.xdotool("click", "1")  # click: its pre-action frame shows the secrets
            time.sleep(1.0)
        finally:
            rec.stop()
        assert rec.state == "stopped", rec.error
    finally:
        term.terminate()
        term.wait()
    return str(rec.session_id)


def _approve(xdisplay: VirtualDisplay, sid: str) -> None:
    """The volunteer approves the session in the review window (as a person would, by keyboard)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "review", sid],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DISPLAY": xdisplay.display},
    )
    try:
        title = f"optin review — {sid}"  # ready when "(loading…)" leaves the title
        assert wait_for(lambda: bool(xdisplay.search(title)), 120), "the review window did not get ready"
        wid = xdisplay.search(title)[0]
        xdisplay.xdotool("windowactivate", "--sync", wid)
        xdisplay.xdotool("key", "alt+a")
        from agent.export import approval
        from agent.paths import dirs

        assert wait_for(lambda: approval.state(dirs(), sid) == "approved", 20)
        xdisplay.xdotool("key", "Escape")
        assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# webdataset 1.0.2 leaves the shard file open when the iteration ends (its tariterators.py)
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_session_travels_from_the_screen_to_a_training_set(
    xdisplay: VirtualDisplay, consented: Consented, study_file: Path, tmp_path: Path
) -> None:
    require_tool("age", "tesseract", hint="apt-get install age tesseract-ocr tesseract-ocr-eng")
    try:
        import webdataset as wds
    except ImportError:
        unavailable("the webdataset library (pip install -e '.[test]')")
    d, study = consented
    sid = _record(xdisplay, d, study)

    stored = read_session(d, sid, keys.load_identity(d)).events
    typed = "".join(e.char or (" " if e.name == "space" else "") for e in stored if isinstance(e, KeyPress))
    assert all(s in typed for s in SECRETS.values())  # the control: the store holds them
    engine = TesseractOcr.find()
    assert engine is not None
    raw_frames = [e for e in stored if isinstance(e, Frame)]
    raw_text = "\n".join(_screen_text(engine, f.data) for f in raw_frames)
    for name, secret in SECRETS.items():  # the control: OCR reads each one on the raw screen
        assert _visible(secret, raw_text), f"control: OCR does not read the {name} on the stored screen"

    refused = _optin("export", sid, "--out", str(tmp_path / "out"), check=False)
    assert refused.returncode == 2 and "was not approved" in refused.stderr
    _approve(xdisplay, sid)
    _optin("export", sid, "--out", str(tmp_path / "out"))
    bundle = tmp_path / "out" / f"{sid}.optin.tar.age"

    identity = tmp_path / "study-identity.txt"
    tar_path = tmp_path / "bundle.tar"
    with tar_path.open("wb") as out:  # the Debian age command, as a collector would
        subprocess.run(["age", "-d", "-i", str(identity), str(bundle)], stdout=out, check=True, timeout=60)
    tar_bytes = tar_path.read_bytes()

    # no secret in any byte of any member
    flat = _compact(tar_bytes.decode("latin-1"))
    for name, secret in SECRETS.items():
        assert secret.encode() not in tar_bytes, name
        assert _compact(secret) not in flat, name
    with tarfile.open(tar_path) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    text_members = b"\n".join(v for k, v in members.items() if k.endswith((".json", ".jsonl")))
    for name in {socket.gethostname(), str(Path.home())} - {"/"}:  # nor this computer's names
        assert f'"{name}'.encode() not in text_members and f"{name}@".encode() not in text_members

    # the samples load with webdataset, and the steps are the scripted actions
    samples = list(
        wds.WebDataset(str(tar_path), shardshuffle=False)
        .decode("pil")
        .select(lambda s: "action" in s.get("json", {}))
    )
    actions = [s["json"]["action"] for s in samples]
    assert actions == EXPECTED_ACTIONS, actions
    first_click, typed_step, enter, scroll, hotkey, last_click = (s["json"] for s in samples)
    assert (first_click["x"], first_click["y"]) == (300, 120) and (last_click["x"], last_click["y"]) == (
        420,
        150,
    )
    assert typed_step["text"].startswith("echo ") and "[EMAIL]" in typed_step["text"]
    assert "[CREDIT_CARD]" in typed_step["text"] and "[GITHUB_TOKEN]" in typed_step["text"]
    assert enter["keys"] == ["enter"] and hotkey["keys"] == ["ctrl", "a"] and scroll["dy"] < 0
    assert all(s["json"]["window"]["title"] == "e2e-export" for s in samples[1:])
    assert all("webp" in s and s["webp"].size == (xdisplay.width, xdisplay.height) for s in samples)

    # no secret in any text OCR reads from the exported frames; the masks stay local
    frame_rows = [json.loads(line) for line in members["frames.jsonl"].splitlines()]
    exported = [members[row["member"]] for row in frame_rows]
    assert len(exported) == len(raw_frames) > 0
    exported_text = "\n".join(_screen_text(engine, data) for data in exported)
    for name, secret in SECRETS.items():
        assert not _visible(secret, exported_text), f"{name} still readable on an exported frame"
    changed = [_changed_share(raw.data, data) for raw, data in zip(raw_frames, exported, strict=True)]
    assert max(changed) > 0 and max(changed) < 0.1, changed

    # the collector side: inspect accepts it, unpack writes the members, a modified bundle is refused
    summary = json.loads(_optin("inspect", str(bundle), "--identity", str(identity), "--json").stdout)
    assert summary["steps"]["by_action"] == {"click": 2, "hotkey": 1, "key": 1, "scroll": 1, "type": 1}
    assert summary["signature"] == "valid"
    _optin("unpack", str(bundle), "--identity", str(identity), "--out", str(tmp_path / "dataset"))
    unpacked = tmp_path / "dataset" / sid
    assert {str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()} == set(members)
    _check_tampering_is_refused(tar_bytes, members, identity, tmp_path)


def _check_tampering_is_refused(
    tar_bytes: bytes, members: dict[str, bytes], identity: Path, tmp_path: Path
) -> None:
    """Flip one byte of a frame, re-encrypt to the study (as anyone with its public key can): refused."""
    recipient = subprocess.run(
        ["age-keygen", "-y", str(identity)], capture_output=True, text=True, check=True
    ).stdout.strip()
    name = next(n for n in members if n.endswith(".webp"))
    offset = tar_bytes.index(members[name]) + len(members[name]) // 2
    forged = bytearray(tar_bytes)
    forged[offset] ^= 0x01
    plain, sealed = tmp_path / "forged.tar", tmp_path / "forged.optin.tar.age"
    plain.write_bytes(bytes(forged))
    subprocess.run(["age", "-r", recipient, "-o", str(sealed), str(plain)], check=True)
    result = _optin("inspect", str(sealed), "--identity", str(identity), check=False)
    assert result.returncode == 1, result.stderr
    assert name in result.stderr and "SHA-256" in result.stderr.upper().replace("SHA256", "SHA-256")
