"""Changed regions on disk (issue 18 item 3): bytes, encoder CPU and encoder memory, side by side.

Run: ``.venv/bin/python -m tests.benchmarks.regions [--rounds N]`` (not collected by pytest).

Starts its own private 1920x1080 desktop (:class:`agent.backends.virtual_display.VirtualDisplay`)
and plays two scripted scenes on it, grabbing the screen after every step the way the recorder
stores frames (one after each action, and while typing every few characters, like settled frames):

- **typical**: two xterms on a plain background; clicks, typed commands whose output scrolls,
  scrolling, a window moved, focus switched, a dialog opened and closed;
- **photo**: a photo viewer filling most of a gradient wallpaper, with a small terminal over it in
  which a line is typed (a photo-heavy screen where a small part changes).

Each grab is stored three ways: whole frames (today's :func:`agent.capture.screen.encode_frame`),
:class:`agent.frame_regions.RegionEncoder` with whole keyframes, and in strips (its default:
keyframes and the rectangles of patches cut to strips of 128 rows).
Reported: bytes (and MB/h at 1,200 stored frames an hour, docs/performance.md's rate), encoder CPU
per frame (``time.process_time``, this process, one thread), the reader's cost to rebuild a patch
(pixels only, and pixels plus the WebP a bundle needs), with ratios against whole frames.  Every
patch is rebuilt and checked pixel for pixel against its grab while the benchmark runs.

Encoder peak memory: libwebp allocates outside Python (tracemalloc does not see it), so each
measurement runs in a fresh subprocess, which resets its peak RSS (``/proc/self/clear_refs``) just
before the encode and reports the peak (``VmHWM``, what ``ru_maxrss`` reads) minus the RSS before,
whole frame against strips, on the last grab of each scene and on noise (the worst case).
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent import events as ev
from agent.backends.virtual_display import VirtualDisplay, missing_tools
from agent.capture.screen import Shot, encode_frame
from agent.frame_codec import encode_image
from agent.frame_regions import MAX_CHAIN_NS, Rebuilder, RegionEncoder, bgra_image
from tests.benchmarks.frame_encodings import (
    HEIGHT,
    WIDTH,
    Desktop,
    machine,
    photo_like,
    set_root_background,
    versions,
    wallpaper,
)

SEED = 18
#: Stored frames an hour (docs/performance.md: one per action, 20 actions a minute).
FRAMES_PER_HOUR = 1200


@dataclass
class Tally:
    name: str
    bytes: int = 0
    cpu_s: float = 0.0
    frames: int = 0
    keyframes: int = 0
    patches: int = 0
    rebuild_s: float = 0.0
    rebuild_encode_s: float = 0.0
    rebuilt: int = 0
    key_bytes: int = 0  # bytes of the keyframes among them

    def mb_per_hour(self) -> float:
        """At :data:`FRAMES_PER_HOUR`, with this scene's mix of keyframes and patches."""
        return self.bytes / max(1, self.frames) * FRAMES_PER_HOUR / 1e6

    def mb_per_hour_bounded(self) -> float:
        """The same, with at least one keyframe every :data:`~agent.frame_regions.MAX_CHAIN_NS`
        (a scene shorter than that has fewer keyframes than an hour of it)."""
        if not self.patches:
            return self.mb_per_hour()
        keys = max(self.keyframes / self.frames * FRAMES_PER_HOUR, 3600e9 / MAX_CHAIN_NS)
        key = self.key_bytes / max(1, self.keyframes)
        patch = (self.bytes - self.key_bytes) / self.patches
        return (keys * key + (FRAMES_PER_HOUR - keys) * patch) / 1e6


class Method:
    """One way of storing the grabs, with a rebuild check of everything it stores."""

    def __init__(self, name: str, encoder: RegionEncoder | None) -> None:
        self.tally = Tally(name)
        self._encoder = encoder
        self._rebuilder = Rebuilder()

    def store(self, shot: Shot) -> None:
        t = self.tally
        c0 = time.process_time()
        event: ev.Event = (
            encode_frame(shot, "click") if self._encoder is None else self._encoder.encode(shot, "click")
        )
        t.cpu_s += time.process_time() - c0
        blob = ev.encode(event)
        t.bytes += len(blob)
        t.frames += 1
        if isinstance(event, ev.Frame) or (isinstance(event, ev.FramePatch) and event.base is None):
            t.key_bytes += len(blob)
        if self._encoder is None:
            return
        t.keyframes, t.patches = self._encoder.keyframes, self._encoder.patches
        stored = ev.decode(blob)
        if not isinstance(stored, (ev.Frame, ev.FramePatch)):
            raise AssertionError("the encoder made a non-frame event")
        c0 = time.process_time()
        image = self._rebuilder.image(stored)
        if isinstance(stored, ev.FramePatch):
            t.rebuild_s += time.process_time() - c0
            t.rebuilt += 1
            if image is not None:
                c0 = time.process_time()
                encode_image(image)
                t.rebuild_encode_s += time.process_time() - c0
        if image is None or image.tobytes() != bgra_image(shot.pixels, shot.width, shot.height).tobytes():
            msg = f"{t.name}: frame {t.frames} was not rebuilt exactly"
            raise AssertionError(msg)


