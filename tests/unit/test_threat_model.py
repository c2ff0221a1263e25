"""docs/threat-model.md names the test behind each claim: every file and test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_the_threat_model_names_exists() -> None:
    text = (ROOT / "docs" / "threat-model.md").read_text(encoding="utf-8")
    missing: list[str] = []
    checked = 0
    for line in text.splitlines():
        files = re.findall(r"(tests/[\w/]+\.py)", line)
        for path in files:
            if not (ROOT / path).is_file():
                missing.append(path)
        sources = "".join((ROOT / p).read_text(encoding="utf-8") for p in files if (ROOT / p).is_file())
        for name in re.findall(r"`(test_\w+)`", line):
            checked += 1
            if f"def {name}(" not in sources:
                missing.append(name)
    assert checked > 20 and missing == []
