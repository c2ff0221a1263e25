"""Export memory: a streaming export's peak does not grow with the session's length.

``python -m tests.benchmarks.export_memory [HOURS ...]`` (default ``1 8``; not collected by
pytest).  For each length a synthetic stored session is written to a throwaway OPTIN_HOME by the
recorder's own writer — a click every few seconds with its pre-action frame, most frames small
(a text screen's size) and one 1080p-photo-sized frame every half hour — and exported in a child
process of its own, which reports its time and its peak RSS (VmHWM, reset after the volunteer's
key is unlocked: the key's scrypt is not export memory).  Side by side, in the same kind of
child:

* ``in memory``: what export did before it streamed — every frame read, the whole tar built in
  memory (:func:`agent.export.bundle.build_tar`), age-encrypted as one buffer and written;
* ``bare encrypt``: ``pyrage.encrypt`` of a buffer as large as the bundle (the least an
  in-memory export needs) and ``bare encrypt_io``: pyrage streaming that many bytes from a file
  to a file (the least a streaming export needs).

Ratios are optin's time (or peak growth) over the bare one's.  The frames are random bytes
(OCR off: export never decodes them), so the bundle is as large as the frames.
:func:`long_session` and :func:`child_export` also serve tests/unit/test_export_memory.py.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.benchmarks import consented_home, run_child

assert sys.platform != "win32", "POSIX only (/proc, os.pread, resource)"  # mypy: not checked as win32

if TYPE_CHECKING:
    from agent.paths import Dirs

S = 1_000_000_000
#: A click (and its pre-action frame) every this many seconds.
CLICK_EVERY_S = 4.0
#: A small frame's size (a 1080p text screen is ~63 KiB; many screens change less).
SMALL_FRAME = 24_000
#: A photo-heavy 1080p frame's size, one every :data:`BIG_EVERY_S`.
BIG_FRAME = 1_700_000
BIG_EVERY_S = 1800.0


def long_session(
    d: Dirs,
    hours: float,
    *,
    click_every_s: float = CLICK_EVERY_S,
    small: int = SMALL_FRAME,
    big: int = BIG_FRAME,
    big_every_s: float = BIG_EVERY_S,
) -> tuple[str, int, int]:
    """Write a session of ``hours`` to ``d``'s store: (its id, frames, stored bytes).

    Events are written as the recorder writes them, a few at a time, so memory stays flat here too.
    """
    from agent import consent
    from agent.events import ButtonPress, ButtonRelease, Frame, Marker, PointerMove
    from agent.store import keys
    from agent.store.writer import SessionWriter

    receipt = consent.current_receipt(d)
    if receipt is None:
        msg = "no consent in force in this OPTIN_HOME"
        raise RuntimeError(msg)
    t = 10**12
    w = SessionWriter.create(d, keys.load_recipient(d))
    w.write_events(
        [Marker(t, "session_start", {"mono_ns": t, "wall_ns": 0, "consent_sha256": receipt.text_sha256})]
    )
    frames = 0
    next_big = 0.0
    elapsed = 0.0
    while elapsed < hours * 3600:
        is_big = elapsed >= next_big
        if is_big:
            next_big += big_every_s
        t += int(click_every_s * S)
        elapsed += click_every_s
        data = os.urandom(big if is_big else small)
        x, y = frames % 1900, (frames * 7) % 1000
        w.write_events(
            [
                Frame(t - 30_000_000, 0, 0, 1920, 1080, "webp", "click", data),
                PointerMove(t - 10_000_000, x, y),
                ButtonPress(t, x, y, "left"),
                ButtonRelease(t + 60_000_000, x, y, "left"),
            ]
        )
        frames += 1
        w.flush()
    w.write_events([Marker(t + S, "session_stop", {"loss": {"events": 0}})])
    w.close()
    stored = sum(p.stat().st_size for p in w.path.glob("*.seg"))
    return w.session_id, frames, stored


def _hwm_kib() -> int:
    """This process's peak RSS in KiB (VmHWM, which :func:`_reset_hwm` resets; else ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _child(mode: str, session: str, out: str, size: int) -> dict[str, Any]:
    """One measured run in this (fresh) process: ``stream``, ``memory``, ``bare`` or ``bare_io``."""
    import gc

    from pyrage import encrypt, encrypt_io, x25519

    from agent.export import bundle
    from agent.paths import dirs
    from agent.redact.local_names import LocalNames
    from agent.store import keys
    from agent.study import installed_study

    d = dirs()
    study = installed_study(d)
    identity = keys.load_identity(d) if mode in ("stream", "memory") else b""
    recipient = x25519.Identity.generate().to_public()
    source = Path(out) / "plain.bin"
    if mode == "bare_io":
        with source.open("wb") as fh:
            left = size
            while left:
                n = min(left, 1 << 20)
                fh.write(os.urandom(n))
                left -= n
    gc.collect()
    reset = _reset_hwm()
    base = _rss_kib()
    t0 = time.perf_counter()
    written = 0
    if mode == "stream":
        res = bundle.export_session(
            d, session, Path(out), study, approve=True, local=LocalNames(), identity=identity
        )
        written = res.bytes
    elif mode == "memory":
        prepared = bundle.prepare(d, session, study, identity, local=LocalNames())
        sealed = encrypt(bundle.build_tar(prepared, identity, study.id), [recipient])
        (Path(out) / "bundle.age").write_bytes(sealed)
        written = len(sealed)
    elif mode == "bare":
        sealed = encrypt(os.urandom(size), [recipient])
        written = len(sealed)
    else:
        with source.open("rb") as src, (Path(out) / "bare.age").open("wb") as dst:
            encrypt_io(src, dst, [recipient])
        written = (Path(out) / "bare.age").stat().st_size
    seconds = time.perf_counter() - t0
    return {
        "mode": mode,
        "seconds": seconds,
        "base_kib": base,
        "peak_kib": _hwm_kib(),
        "reset": reset,
        "bytes": written,
    }