# -- scenes -----------------------------------------------------------------------------------------


def typical(desk: Desktop, rounds: int) -> Iterator[str]:
    """Two xterms: clicks, typing (a grab every few keys), Enter, scrolls, a move, a dialog."""
    x = desk.vd.xdotool
    desk.root_solid("#2e3440")
    desk.xterm("bench-work", "100x30+40+60", "ls -la /etc | head -n 20; exec bash --norc --noprofile -i")
    desk.xterm(
        "bench-other", "90x24+1020+300", "cat /etc/services; exec bash --norc --noprofile -i", dark=True
    )
    yield "start"
    for i in range(rounds):
        wid = desk.vd.search("bench-work")[0]
        x("windowactivate", "--sync", wid)
        x("mousemove", "--sync", str(200 + 40 * i), str(200 + 20 * i))
        x("click", "1")
        yield "click"
        command = f"echo typical work {i}; ls /usr/share | head -n 5"
        for start in range(0, len(command), 8):
            x("type", "--delay", "30", command[start : start + 8])
            yield "key"
        x("key", "Return")
        time.sleep(0.2)
        yield "enter"
        x("click", "4")
        x("click", "4")
        yield "scroll"
        x("click", "5")
        x("click", "5")
        yield "scroll"
        if i % 2 == 1:
            other = desk.vd.search("bench-other")[0]
            x("windowactivate", "--sync", other)
            yield "focus"
            x("windowmove", "--sync", other, str(1000 - 60 * i), str(280 + 30 * i))
            time.sleep(0.2)
            yield "move"
    desk.window(
        ["xmessage", "-title", "bench-msg", "-center", "Unsaved changes. Save before closing?"], "bench-msg"
    )
    yield "dialog"
    for proc in desk.procs[-1:]:
        proc.terminate()
    time.sleep(0.5)
    yield "dialog closed"


def photo(desk: Desktop, rounds: int) -> Iterator[str]:
    """A photo viewer over a wallpaper; a small terminal over it where a line is typed."""
    x = desk.vd.xdotool
    path = desk.workdir / "photo.png"
    photo_like(1480, 860).save(path)
    set_root_background(desk.vd.display, wallpaper(WIDTH, HEIGHT))
    desk.tk("photo", "bench-photo", "1480x900+200+60", path)
    desk.xterm("bench-note", "60x6+1300+900", "exec bash --norc --noprofile -i", dark=True)
    yield "start"
    wid = desk.vd.search("bench-note")[0]
    x("windowactivate", "--sync", wid)
    for i in range(rounds * 2):
        x("type", "--delay", "30", f"note {i} ")
        yield "key"
        if i % 4 == 3:
            x("key", "Return")
            yield "enter"


SCENES: dict[str, Callable[[Desktop, int], Iterator[str]]] = {"typical": typical, "photo": photo}


# -- encoder memory in a fresh process --------------------------------------------------------------

_CHILD = r"""
import sys
from PIL import Image
from agent.frame_codec import encode_image
from agent.frame_regions import strips

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))

w, h, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
raw = bytearray(w * h * 4)
sys.stdin.buffer.readinto(raw)
image = Image.frombuffer("RGB", (w, h), bytes(raw), "raw", "BGRX", 0, 1)
del raw
encode_image(Image.new("RGB", (16, 16)))  # libwebp loaded and warm
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from the current RSS
before = status("VmRSS:")
if mode == "whole":
    size = len(encode_image(image))
else:
    size = sum(len(encode_image(image.crop((x, y, x + cw, y + ch)))) for x, y, cw, ch in strips(w, h))
print(status("VmHWM:") - before, size)
"""


