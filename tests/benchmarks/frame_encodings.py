"""Screenshot encodings measured on real desktop content (the capture issue's codec choice).

Run: ``.venv/bin/python -m tests.benchmarks.frame_encodings [--save DIR] [--no-ocr]``.

Starts its own private desktop (:class:`agent.backends.virtual_display.VirtualDisplay`, 1920x1080x24),
puts real X clients on it (xterms with Xft text, ``man``, a Tk form with anti-aliased text, a Tk
"image viewer" over a wallpaper), grabs each scene with mss the way
:class:`agent.capture.screen.MssGrabber` does, and measures every codec setting on it:

- encode and decode time (best of 5, one thread, ``time.perf_counter``), size in KiB;
- PSNR against the grab; for lossless settings the decoded pixels are checked to be identical;
- text legibility: tesseract (if installed, ``OMP_THREAD_LIMIT=1``) reads a text crop of the grab
  and of the decoded frame, and the table shows how many of the grab's words the decoded frame keeps.

Then the "store only what changed" idea: two consecutive frames of an interactive xterm (a typed
line; a command whose output scrolls the terminal), the time of ``ImageChops.difference().getbbox()``
and of a raw-bytes equality check, and the encoded size of the changed crop.

Every process it starts belongs to the VirtualDisplay and is stopped on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from agent.backends.virtual_display import VirtualDisplay, missing_tools, stop_process, wait_for

WIDTH, HEIGHT = 1920, 1080
REPEAT = 5
#: Stored frames per hour in the budget example: one frame per action, ~20 actions a minute.
FRAMES_PER_HOUR = 20 * 60
BUDGET_MB_PER_HOUR = 150
#: The scene standing for photo/video content, and the share of such frames in the summary's mix.
PHOTO_SCENE = "photo"
PHOTO_SHARE = 0.05
T = TypeVar("T")


# -- codecs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    name: str
    format: str
    params: dict[str, Any]
    lossless: bool
    #: (KiB, codec): when this encoding is larger than KiB, store the other codec's encoding instead.
    fallback: tuple[int, Codec] | None = None

    def encode(self, image: Image.Image) -> bytes:
        buf = io.BytesIO()
        image.save(buf, format=self.format, **self.params)
        if self.fallback is not None and buf.tell() > self.fallback[0] * 1024:
            return self.fallback[1].encode(image)
        return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _webp_ll(method: int, quality: int) -> Codec:
    params = {"lossless": True, "method": method, "quality": quality}
    return Codec(f"webp-ll m{method} q{quality}", "WEBP", params, lossless=True)


def _webp(quality: int, method: int) -> Codec:
    params = {"lossless": False, "method": method, "quality": quality}
    return Codec(f"webp q{quality} m{method}", "WEBP", params, lossless=False)


def _jpeg(quality: int, subsampling: int) -> Codec:
    sub = {0: "444", 2: "420"}[subsampling]
    return Codec(
        f"jpeg q{quality} {sub}", "JPEG", {"quality": quality, "subsampling": subsampling}, lossless=False
    )


CURRENT = "webp-ll m1 q50"  # agent/frame_codec.py: encode_image
#: Lossless frames above this size (photos, video) are stored lossy by the "adaptive" row.
ADAPTIVE_KIB = 256
CODECS: list[Codec] = [
    Codec("png l1", "PNG", {"compress_level": 1, "optimize": False}, lossless=True),
    Codec("png l6", "PNG", {"compress_level": 6, "optimize": False}, lossless=True),
    _webp_ll(0, 0),
    _webp_ll(0, 50),
    _webp_ll(0, 100),
    _webp_ll(1, 0),
    _webp_ll(1, 50),
    _webp_ll(4, 50),
    _webp_ll(4, 80),
    _webp(75, 4),
    _webp(90, 4),
    _webp(75, 0),
    _webp(90, 0),
    _jpeg(75, 2),
    _jpeg(75, 0),
    _jpeg(90, 2),
    _jpeg(90, 0),
]
CODECS.append(
    Codec(
        f"adaptive {ADAPTIVE_KIB}K",  # webp-ll m1 q50, or webp q90 m4 when that is larger than ADAPTIVE_KIB
        "WEBP",
        _webp_ll(1, 50).params,
        lossless=False,
        fallback=(ADAPTIVE_KIB, _webp(90, 4)),
    )
)
#: Codecs tried on the changed-region crops.
CROP_CODECS = ["png l1", CURRENT, "webp-ll m1 q0", "webp-ll m1 q50", "webp q90 m4", "jpeg q90 444"]


def best_of(fn: Callable[[], T], n: int = REPEAT) -> tuple[float, T]:
    """(best wall time in ms, result) of ``n`` calls."""
    t0 = time.perf_counter()
    result = fn()
    best = time.perf_counter() - t0
    for _ in range(n - 1):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000, result


def psnr(a: Image.Image, b: Image.Image) -> float:
    """PSNR in dB over the RGB channels; inf when identical."""
    x = np.asarray(a, dtype=np.int32)
    y = np.asarray(b.convert("RGB"), dtype=np.int32)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


# -- OCR --------------------------------------------------------------------------------------------


def ocr_words(image: Image.Image) -> list[str]:
    """Words tesseract reads in ``image`` (grey, inverted when dark, 2x upscaled; see redaction-lab)."""
    grey = image.convert("L")
    if np.asarray(grey).mean() < 128:
        grey = Image.eval(grey, lambda v: 255 - v)
    grey = grey.resize((grey.width * 2, grey.height * 2), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    grey.save(buf, format="PNG", compress_level=1)
    out = subprocess.run(
        ["tesseract", "stdin", "stdout", "--oem", "1", "--psm", "6"],
        input=buf.getvalue(),
        capture_output=True,
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        timeout=120,
        check=True,
    )
    return out.stdout.decode(errors="replace").split()


def word_agreement(reference: list[str], other: list[str]) -> float:
    """Share of ``reference``'s words (as a multiset) that ``other`` also has."""
    ref = collections.Counter(reference)
    if not ref:
        return float("nan")
    return sum((ref & collections.Counter(other)).values()) / sum(ref.values())


