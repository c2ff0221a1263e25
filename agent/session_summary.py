"""The summary of one session in words: counts, what is left out, what was redacted, sizes.

One renderer, pure (no I/O), shared by everything that tells a person about a session: the
review window's header (:mod:`agent.ui.review`), the line ``optin export --approve`` prints
(:mod:`agent.cli`), ``optin inspect``'s report (:mod:`agent.export.inspect`) and ``optin demo``'s
summary (:mod:`agent.demo`).  Counts, names of places and entity kinds only: never content.

Two shapes come in.  :meth:`agent.export.bundle.Prepared.summary` (the window, the CLI) has
``steps`` as a number, ``by_action``, ``frames``, ``events``, ``duration_s``, ``redactions`` as
``{place: n}`` and ``loss``.  A bundle's manifest (inspect, demo) has redactions per place and
entity, ``{place: {entity: n}}``: :func:`redactions_by_place`.  Text that came from a bundle is
untrusted: the caller passes its own ``key``/``value``/``place``/``entities`` functions
(inspect's make every string visible and short).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Show = Callable[[Any], str]


def words(n: int, one: str, many: str | None = None) -> str:
    """``1 step``, ``2 steps``, ``3 entries`` (``many`` when the plural is not ``one + "s"``)."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def size_text(n: int) -> str:
    """``512 bytes``, ``12 kB``, ``3.4 MB``."""
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} kB"
    return f"{n / 1024 / 1024:.1f} MB"


def pairs_text(mapping: Mapping[Any, Any], *, key: Show = str, value: Show = str, empty: str = "") -> str:
    """``click 2, type 1`` of a flat mapping, in its order (``empty`` when it has nothing)."""
    return ", ".join(f"{key(k)} {value(v)}" for k, v in mapping.items()) or empty


def counts_text(summary: Mapping[str, Any]) -> str:
    """``6 steps (click 2, type 1) · 5 frames · 12.4 s`` (the review window's header)."""
    actions = pairs_text(summary.get("by_action", {}))
    steps = words(int(summary.get("steps", 0)), "step") + (f" ({actions})" if actions else "")
    frames = words(int(summary.get("frames", 0)), "frame")
    return f"{steps} · {frames} · {float(summary.get('duration_s', 0.0)):.1f} s"


def counts_line(summary: Mapping[str, Any]) -> str:
    """``12 steps (click 5, type 3), 40 frames, 80 events, 2 redactions, 61.2 s`` (one line, as
    ``optin export --approve`` says what it approves)."""
    actions = pairs_text(summary["by_action"], empty="none")
    redactions = sum(summary["redactions"].values())
    return (
        f"{summary['steps']} steps ({actions}), {summary['frames']} frames, {summary['events']} events, "
        f"{redactions} redactions, {summary['duration_s']} s"
    )


def redactions_text(summary: Mapping[str, Any]) -> str:
    """``Redacted: screen 5, typed 2, titles 1`` (per place), or that nothing was."""
    found = {k: v for k, v in summary.get("redactions", {}).items() if v}
    if not found:
        return "Redacted: nothing found to redact"
    return "Redacted: " + pairs_text(found)


def redactions_by_place(
    counts: Mapping[Any, Any],
    *,
    place: Show = str,
    entities: Callable[[Any], str] = pairs_text,
    empty: str = "nothing",
) -> str:
    """``typed EMAIL 1, CREDIT_CARD 1; screen EMAIL 2`` of ``{place: {entity: n}}`` (places where
    nothing was found left out), or ``empty``."""
    parts = [f"{place(where)} {entities(found)}" for where, found in counts.items() if found]
    return "; ".join(parts) or empty


#: What the session lacks, in the order the window says it: the loss key and its words.
LOSS_WORDS = (
    ("dropped_events", "events dropped under load"),
    ("frame_failures", "screenshots that failed"),
    ("frames_left_out_ocr_failed", "frames left out (their text could not be read)"),
)


def loss_text(summary: Mapping[str, Any]) -> str:
    """``Left out: ...`` what the session lacks (drops, frames left out, a crash), or ``""``."""
    loss = summary.get("loss", {})
    parts = []
    if loss.get("clean_stop") is False:
        parts.append("the recording ended without a clean stop")
    for key, said in LOSS_WORDS:
        if loss.get(key):
            parts.append(f"{loss[key]} {said}")
    if loss.get("cuts"):
        parts.append(f"{words(int(loss['cuts']), 'part')} you cut ({float(loss.get('cut_s', 0)):.1f} s)")
    return ("Left out: " + "; ".join(parts)) if parts else ""
