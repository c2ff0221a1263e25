"""Redaction benchmarks: detection, typed-text reconstruction, masking and OCR, beside bare baselines.

``python -m tests.benchmarks.redaction`` (part of ``make bench``).  Each row puts optin's
number beside the bare library doing the least comparable work in the same run:

* detection: optin's detectors over the corpus's code and prose lines, beside one bare
  ``re`` e-mail pattern over the same text (the cheapest possible scan);
* reconstruction: ``agent.keyboard.replay.reconstruct`` over a long typing stream, beside a bare
  loop that appends each press's character; then the whole typed-text redaction;
* masking: filling 20 boxes and re-encoding a 1080p frame, beside the encode alone;
* OCR: the tesseract command on a whole rendered 1080p frame (one thread, no preparation),
  beside optin's first-frame read (inverted dark regions, 2x) and its read of a frame where
  one text line changed (changed bands only).
"""

from __future__ import annotations

import io
import os
import platform
import random
import re
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from agent.events import KeyPress, KeyRelease, WindowFocus

CORPUS = Path(__file__).resolve().parents[1] / "redaction" / "corpus" / "negatives"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"


def _row(name: str, bare: str, ours: str, ratio: float | None) -> None:
    shown = f"{ratio:>8.2f}x" if ratio is not None else ""
    print(f"{name:<40} {bare:>20} {ours:>20} {shown}")


def _best(fn: Callable[[], Any], n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_detection() -> None:
    from agent.redact import detectors

    lines: list[str] = []
    for name in ("code.txt", "prose.txt"):
        path = CORPUS / name
        if path.exists():
            lines += path.read_text(encoding="utf-8").splitlines()
    if not lines:
        print("detection: no corpus found under tests/redaction/corpus/negatives")
        return
    chars = sum(len(line) + 1 for line in lines)
    text = "\n".join(lines)
    email = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
    bare = _best(lambda: sum(1 for _ in email.finditer(text)))
    ours = _best(lambda: sum(len(s) for s in detectors.detect_lines(lines)))
    _row(
        "detection, code+prose (M chars/s)",
        f"{chars / bare / 1e6:.2f}",
        f"{chars / ours / 1e6:.2f}",
        ours / bare,
    )


def typing_stream(n_chars: int, seed: int = 3) -> list[Any]:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    events: list[Any] = [WindowFocus(0, "notes.txt - gedit", "Gedit", 1)]
    t = 1
    alphabet = string.ascii_letters + string.digits + "@.-_"
    for i in range(n_chars):
        t += 1
        if i % 60 == 59:
            events.append(KeyPress(t, None, "enter", 65293, ()))
            events.append(KeyRelease(t + 1, None, "enter", 65293, ()))
        elif rng.random() < 0.15:
            events.append(KeyPress(t, None, "space", 32, ()))
            events.append(KeyRelease(t + 1, None, "space", 32, ()))
        elif rng.random() < 0.03:
            events.append(KeyPress(t, None, "backspace", 65288, ()))
            events.append(KeyRelease(t + 1, None, "backspace", 65288, ()))
        else:
            ch = rng.choice(alphabet)
            events.append(KeyPress(t, ch, None, ord(ch), ()))
            events.append(KeyRelease(t + 1, ch, None, ord(ch), ()))
        t += 1
    return events


def bench_reconstruction() -> None:
    from collections import Counter

    from agent.keyboard import replay
    from agent.redact import policy

    events = typing_stream(200_000)
    n = len(events)

    def bare() -> str:
        return "".join(e.char for e in events if type(e) is KeyPress and e.char)

    b = _best(bare)
    ours = _best(lambda: replay.reconstruct(events))
    _row("reconstruction (M events/s)", f"{n / b / 1e6:.2f}", f"{n / ours / 1e6:.2f}", ours / b)
    counts: dict[str, Counter[str]] = {w: Counter() for w in ("typed", "paste")}
    full = _best(lambda: policy.redact_typing(events, counts), n=1)
    _row("typed-text redaction (k events/s)", f"{n / b / 1e3:.0f}", f"{n / full / 1e3:.0f}", full / b)


def screen(changed: bool = False) -> Image.Image:
    """A 1080p frame: a light editor, a dark terminal and small grey print, all text."""
    img = Image.new("RGB", (1920, 1080), (245, 245, 245))
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, 14)
    small = ImageFont.truetype(FONT, 11)
    rng = random.Random(5)  # noqa: S311 - reproducible test data
    words = ["config", "import", "return", "value", "server", "update", "client", "session", "export"]
    for i in range(30):
        line = " ".join(rng.choice(words) for _ in range(8))
        if i == 7:
            line = "contact: alice.canary@example.com  card 4111 1111 1111 1111"
        draw.text((20, 20 + 22 * i), line, fill=(20, 20, 20), font=font)
    draw.rectangle((980, 0, 1919, 700), fill=(30, 30, 30))
    for i in range(28):
        line = f"$ git log --oneline {i:03d} " + " ".join(rng.choice(words) for _ in range(5))
        draw.text((1000, 20 + 22 * i), line, fill=(220, 220, 220), font=font)
    for i in range(10):
        draw.text((20, 760 + 18 * i), "small print " * 12, fill=(120, 120, 120), font=small)
    if changed:
        draw.text((20, 20 + 22 * 31), "a new line typed: bob@example.org", fill=(20, 20, 20), font=font)
    return img


