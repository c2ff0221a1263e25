"""Export benchmarks: throughput without OCR, and the cost of OCR per frame, beside bare libraries.

``python -m tests.benchmarks.export`` (part of ``make bench``).  A synthetic stored session —
1080p text screens (each a line more than the last, as when someone types), with typing,
clicks and pointer moves between them — is written to a throwaway OPTIN_HOME, then exported:

* without OCR (study ``ocr = "off"``): MB of stored data per second, beside the bare work
  the export cannot avoid — decrypting the same segments (AES-256-GCM, ``cryptography``) and
  age-encrypting a buffer as large as the bundle (``pyrage``);
* with OCR (``ocr = "required"``): milliseconds per frame added over the export without OCR,
  beside the tesseract command reading one whole frame (one thread, no preparation).
"""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import ImageDraw, ImageFont

from agent.events import ButtonPress, ButtonRelease, Event, Frame, KeyPress, KeyRelease, Marker, PointerMove
from tests.benchmarks.redaction import FONT, screen

if TYPE_CHECKING:
    from agent.paths import Dirs
    from agent.study import Study

FRAMES = 60
EVENTS_PER_FRAME = 400


def _row(name: str, bare: str, ours: str, ratio: float | None) -> None:
    """One line; the ratio is optin's throughput over the bare one's, or optin's time over the bare one's."""
    shown = f"{ratio:>8.2f}x" if ratio is not None else ""
    print(f"{name:<44} {bare:>18} {ours:>18} {shown}")


def _session_events() -> list[Event]:
    """Frames of a screen that gains a typed line each time, with the input between them."""
    from agent.frame_codec import encode_image

    rng = random.Random(11)  # noqa: S311 - reproducible data
    font = ImageFont.truetype(FONT, 14)
    img = screen()
    t = 1_000_000_000
    events: list[Event] = [Marker(t, "session_start", {"mono_ns": t, "wall_ns": 0, "consent_sha256": ""})]
    for n in range(FRAMES):
        draw = ImageDraw.Draw(img)
        draw.rectangle((20, 700, 1000, 720), fill=(245, 245, 245))
        draw.text((20, 700), f"line {n}: " + "typed words " * 6, fill=(20, 20, 20), font=font)
        t += 1_000_000
        events.append(Frame(t, 0, 0, 1920, 1080, "webp", "click", encode_image(img)))
        for _ in range(EVENTS_PER_FRAME // 4):
            t += 2_000_000
            x, y = rng.randrange(1920), rng.randrange(1080)
            events.append(PointerMove(t, x, y))
            ch = rng.choice("abcdefghij ")
            events.append(KeyPress(t + 1, ch, None, ord(ch), ()))
            events.append(KeyRelease(t + 2, ch, None, ord(ch), ()))
            events.append(PointerMove(t + 3, x + 1, y))
        events.append(ButtonPress(t + 4, 500, 500, "left"))
        events.append(ButtonRelease(t + 5, 500, 500, "left"))
        t += 10
    events.append(Marker(t + 1, "session_stop", {"loss": {"events": 0}}))
    return events


def _setup(home: Path) -> tuple[Dirs, Study, str, int]:
    """A throwaway OPTIN_HOME with keys, a consented study and the session; (dirs, study, id, bytes)."""
    from agent import consent
    from agent.store import keys
    from agent.store.writer import SessionWriter
    from tests.benchmarks import consented_home

    d, study = consented_home(home)
    receipt = consent.current_receipt(d)
    assert receipt is not None
    events = _session_events()
    start = events[0]
    assert isinstance(start, Marker)
    events[0] = Marker(start.t_ns, "session_start", {**start.detail, "consent_sha256": receipt.text_sha256})
    w = SessionWriter.create(d, keys.load_recipient(d))
    w.write_events(events)
    w.close()
    stored = sum(p.stat().st_size for p in w.path.glob("*.seg"))
    return d, study, w.session_id, stored


def _bare(d: Dirs, sid: str, bundle_bytes: int) -> float:
    """Decrypting the stored segments (the store's own AEAD) + age-encrypting a bundle-sized buffer."""
    from pyrage import encrypt, x25519

    from agent.store import keys
    from agent.store.reader import read_session

    identity = keys.load_identity(d)
    recipient = x25519.Identity.generate().to_public()
    blob = os.urandom(bundle_bytes)
    t0 = time.perf_counter()
    read_session(d, sid, identity)
    encrypt(blob, [recipient])
    return time.perf_counter() - t0


def _export(d: Dirs, study: Study, sid: str, out: Path, ocr: str) -> tuple[float, int]:
    """One export's seconds (the identity's unlock left out: it is timed on its own) and bundle bytes."""
    from unittest import mock

    from agent.export import bundle
    from agent.redact.local_names import LocalNames
    from agent.store import keys
    from tests.benchmarks import consented_home

    identity = keys.load_identity(d)
    _, rules = consented_home(Path(os.environ["OPTIN_HOME"]), ocr=ocr)  # a changed study needs consent again
    with mock.patch.object(keys, "load_identity", lambda _d: identity):
        t0 = time.perf_counter()
        res = bundle.export_session(d, sid, out, rules, approve=True, local=LocalNames())
        return time.perf_counter() - t0, res.bytes


def _unlock_s(d: Dirs) -> float:
    from agent.store import keys

    t0 = time.perf_counter()
    keys.load_identity(d)
    return time.perf_counter() - t0


def main() -> int:
    print(
        f"export benchmarks — {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"session: {FRAMES} frames (1080p text screens) and {FRAMES * (EVENTS_PER_FRAME + 2)} input events")
    _row("", "bare", "optin", None)
    with tempfile.TemporaryDirectory(prefix="optin-bench-export-") as tmp:
        home = Path(tmp)
        d, study, sid, stored = _setup(home)
        mb = stored / 1e6
        plain, bundle_bytes = min(_export(d, study, sid, home / f"out{i}", "off") for i in range(3))
        bare = min(_bare(d, sid, bundle_bytes) for _ in range(3))
        _row(
            f"export without OCR (MB/s of {mb:.1f} MB stored)",
            f"{mb / bare:.1f}",
            f"{mb / plain:.1f}",
            bare / plain,
        )
        print(f"plus, once per export: unlocking the identity (scrypt) {_unlock_s(d):.2f} s")
        print(f"bundle: {bundle_bytes / 1e6:.1f} MB for {mb:.1f} MB stored (each step carries its frame)")
        from agent.redact.screen import TesseractOcr

        if TesseractOcr.find() is None:
            print("OCR rows skipped: tesseract is not installed (apt-get install tesseract-ocr)")
            return 0
        with_ocr, _ = _export(d, study, sid, home / "ocr", "required")
        per_frame = (with_ocr - plain) / FRAMES * 1e3
        png = home / "frame.png"
        screen().save(png)
        t0 = time.perf_counter()
        subprocess.run(
            ["tesseract", str(png), "-", "--psm", "11"],
            capture_output=True,
            check=True,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        )
        whole = (time.perf_counter() - t0) * 1e3
        _row(
            "OCR (ms per frame; bare: one whole frame)", f"{whole:.0f}", f"{per_frame:.0f}", per_frame / whole
        )
        print(f"export with OCR: {with_ocr:.1f} s for {FRAMES} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