# -- scenes ---------------------------------------------------------------------------------------

XTERM = ["xterm", "-fa", "Monospace", "-fs", "11"]
DARK = ["-bg", "#1e1e1e", "-fg", "#d4d4d4"]

TK_APP = r"""
import sys, tkinter as tk
from tkinter import ttk
mode, title, geometry = sys.argv[1:4]
root = tk.Tk()
root.title(title)
root.geometry(geometry)
font = ("DejaVu Sans", 10)
style = ttk.Style(root)
style.theme_use("clam")
style.configure(".", font=font)
if mode == "photo":
    photo = tk.PhotoImage(file=sys.argv[4])
    tk.Label(root, image=photo, bd=0).pack()
    info = "IMG_2041.jpg   4032 x 3024   2.4 MB   f/2.8  1/250 s  ISO 200   Lake at dusk, Sunday 14:32"
    tk.Label(root, text=info, font=font, anchor="w", bg="#303030", fg="#e0e0e0").pack(fill="x", ipady=6)
else:
    text_body = open(sys.argv[4], encoding="utf-8").read()
    bar = tk.Frame(root, bg="#3b4252")
    bar.pack(fill="x")
    for item in ("File", "Edit", "View", "Orders", "Customers", "Reports", "Help"):
        tk.Label(bar, text=item, font=font, bg="#3b4252", fg="white", padx=10, pady=4).pack(side="left")
    body = ttk.Frame(root, padding=10)
    body.pack(fill="both", expand=True)
    form = ttk.LabelFrame(body, text="Shipping address", padding=8)
    form.grid(row=0, column=0, sticky="nw")
    fields = [("Full name", "Maria Garcia"), ("Email", "maria.garcia@example.com"),
              ("Phone", "+1 (415) 555-0132"), ("Street", "1600 Amphitheatre Parkway"),
              ("City", "Mountain View"), ("Postcode", "94043"), ("Country", "United States")]
    for row, (label, value) in enumerate(fields):
        ttk.Label(form, text=label + ":").grid(row=row, column=0, sticky="e", padx=4, pady=3)
        entry = ttk.Entry(form, width=34, font=font)
        entry.insert(0, value)
        entry.grid(row=row, column=1, pady=3)
    ttk.Checkbutton(form, text="Billing address is the same").grid(row=len(fields), column=1, sticky="w")
    orders = ttk.Treeview(body, columns=("date", "total", "state"), height=12)
    for col, width in (("#0", 140), ("date", 110), ("total", 90), ("state", 110)):
        orders.heading(col, text={"#0": "Order"}.get(col, col.title()))
        orders.column(col, width=width)
    for i in range(12):
        state = ("Shipped", "Open", "Refunded")[i % 3]
        values = (f"2026-11-{i + 3:02d}", f"${(i * 37.5 + 19.99):.2f}", state)
        orders.insert("", "end", text=f"SO-2026-{4711 + i}", values=values)
    orders.grid(row=0, column=1, sticky="n", padx=10)
    text = tk.Text(body, width=100, height=22, font=font, wrap="word", relief="flat", padx=8, pady=6)
    text.insert("1.0", text_body)
    text.grid(row=1, column=0, columnspan=2, pady=10, sticky="w")
    buttons = ttk.Frame(body)
    buttons.grid(row=2, column=0, columnspan=2, sticky="e")
    for label in ("Cancel", "Save draft", "Place order"):
        ttk.Button(buttons, text=label).pack(side="left", padx=4)
root.mainloop()
"""

