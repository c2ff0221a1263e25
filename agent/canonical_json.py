"""Canonical JSON: the one encoding behind every digest and every "equal" of optin's documents.

docs/export-format.md (Conventions) and docs/study.md: sorted keys, no spaces, UTF-8 (not
``\\u`` escapes).  The bundle writer encodes its members and manifest with it, the collector
compares stated and recomputed values with it, and a study's terms are hashed over it, so the
three can never drift apart.
"""

from __future__ import annotations

import json
from typing import Any


def canonical(value: Any) -> bytes:
    """``value`` as canonical JSON bytes: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


__all__ = ["canonical"]
