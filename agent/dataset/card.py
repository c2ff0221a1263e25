"""The dataset card of a version (docs/dataset.md, "Dataset card"). First cut: totals only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.dataset.dest import Dest
from agent.dataset.manifest import Version


def card_files(dest: Dest, version: Version, *, extra: Mapping[str, Any]) -> dict[str, bytes]:
    """``README.md`` (and later ``features.json``, ``plots/*.png``) of ``version``."""
    t = version.totals
    text = (
        f"# optin dataset {version.study.id}, version {version.version}\n\n"
        f"- volunteers: {t.volunteers}\n- sessions: {t.sessions}\n- steps: {t.steps}\n"
        f"- samples without image: {t.samples_without_image}\n- tasks: {t.tasks}\n- events: {t.events}\n"
    )
    return {"README.md": text.encode()}


__all__ = ["card_files"]