PROSE = """Terms and conditions (excerpt)

1. Definitions. "License" shall mean the terms and conditions for use, reproduction, and
distribution as defined by Sections 1 through 9 of this document. "Licensor" shall mean the
copyright owner or entity authorized by the copyright owner that is granting the License.

2. Grant of Copyright License. Subject to the terms and conditions of this License, each
Contributor hereby grants to You a perpetual, worldwide, non-exclusive, no-charge, royalty-free,
irrevocable copyright license to reproduce, prepare Derivative Works of, publicly display,
publicly perform, sublicense, and distribute the Work and such Derivative Works in Source or
Object form.

3. Delivery. Orders placed before 14:00 on a working day are shipped the same day. Returns are
accepted within 30 days of delivery; refunds are issued to the original payment method within
five business days after the returned goods arrive at our warehouse in Rotterdam.
"""


def photo_like(width: int, height: int, seed: int = 7) -> Image.Image:
    """A synthetic photograph: sky and hills gradients, soft texture at several scales, sensor grain."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    sky = (1 - y) * np.array([70, 110, 190]) + y * np.array([250, 180, 120])
    img = np.broadcast_to(sky, (height, width, 3)).copy()
    xs = np.arange(width)
    for i, (base, color) in enumerate(((0.55, (60, 90, 50)), (0.7, (40, 70, 35)), (0.82, (30, 45, 60)))):
        ridge = base * height + 40 * np.sin(xs / (90 + 40 * i) + i) + 25 * np.sin(xs / 23 + 2 * i)
        mask = np.arange(height)[:, None] > ridge[None, :]
        img[mask] = img[mask] * 0.25 + np.array(color) * 0.75
    for scale in (96, 24, 6):  # texture: upscaled noise at several scales
        small = rng.normal(0, 1, (height // scale + 1, width // scale + 1)).astype(np.float32)
        tex = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        img += np.asarray(tex)[..., None] * (24 / np.sqrt(scale))
    img += rng.normal(0, 2.5, img.shape)  # sensor grain
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))


def wallpaper(width: int, height: int) -> Image.Image:
    """A soft diagonal gradient wallpaper with a few blurred shapes (a typical stock background)."""
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    t = (x * 0.6 + y * 0.4).clip(0, 1)
    img = Image.fromarray(((1 - t) * np.array([32, 58, 96]) + t * np.array([120, 60, 110])).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for cx, cy, r in ((400, 300, 260), (1500, 800, 380), (1100, 200, 150)):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(200, 140, 170))
    return img.filter(ImageFilter.GaussianBlur(90))


def set_root_background(display: str, image: Image.Image) -> None:
    """Make ``image`` the root window's background (like xsetroot, for any picture)."""
    from Xlib import X
    from Xlib import display as xdisplay

    d = xdisplay.Display(display)
    try:
        screen = d.screen()
        root = screen.root
        pixmap = root.create_pixmap(image.width, image.height, screen.root_depth)
        gc = pixmap.create_gc()
        data = image.convert("RGB").tobytes("raw", "BGRX")
        rows = 32  # keep every PutImage below the core protocol's request size limit
        for top in range(0, image.height, rows):
            h = min(rows, image.height - top)
            chunk = data[top * image.width * 4 : (top + h) * image.width * 4]
            pixmap.put_image(gc, 0, top, image.width, h, X.ZPixmap, screen.root_depth, 0, chunk)
        root.change_attributes(background_pixmap=pixmap)
        root.clear_area()
        pixmap.free()  # the root keeps its own reference
        d.sync()
    finally:
        d.close()


@dataclass
class Scene:
    name: str
    description: str
    #: A region with text to OCR: (left, top, right, bottom).
    ocr_box: tuple[int, int, int, int]