def child_export(
    mode: str, session: str, out: Path, size: int = 0, *, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run :func:`_child` in a fresh interpreter (same OPTIN_HOME) and return what it measured."""
    out.mkdir(parents=True, exist_ok=True)
    args = [mode, session, str(out), str(size)]
    return run_child("tests.benchmarks.export_memory", args, timeout=600, env=env)


def _growth(run: dict[str, Any]) -> int:
    """KiB the run's peak RSS rose above its RSS when it started."""
    return int(run["peak_kib"]) - int(run["base_kib"])


def mask_cost(rounds: int = 5) -> dict[str, float]:
    """Milliseconds, for a 1080p text screen with three masks: decoding the stored frame, and
    masking + encoding it (what a streamed export pays again to write a masked frame, instead of
    holding its bytes), beside Pillow's bare decode and encode of the same image."""
    import io

    from PIL import Image

    from agent.frame_codec import encode_image
    from agent.redact.screen import apply_boxes, frame_image
    from agent.store.format import Spool
    from tests.benchmarks.redaction import screen

    stored = encode_image(screen())
    boxes = ((20, 170, 420, 190), (600, 400, 900, 420), (20, 700, 300, 720))

    def best(fn: Any) -> float:
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times) * 1000

    blob = encode_image(apply_boxes(frame_image(stored), boxes))
    spool = Spool(Path(tempfile.gettempdir()))
    where = spool.put(blob)
    image = Image.open(io.BytesIO(stored)).convert("RGB")
    return {
        "bare_decode_ms": best(lambda: Image.open(io.BytesIO(stored)).load()),
        "bare_encode_ms": best(
            lambda: image.save(io.BytesIO(), format="WEBP", lossless=True, quality=50, method=1)
        ),
        "decode_ms": best(lambda: frame_image(stored)),
        "mask_encode_ms": best(lambda: encode_image(apply_boxes(image, boxes))),
        "reload_ms": best(lambda: spool.get(where)),
        "kib": len(blob) / 1024,
    }


def _mb(kib: float) -> str:
    return f"{kib / 1024:.0f} MB"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        mode, session, out, size = argv[1], argv[2], argv[3], int(argv[4])
        print(json.dumps(_child(mode, session, out, size)))
        return 0
    hours = [float(h) for h in argv] or [1.0, 8.0]
    print(
        f"export memory — {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"a click every {CLICK_EVERY_S:g} s, frames {SMALL_FRAME // 1000} kB (+ {BIG_FRAME / 1e6:g} MB every "
        f"{BIG_EVERY_S / 60:g} min); OCR off"
    )
    rows: list[tuple[float, int, int, dict[str, dict[str, Any]]]] = []
    with tempfile.TemporaryDirectory(prefix="optin-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir(mode=0o700)
        d, _ = consented_home(home, ocr="off")
        for h in hours:
            session, frames, stored = long_session(d, h)
            runs: dict[str, dict[str, Any]] = {}
            runs["stream"] = child_export("stream", session, Path(tmp) / f"s{h}")
            size = int(runs["stream"]["bytes"])
            runs["memory"] = child_export("memory", session, Path(tmp) / f"m{h}")
            runs["bare"] = child_export("bare", session, Path(tmp) / f"b{h}", size)
            runs["bare_io"] = child_export("bare_io", session, Path(tmp) / f"i{h}", size)
            rows.append((h, frames, stored, runs))
            for sub in Path(tmp).glob("[smbi]*"):
                for f in sub.iterdir():
                    f.unlink()
    print(f"{'session':<24} {'mode':<18} {'seconds':>8} {'peak growth':>12} {'peak RSS':>10}")
    for h, frames, stored, runs in rows:
        label = f"{h:g} h, {frames} frames, {stored / 1e6:.0f} MB"
        for mode in ("stream", "memory", "bare", "bare_io"):
            r = runs[mode]
            grow = r["peak_kib"] - r["base_kib"]
            print(f"{label:<24} {mode:<18} {r['seconds']:>8.2f} {_mb(grow):>12} {_mb(r['peak_kib']):>10}")
            label = ""
        s, m, b, i = runs["stream"], runs["memory"], runs["bare"], runs["bare_io"]
        print(
            f"{'':<24} ratios: stream/bare_io time {s['seconds'] / i['seconds']:.2f}x, "
            f"memory/bare time {m['seconds'] / b['seconds']:.2f}x, "
            f"peak growth stream/memory {_growth(s) / max(1, _growth(m)):.3f}x"
        )
    cost = mask_cost()
    print(
        f"a masked 1080p text frame ({cost['kib']:.0f} KiB), set aside in the spool: decode "
        f"{cost['decode_ms']:.0f} ms (bare {cost['bare_decode_ms']:.0f}), mask + encode "
        f"{cost['mask_encode_ms']:.0f} ms (bare encode {cost['bare_encode_ms']:.0f}), once; read back "
        f"from the spool when written {cost['reload_ms']:.2f} ms"
    )
    if len(rows) >= 2:
        first, last = rows[0][3]["stream"], rows[-1][3]["stream"]
        diff = (last["peak_kib"] - last["base_kib"]) - (first["peak_kib"] - first["base_kib"])
        print(f"stream peak growth, {rows[-1][0]:g} h minus {rows[0][0]:g} h: {diff / 1024:+.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
