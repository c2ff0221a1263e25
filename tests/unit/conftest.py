"""Store fixtures shared by the unit tests: a fresh key pair and a store under tmp_path.

A test module may define its own fixture of the same name (test_keys.py has its own ``dirs``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.paths import Dirs
from agent.store import format as fmt
from tests.unit.store_helpers import store_dirs


@pytest.fixture(autouse=True)
def no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests never reach a display, even when the display tests' desktop is up in the same run
    (its DISPLAY is in os.environ): a dialog would open there and wait for a person."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def keypair() -> tuple[bytes, bytes]:
    return fmt.generate_keypair()


@pytest.fixture
def identity(keypair: tuple[bytes, bytes]) -> bytes:
    return keypair[0]


@pytest.fixture
def recipient(keypair: tuple[bytes, bytes]) -> bytes:
    return keypair[1]


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    return store_dirs(tmp_path / "home")