class Desktop:
    """The private display plus helpers to put windows on it."""

    def __init__(self, vd: VirtualDisplay, workdir: Path) -> None:
        self.vd = vd
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self._mss: Any = None

    def grab(self) -> tuple[Image.Image, bytes]:
        """The whole screen as the recorder grabs it, and the raw BGRA bytes."""
        if self._mss is None:
            import mss

            factory = getattr(mss, "MSS", None) or mss.mss
            self._mss = factory(display=self.vd.display)
        shot = self._mss.grab(self._mss.monitors[0])
        return Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX"), bytes(shot.bgra)

    def close(self) -> None:
        if self._mss is not None:
            self._mss.close()
            self._mss = None

    def window(self, argv: list[str], title: str, settle: float = 1.0) -> None:
        """Start ``argv`` (a window titled ``title``, "bench-..."), wait until it is mapped and drawn."""
        self.procs.append(self.vd.spawn(argv))
        if not wait_for(lambda: bool(self.vd.search(title)), 15.0, 0.1):
            msg = f"window {title!r} did not appear"
            raise RuntimeError(msg)
        time.sleep(settle)

    def xterm(self, title: str, geometry: str, command: str, *, dark: bool = False) -> None:
        argv = [*XTERM, *(DARK if dark else []), "-T", title, "-geometry", geometry, "-e", command]
        self.window(argv, title)

    def tk(self, mode: str, title: str, geometry: str, arg: Path) -> None:
        self.window([sys.executable, "-c", TK_APP, mode, title, geometry, str(arg)], title, settle=1.5)

    def root_solid(self, color: str) -> None:
        subprocess.run(["xsetroot", "-solid", color], env=self.vd.env, check=True, timeout=10)

    def clear(self) -> None:
        """Close every window started for the current scene."""
        for proc in reversed(self.procs):
            stop_process(proc)
        self.procs = []
        wait_for(lambda: not self.vd.search("bench-.*"), 2.0)


def build_scenes(desk: Desktop) -> Iterator[Scene]:
    """Yield each scene once it is on screen; the desktop is cleared between scenes."""
    source = Path(subprocess.__file__)  # stable Python source: the interpreter's own stdlib
    prose = desk.workdir / "prose.txt"
    prose.write_text(PROSE, encoding="utf-8")
    photo = desk.workdir / "photo.png"
    photo_like(1480, 860).save(photo)

    desk.root_solid("#2e3440")
    desk.xterm("bench-ls", "118x28+0+0", "ls -la /usr/lib; exec bash --norc --noprofile -i")
    desk.xterm("bench-services", "118x28+962+0", "cat /etc/services; sleep 600")
    desk.xterm("bench-man", "118x29+0+545", "MANWIDTH=110 man bash", dark=True)
    desk.xterm("bench-src", "118x29+962+545", f"cat -n {source}; sleep 600", dark=True)
    yield Scene(
        "terminals", "4 xterms (2 dark): ls, /etc/services, man bash, Python source", (970, 30, 1900, 500)
    )

    desk.clear()
    set_root_background(desk.vd.display, wallpaper(WIDTH, HEIGHT))
    desk.tk("form", "bench-form", "1120x860+30+40", prose)
    desk.xterm("bench-term", "90x30+1180+80", "ls -la /etc | head -n 40; sleep 600", dark=True)
    desk.window(
        ["xmessage", "-title", "bench-msg", "-center", "Unsaved changes. Save before closing?"], "bench-msg"
    )
    yield Scene(
        "mixed", "Tk form (AA text, table, prose) + dark xterm + dialog on wallpaper", (40, 480, 1000, 880)
    )

    desk.clear()
    desk.root_solid("#2e3440")
    desk.xterm(
        "bench-small",
        "80x12+600+400",
        "uname -sr; ls -la /usr/share | head -n 8; exec bash --norc --noprofile -i",
    )
    yield Scene("empty", "solid background, one small xterm", (600, 400, 1180, 600))

    desk.clear()
    set_root_background(desk.vd.display, wallpaper(WIDTH, HEIGHT))
    desk.tk("photo", "bench-photo", "1480x900+200+60", photo)
    yield Scene(
        "photo", "image viewer with a photo-like picture over a gradient wallpaper", (200, 920, 1680, 960)
    )
    desk.clear()


# -- measurements ---------------------------------------------------------------------------------