def bench_masking() -> None:
    from agent.frame_codec import encode_image
    from agent.redact.screen import apply_boxes

    img = screen()
    boxes = [(20 + 40 * i, 100 + 30 * i, 200 + 40 * i, 120 + 30 * i) for i in range(20)]
    bare = _best(lambda: encode_image(img))
    ours = _best(lambda: encode_image(apply_boxes(img, boxes)))
    _row("mask 20 boxes + encode (ms/frame)", f"{bare * 1e3:.0f}", f"{ours * 1e3:.0f}", ours / bare)


def bench_ocr() -> None:
    from agent.redact.screen import TesseractOcr

    engine = TesseractOcr.find(cache=0)  # no reuse of words read before: each best-of run reads again
    if engine is None or shutil.which("tesseract") is None:
        print("OCR: tesseract with English data is not installed (apt-get install tesseract-ocr)")
        return
    with engine:
        _bench_ocr(engine)


def _bench_ocr(engine: Any) -> None:
    from agent.redact import detectors
    from agent.redact.screen import mask_plan

    first, second = screen(), screen(changed=True)
    buf = io.BytesIO()
    first.save(buf, format="PNG", compress_level=1)
    png = buf.getvalue()
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    def bare() -> None:
        subprocess.run(
            ["tesseract", "stdin", "stdout", "tsv"], input=png, capture_output=True, env=env, check=True
        )

    b = _best(bare, n=2)
    full = _best(lambda: mask_plan(None, (), first, ocr=engine, detect=detectors.detect), n=2)
    plan = mask_plan(None, (), first, ocr=engine, detect=detectors.detect)
    part = _best(lambda: mask_plan(first, plan.boxes, second, ocr=engine, detect=detectors.detect), n=2)
    _row("OCR whole 1080p frame (ms)", f"{b * 1e3:.0f}", f"{full * 1e3:.0f}", full / b)
    _row("OCR one changed line (ms)", f"{b * 1e3:.0f}", f"{part * 1e3:.0f}", part / b)
    print(f"  (optin masked {len(plan.boxes)} word boxes on the first frame: {sorted(plan.counts.items())})")


def main() -> int:
    print(
        f"optin redaction benchmarks — {platform.platform()}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(f"{'benchmark':<40} {'bare':>20} {'optin':>20} {'ratio':>9}")
    bench_detection()
    bench_reconstruction()
    bench_masking()
    bench_ocr()
    return 0


if __name__ == "__main__":
    sys.exit(main())
