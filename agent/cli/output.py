"""What every command prints besides its own text: JSON, and a progress bar on a terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["byte_bar", "print_json", "progress_bar"]


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def byte_bar(label: str, width: int = 30) -> Callable[[int, int], None] | None:
    """``label [#####-----] 42 % 12.3/29.0 MB`` redrawn on the terminal's stderr (None when it is not one)."""

    def megabytes(done: int, total: int) -> str:
        return f"{100 * done // total if total else 100:3d} % {done / 1e6:.1f}/{total / 1e6:.1f} MB"

    return progress_bar(label, width, counts=megabytes)


def progress_bar(
    label: str, width: int = 30, *, counts: Callable[[int, int], str] = lambda done, total: f"{done}/{total}"
) -> Callable[[int, int], None] | None:
    """A ``label [#####-----] n/total`` bar redrawn on the terminal's stderr (None when it is not one);
    ``counts`` writes what follows the bar."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        filled = width * done // total if total else width
        end = "\n" if done >= total else ""
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r{label} [{bar}] {counts(done, total)}", end=end, file=sys.stderr, flush=True)

    return show