@dataclass
class Row:
    codec: Codec
    encode_ms: float
    kib: float
    decode_ms: float
    psnr: float
    ocr: float | None  # share of the grab's words still read; None: not measured


def measure(
    frame: Image.Image, codec: Codec, ocr_box: tuple[int, int, int, int], ref_words: list[str] | None
) -> Row:
    encode_ms, data = best_of(lambda: codec.encode(frame))
    decode_ms, decoded = best_of(lambda: decode(data))
    quality = psnr(frame, decoded)
    if codec.lossless and quality != float("inf"):
        msg = f"{codec.name} is not lossless on this frame"
        raise AssertionError(msg)
    ocr = None
    if ref_words is not None:
        exact = quality == float("inf")
        ocr = 1.0 if exact else word_agreement(ref_words, ocr_words(decoded.crop(ocr_box)))
    return Row(codec, encode_ms, len(data) / 1024, decode_ms, quality, ocr)


def mb_per_hour(kib: float) -> float:
    return kib * 1024 * FRAMES_PER_HOUR / 1e6


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    head = (
        f"{'codec':<16} {'enc ms':>8} {'KiB':>8} {'dec ms':>8} {'PSNR dB':>8} {'OCR words':>10} {'MB/h':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        quality = "exact" if r.psnr == float("inf") else f"{r.psnr:.1f}"
        ocr = "-" if r.ocr is None else f"{100 * r.ocr:.0f}%"
        mark = " (current)" if r.codec.name == CURRENT else ""
        print(
            f"{r.codec.name:<16} {r.encode_ms:>8.1f} {r.kib:>8.1f} {r.decode_ms:>8.1f} {quality:>8} "
            f"{ocr:>10} {mb_per_hour(r.kib):>7.0f}{mark}"
        )


def print_summary(results: dict[str, list[Row]]) -> None:
    """Per codec: text scenes vs the photo scene, and the disk use per hour at one frame per action."""
    text = [name for name in results if name != PHOTO_SCENE]
    share = PHOTO_SHARE
    print(
        f"\nSummary. text = mean over {', '.join(text)}; MB/h at {FRAMES_PER_HOUR} frames/h "
        f"(1 frame per action, 20 actions/min; budget {BUDGET_MB_PER_HOUR} MB/h); "
        f"'+{share:.0%} photo': that share of frames look like the '{PHOTO_SCENE}' scene"
    )
    head = (
        f"{'codec':<16} {'enc ms text':>11} {'enc ms max':>10} {'KiB text':>9} {'KiB photo':>9} "
        f"{'MB/h text':>9} {f'+{share:.0%} photo':>9} {'min PSNR':>8} {'min OCR':>7}"
    )
    print(head)
    print("-" * len(head))
    for i, codec in enumerate(CODECS):
        rows = [results[name][i] for name in results]
        text_rows = [results[name][i] for name in text]
        kib = sum(r.kib for r in text_rows) / len(text_rows)
        photo = results[PHOTO_SCENE][i].kib if PHOTO_SCENE in results else kib
        enc = sum(r.encode_ms for r in text_rows) / len(text_rows)
        worst = min(r.psnr for r in rows)
        ocrs = [r.ocr for r in rows if r.ocr is not None]
        quality = "exact" if worst == float("inf") else f"{worst:.1f}"
        ocr = f"{100 * min(ocrs):.0f}%" if ocrs else "-"
        mixed = (1 - share) * kib + share * photo
        print(
            f"{codec.name:<16} {enc:>11.1f} {max(r.encode_ms for r in rows):>10.1f} {kib:>9.1f} "
            f"{photo:>9.1f} {mb_per_hour(kib):>9.0f} {mb_per_hour(mixed):>9.0f} {quality:>8} {ocr:>7}"
        )


def measure_delta(desk: Desktop, label: str, action: Callable[[], object]) -> None:
    """Frames before and after ``action``: bbox of the change, its cost, and the crop's encoded size."""
    before, raw_before = desk.grab()
    action()
    time.sleep(0.8)
    after, raw_after = desk.grab()
    bbox_ms, bbox = best_of(lambda: ImageChops.difference(before, after).getbbox())
    ne_ms, _ = best_of(lambda: raw_before == raw_after)
    if bbox is None:
        print(f"\ndelta '{label}': no change seen")
        return
    crop = after.crop(bbox)
    w, h = crop.size
    share = 100 * w * h / (WIDTH * HEIGHT)
    print(
        f"\ndelta '{label}': changed box {bbox} = {w}x{h} px ({share:.1f}% of the frame); "
        f"difference().getbbox() {bbox_ms:.1f} ms; raw bytes == (different frames) {ne_ms:.3f} ms"
    )
    by_name = {c.name: c for c in CODECS}
    print(f"  {'codec':<16} {'crop KiB':>9} {'crop enc ms':>12} {'full KiB':>9} {'crop/full':>10}")
    for name in CROP_CODECS:
        codec = by_name[name]
        crop_ms, data = best_of(partial(codec.encode, crop))
        full = len(codec.encode(after))
        print(
            f"  {name:<16} {len(data) / 1024:>9.1f} {crop_ms:>12.1f} {full / 1024:>9.1f} "
            f"{100 * len(data) / full:>9.1f}%"
        )


def run_deltas(desk: Desktop) -> None:
    """Typed line and scrolled output in an interactive xterm, plus the raw equality check."""
    desk.root_solid("#2e3440")
    desk.xterm("bench-ls", "118x28+0+0", "ls -la /usr/lib; exec bash --norc --noprofile -i")
    desk.xterm("bench-services", "118x28+962+0", "cat /etc/services; sleep 600")
    desk.xterm("bench-man", "118x29+0+545", "MANWIDTH=110 man bash", dark=True)
    wid = desk.vd.search("bench-ls")[0]
    desk.vd.xdotool("windowactivate", "--sync", wid)
    desk.vd.xdotool("mousemove", "--sync", "1900", "1060")  # pointer out of the way (not in the grab anyway)
    time.sleep(0.5)

    _, raw_a = desk.grab()
    _, raw_b = desk.grab()
    eq_ms, same = best_of(lambda: raw_a == raw_b)
    grab_ms, _ = best_of(desk.grab)
    print(
        f"\nraw BGRA frame ({len(raw_a) / 2**20:.1f} MiB): equality check of two unchanged grabs "
        f"{eq_ms:.2f} ms (equal: {same}); mss grab + frombytes {grab_ms:.1f} ms"
    )
    measure_delta(
        desk, "typed a line", lambda: desk.vd.xdotool("type", "--delay", "20", "grep -c tcp /etc/services")
    )
    measure_delta(desk, "Enter: output scrolls the xterm", lambda: desk.vd.xdotool("key", "Return"))
    desk.clear()


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs ({cpu})"


def versions() -> str:
    from PIL import __version__ as pillow
    from PIL import features

    tess = "not installed"
    if shutil.which("tesseract"):
        out = subprocess.run(["tesseract", "--version"], capture_output=True, text=True, check=False)
        tess = (out.stdout or out.stderr).split("\n", 1)[0]
    return (
        f"Pillow {pillow}, libwebp {features.version('webp')}, libjpeg {features.version('jpg')}, "
        f"zlib {features.version('zlib')}, {tess}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--save", type=Path, help="also save each scene's grab as PNG in this directory")
    parser.add_argument("--no-ocr", action="store_true", help="skip the tesseract legibility check")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"needs {', '.join(missing)} (see agent/backends/virtual_display.py)")
        return 2
    use_ocr = not args.no_ocr and shutil.which("tesseract") is not None
    # Ctrl-C (even when started with SIGINT ignored, as background jobs are) and SIGTERM unwind,
    # so the display's processes are stopped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"frame encodings — {machine()}\n{versions()}")
    print(f"{WIDTH}x{HEIGHT}, best of {REPEAT}, one thread; OCR: {'tesseract' if use_ocr else 'off'}")

    results: dict[str, list[Row]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="optin-enc-") as tmp,
        VirtualDisplay(WIDTH, HEIGHT, tray=False) as vd,
    ):
        desk = Desktop(vd, Path(tmp))
        try:
            for scene in build_scenes(desk):
                frame, _ = desk.grab()
                if args.save:
                    args.save.mkdir(parents=True, exist_ok=True)
                    frame.save(args.save / f"{scene.name}.png")
                ref = ocr_words(frame.crop(scene.ocr_box)) if use_ocr else None
                rows = [measure(frame, codec, scene.ocr_box, ref) for codec in CODECS]
                results[scene.name] = rows
                words = f"; OCR crop {scene.ocr_box}: {len(ref)} words" if ref is not None else ""
                print_table(f"scene '{scene.name}': {scene.description}{words}", rows)
            print_summary(results)
            run_deltas(desk)
        finally:
            desk.clear()
            desk.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