def encoder_peak(raw: bytes, mode: str) -> tuple[float, int, float]:
    """(MB of RSS peak above the start, bytes, CPU s) of one encode in a fresh process."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(WIDTH), str(HEIGHT), mode],
        input=raw,
        capture_output=True,
        check=True,
        timeout=300,
    )
    wall = time.perf_counter() - t0
    kb, size = (int(v) for v in out.stdout.split())
    return kb / 1024, size, wall


def keyframe_cost(raw: bytes, mode: str) -> tuple[float, int]:
    """(CPU ms, bytes) of one keyframe, whole or in strips, in this process (best of 3)."""
    from agent.frame_regions import strips

    image = bgra_image(raw, WIDTH, HEIGHT)
    best = float("inf")
    size = 0
    for _ in range(3):
        c0 = time.process_time()
        if mode == "whole":
            size = len(encode_image(image))
        else:
            size = sum(
                len(encode_image(image.crop((x, y, x + w, y + h)))) for x, y, w, h in strips(WIDTH, HEIGHT)
            )
        best = min(best, time.process_time() - c0)
    return best * 1000, size


# -- report -----------------------------------------------------------------------------------------


def report(scene: str, methods: list[Method]) -> None:
    base = methods[0].tally
    print(f"\nscene '{scene}': {base.frames} stored frames")
    head = (
        f"{'method':<24} {'key':>4} {'patch':>5} {'MB':>7} {'KiB/frame':>9} {'MB/h':>6} {'MB/h*':>6} "
        f"{'enc ms/frame':>12} {'bytes ratio':>11} {'CPU ratio':>9} {'rebuild ms':>10} {'+webp ms':>9}"
    )
    print(head)
    print("-" * len(head))
    for m in methods:
        t = m.tally
        rebuild = f"{1000 * t.rebuild_s / t.rebuilt:.1f}" if t.rebuilt else "-"
        plus = f"{1000 * t.rebuild_encode_s / t.rebuilt:.1f}" if t.rebuilt else "-"
        print(
            f"{t.name:<24} {t.keyframes or t.frames:>4} {t.patches:>5} {t.bytes / 1e6:>7.2f} "
            f"{t.bytes / max(1, t.frames) / 1024:>9.1f} {t.mb_per_hour():>6.1f} "
            f"{t.mb_per_hour_bounded():>6.1f} "
            f"{1000 * t.cpu_s / max(1, t.frames):>12.1f} {t.bytes / max(1, base.bytes):>11.3f} "
            f"{t.cpu_s / max(1e-9, base.cpu_s):>9.3f} {rebuild:>10} {plus:>9}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds of scripted work per scene")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"needs {', '.join(missing)} (see agent/backends/virtual_display.py)")
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"changed regions — {machine()}\n{versions()}")
    print(f"{WIDTH}x{HEIGHT}; MB/h at {FRAMES_PER_HOUR} stored frames an hour; CPU: this process, one thread")
    print("MB/h*: the same with at least one keyframe every 120 s, as an hour of the scene has")
    last: dict[str, bytes] = {}
    with (
        tempfile.TemporaryDirectory(prefix="optin-regions-") as tmp,
        VirtualDisplay(WIDTH, HEIGHT, tray=False) as vd,
    ):
        desk = Desktop(vd, Path(tmp))
        try:
            for scene, play in SCENES.items():
                methods = [
                    Method("whole frames (today)", None),
                    Method("regions, whole keyframes", RegionEncoder(strips=False)),
                    Method("regions in strips", RegionEncoder(strips=True)),
                ]
                previous: bytes | None = None
                for step, _ in enumerate(play(desk, args.rounds)):
                    time.sleep(0.15)
                    _, raw = desk.grab()
                    if raw == previous:
                        continue  # the recorder stores a frame only when the screen changed
                    previous = raw
                    shot = Shot(step, 0, 0, WIDTH, HEIGHT, raw)
                    for method in methods:
                        method.store(shot)
                report(scene, methods)
                if previous is not None:
                    last[scene] = previous
                desk.clear()
        finally:
            desk.clear()
            desk.close()
    last["noise"] = random.Random(SEED).randbytes(WIDTH * HEIGHT * 4)  # noqa: S311 - a workload
    print("\nkeyframe: whole frame vs strips of 128 rows (the last grab of each scene; noise)")
    head = (
        f"{'scene':<10} {'mode':<7} {'KiB':>8} {'CPU ms':>8} {'peak RSS above start (MB, fresh process)':>42}"
    )
    print(head)
    print("-" * len(head))
    for scene, raw in last.items():
        for mode in ("whole", "strips"):
            ms, size = keyframe_cost(raw, mode)
            peak, _, _ = encoder_peak(raw, mode)
            print(f"{scene:<10} {mode:<7} {size / 1024:>8.1f} {ms:>8.1f} {peak:>42.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
