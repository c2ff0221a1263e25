"""``optin dataset build | stats | export | withdraw`` as an operator runs them: exit codes, --json, text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.study.synth import make_bundles, make_study_identity


def optin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "dataset", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, str]:
    """SRC of 6 bundles (3 volunteers), its identity, a DEST built by the command line, a pseudonym."""
    root = tmp_path_factory.mktemp("cli")
    identity, recipient = make_study_identity(root)
    bundles = make_bundles(root / "src", recipient, volunteers=3, sessions=2, seed=4, steps=7)
    dest = root / "dest"
    out = optin("build", str(root / "src"), str(dest), "--identity", str(identity), "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert "6 ingested" in out.stdout and "published:   version 1" in out.stdout
    return root / "src", identity, dest, bundles[0].volunteer


def test_stats_prints_the_versions_numbers(chain: tuple[Path, Path, Path, str]) -> None:
    _, _, dest, _ = chain
    out = optin("stats", str(dest), "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["version"] == 1 and stats["totals"]["sessions"] == 6 and stats["totals"]["volunteers"] == 3
    text = optin("stats", str(dest), "--check")
    assert text.returncode == 0 and "6 sessions" in text.stdout


def test_export_writes_agentnet_and_refuses_a_folder_that_is_not_empty(
    chain: tuple[Path, Path, Path, str], tmp_path: Path
) -> None:
    _, _, dest, _ = chain
    out = optin("export", str(dest), str(tmp_path / "agentnet"), "--format", "agentnet", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads((tmp_path / "agentnet" / "optin-export.json").read_text(encoding="utf-8"))
    assert record["format"] == "agentnet" and record["dataset"]["version"] == 1
    again = optin("export", str(dest), str(tmp_path / "agentnet"), "--format", "aguvis")
    assert again.returncode == 2 and "empty" in again.stderr


def test_withdraw_then_a_rebuild_refuses_the_volunteer(chain: tuple[Path, Path, Path, str]) -> None:
    src, identity, dest, volunteer = chain
    bad = optin("withdraw", str(dest), "--volunteer", "not-an-id")
    assert bad.returncode == 2 and "not-an-id" in bad.stderr
    out = optin("withdraw", str(dest), "--volunteer", volunteer, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["removed"]["sessions"] == 2
    rebuilt = optin("build", str(src), str(dest), "--identity", str(identity), "--workers", "1", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    report = json.loads(rebuilt.stdout)
    assert report["bundles"]["ingested"] == 0
    assert sorted(q["reason"] for q in report["quarantined"]) == ["volunteer_withdrawn"] * 2


def test_usage_errors_exit_2_with_the_fix(tmp_path: Path) -> None:
    assert optin().returncode == 2  # no subcommand: the help
    missing = optin(
        "build", str(tmp_path / "nowhere"), str(tmp_path / "dest"), "--identity", str(tmp_path / "x")
    )
    assert missing.returncode == 2 and "Fix" in missing.stderr
    size = optin("build", str(tmp_path), str(tmp_path / "d"), "--identity", "x", "--shard-size", "lots")
    assert size.returncode == 2 and "1GB" in size.stderr


def test_which_ray_addresses_name_this_machine_and_get_no_warning() -> None:
    from agent.cli.dataset import _local_address

    assert (
        _local_address("local")
        and _local_address("127.0.0.1:6379")
        and _local_address("ray://localhost:10001")
    )
    assert not _local_address("ray://10.0.0.5:10001") and not _local_address("head.cluster:6379")
