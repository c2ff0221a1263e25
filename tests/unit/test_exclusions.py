"""The volunteer's exclusions file: kept, checked against damage and other volunteers' files (P4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent import exclusions
from agent.errors import UsageError
from agent.paths import Dirs
from agent.store import keys
from tests.unit.store_helpers import store_dirs


@pytest.fixture
def volunteer(tmp_path: Path) -> Dirs:
    d = store_dirs(tmp_path / "home")
    keys.init_keys(d)
    exclusions.add(d, exclusions.volunteer_rule("Vault", None))
    return d


def test_exclusions_are_kept_with_their_check(volunteer: Dirs) -> None:
    raw = json.loads((volunteer.config / "exclusions.json").read_text())
    assert [r["app_class"] for r in raw["rules"]] == ["Vault"] and len(raw["check"]) == 64
    assert [r.app_class for r in exclusions.load(volunteer)] == ["Vault"]


def test_a_flipped_bit_in_an_excluded_app_is_refused_not_read_as_another_app(volunteer: Dirs) -> None:
    path = volunteer.config / "exclusions.json"
    path.write_text(path.read_text().replace('"Vault"', '"Wault"'))
    with pytest.raises(UsageError, match=r"damaged, or was not written by your optin.*Fix:"):
        exclusions.load(volunteer)


def test_another_volunteers_exclusions_are_refused(volunteer: Dirs, tmp_path: Path) -> None:
    other = store_dirs(tmp_path / "other")
    keys.init_keys(other)
    exclusions.add(other, exclusions.volunteer_rule("Notes", None))
    shutil.copy(other.config / "exclusions.json", volunteer.config / "exclusions.json")
    with pytest.raises(UsageError, match="was not written by your optin"):
        exclusions.load(volunteer)


def test_a_file_of_optin_0_1_0_without_a_check_is_read_and_checked_once_it_changes(volunteer: Dirs) -> None:
    path = volunteer.config / "exclusions.json"
    path.write_text(json.dumps({"rules": [{"label": "old", "app_class": "Vault"}]}))
    assert [r.app_class for r in exclusions.load(volunteer)] == ["Vault"]
    exclusions.add(volunteer, exclusions.volunteer_rule("Notes", None))
    raw = json.loads(path.read_text())
    assert "check" in raw and [r.app_class for r in exclusions.load(volunteer)] == ["Vault", "Notes"]
