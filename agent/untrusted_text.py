"""Text from outside (a study file, a bundle's manifest) made safe to show on a terminal or in a window.

A study name or a manifest field is written by whoever made the file, and a bundle can be signed by
anyone who holds the study's public recipient. Printed as it is, such text could move the cursor,
rewrite an earlier line ("signature: valid"), reorder what follows it (bidi overrides) or hide
characters (zero-width). :func:`visible` shows every such character as a visible ``\\u…`` escape
instead, and :func:`hidden_characters` names them for validators that refuse them.
"""

from __future__ import annotations

import unicodedata

__all__ = ["hidden_characters", "shown_text", "visible"]

#: Unicode categories that draw nothing or act on the terminal: controls (C0, C1, DEL), format
#: characters (bidi embeddings, overrides and isolates, zero-width joiners and spaces, the BOM),
#: surrogates, private use and unassigned code points.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _is_hidden(ch: str, *, allow_newlines: bool) -> bool:
    if allow_newlines and ch == "\n":
        return False
    return unicodedata.category(ch) in _HIDDEN_CATEGORIES


def _escape(ch: str) -> str:
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"


def hidden_characters(text: str, *, allow_newlines: bool = False) -> list[str]:
    """The code points of ``text`` that :func:`visible` would escape, as ``U+XXXX`` names, in order."""
    return [f"U+{ord(ch):04X}" for ch in text if _is_hidden(ch, allow_newlines=allow_newlines)]


def visible(text: str, *, allow_newlines: bool = False, limit: int | None = None) -> str:
    """``text`` with every control, format or unassigned character shown as ``\\uXXXX``.

    ``allow_newlines`` keeps ``\\n`` as a line break (for multi-line texts such as a consent text);
    ``limit`` cuts the result at that many characters, marking the cut with ``…``.
    """
    out = "".join(_escape(ch) if _is_hidden(ch, allow_newlines=allow_newlines) else ch for ch in text)
    if limit is not None and len(out) > limit:
        return out[: max(limit - 1, 0)] + "…"
    return out


def shown_text(text: str) -> str:
    """A study's multi-line text as the dialog shows it: tabs as spaces, anything hidden as ``\\uXXXX``."""
    return visible(text.strip().expandtabs(4), allow_newlines=True)
