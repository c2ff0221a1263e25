"""Line plots as PNG with Pillow alone (no matplotlib): the soak's series against minutes.

Deterministic: the same series give the same bytes (no timestamps in the PNG, fixed fonts).
Phases are shaded behind the lines (idle grey, paused yellow, animation blue), every phase has its
colour in a strip along the top, and the end of the warm-up is a dashed line.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1100, 440
LEFT, RIGHT, TOP, BOTTOM = 80, 200, 40, 50
PHASE_COLOURS = {"idle": (232, 232, 232), "paused": (252, 243, 205), "animation": (222, 235, 250)}
#: The strip along the top of the plot names every phase (the shading only the still ones).
STRIP_COLOURS: dict[str, tuple[int, int, int]] = {
    **{k: (v[0] - 40, v[1] - 40, v[2] - 40) for k, v in PHASE_COLOURS.items()},
    "typing": (120, 190, 120),
    "pointer": (240, 170, 90),
    "switching": (170, 140, 210),
}
STRIP = 8
LINE_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]


@dataclass(frozen=True)
class Series:
    label: str
    xs: Sequence[float]  #: minutes
    ys: Sequence[float]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """About ``n`` round tick values from at or below ``lo`` to at or above ``hi``."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(first, last + 1)]


def _label(v: float) -> str:
    return f"{v:g}"


def line_plot(
    title: str,
    ylabel: str,
    series: Sequence[Series],
    *,
    phases: Sequence[tuple[float, float, str]] = (),
    warmup_min: float | None = None,
    y_from_zero: bool = True,
) -> bytes:
    """A PNG of ``series`` (x in minutes) with ``phases`` (start, end, name) shaded behind them."""
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(15), _font(12)
    xs_all = [x for s in series for x in s.xs]
    ys_all = [y for s in series for y in s.ys]
    x_hi = max(xs_all, default=1.0) or 1.0
    y_lo = 0.0 if y_from_zero else min(ys_all, default=0.0)
    y_hi = max(ys_all, default=1.0)
    y_ticks = nice_ticks(y_lo, y_hi if y_hi > y_lo else y_lo + 1)
    x_ticks = nice_ticks(0.0, x_hi)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    x_hi = x_ticks[-1]
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + pw * x / x_hi

    def py(y: float) -> float:
        return TOP + ph * (1 - (y - y_lo) / (y_hi - y_lo))

    for start, end, name in phases:
        colour = PHASE_COLOURS.get(name)
        if colour is not None:
            draw.rectangle([px(start), TOP, px(end), TOP + ph], fill=colour)
    for t in y_ticks:
        draw.line([LEFT, py(t), LEFT + pw, py(t)], fill=(210, 210, 210))
        draw.text((LEFT - 6, py(t)), _label(t), fill="black", font=small, anchor="rm")
    for t in x_ticks:
        draw.line([px(t), TOP + ph, px(t), TOP + ph + 5], fill="black")
        draw.text((px(t), TOP + ph + 8), _label(t), fill="black", font=small, anchor="mt")
    if warmup_min is not None and 0 < warmup_min < x_hi:
        y = TOP
        while y < TOP + ph:
            draw.line([px(warmup_min), y, px(warmup_min), min(y + 6, TOP + ph)], fill=(90, 90, 90), width=1)
            y += 12
        draw.text((px(warmup_min) + 4, TOP + 4), "warm-up", fill=(90, 90, 90), font=small)
    for start, end, name in phases:
        strip = STRIP_COLOURS.get(name)
        if strip is not None:
            draw.rectangle([px(start), TOP - STRIP, px(end), TOP], fill=strip)
    draw.rectangle([LEFT, TOP, LEFT + pw, TOP + ph], outline="black")
    for i, s in enumerate(series):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        points = [(px(x), py(y)) for x, y in zip(s.xs, s.ys, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        elif points:
            draw.ellipse(
                [points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=colour
            )
        ly = TOP + 10 + 22 * i
        draw.line([LEFT + pw + 12, ly, LEFT + pw + 36, ly], fill=colour, width=3)
        draw.text((LEFT + pw + 42, ly), s.label, fill="black", font=small, anchor="lm")
    legend_y = TOP + 10 + 22 * len(series) + 10
    for j, (name, colour) in enumerate(STRIP_COLOURS.items()):
        ly = legend_y + 20 * j
        shade = PHASE_COLOURS.get(name, (255, 255, 255))
        draw.rectangle([LEFT + pw + 12, ly - 7, LEFT + pw + 36, ly + 7], fill=shade, outline=(180, 180, 180))
        draw.rectangle([LEFT + pw + 12, ly - 7, LEFT + pw + 36, ly - 3], fill=colour)
        draw.text((LEFT + pw + 42, ly), name, fill="black", font=small, anchor="lm")
    draw.text((LEFT, TOP - STRIP - 8), title, fill="black", font=font, anchor="ls")
    draw.text((LEFT + pw / 2, HEIGHT - 8), "minutes", fill="black", font=small, anchor="ms")
    draw.text((10, TOP - STRIP - 8), ylabel, fill="black", font=small, anchor="ls")
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()
