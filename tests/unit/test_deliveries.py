"""What optin remembers of each exported bundle (agent/export/deliveries.py; docs/upload.md, "Volunteer
side state"): the export writes it, ``optin sessions`` shows it (also once the session is deleted), and
a damaged record never reads as delivered."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

from agent import cli, consent
from agent.export import deliveries
from agent.export.bundle import export_session
from agent.paths import dirs
from tests.tools import Consented
from tests.unit.test_export import LOCAL, session  # noqa: F401 - the recorded session fixture

SID = "20261206T120000Z-0a1b2c3d"


def test_a_record_reads_back_and_shows_its_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIN_HOME", str(tmp_path / "home"))
    d = dirs()
    assert deliveries.load(d, SID) is None and deliveries.load_all(d) == []
    bundle = tmp_path / f"{SID}.optin.tar.age"
    made = deliveries.record_export(d, SID, bundle, size=1000, sha256="a" * 64, study="s")
    assert deliveries.load(d, SID) == made and made.state == "exported" and made.bundle == str(bundle)
    assert (d.exports / f"{SID}.json").stat().st_mode & 0o777 == 0o600
    going = deliveries.updated(made, state="uploading", sent=420)
    deliveries.save(d, going)
    assert deliveries.load(d, SID) == going and going.shown_state() == "uploading 42 %"
    refused = deliveries.updated(made, state="refused", reason="bundle_too_large")
    assert refused.shown_state() == "refused: bundle_too_large"
    assert deliveries.load_all(d) == [going]


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"{",
        b"[]",
        b"\xff" * 10,
        b"[" * 100_000 + b"]" * 100_000,
        b"x" * (deliveries.MAX_BYTES + 1),
    ],
)
def test_a_damaged_record_reads_as_damaged(
    damage: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTIN_HOME", str(tmp_path / "home"))
    d = dirs()
    deliveries.record_export(d, SID, tmp_path / "b", size=10, sha256="a" * 64, study="s")
    (d.exports / f"{SID}.json").write_bytes(damage)
    got = deliveries.load(d, SID)
    assert got is not None and got.state == "damaged" and got.bundle == ""


def test_a_record_that_lies_reads_as_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIN_HOME", str(tmp_path / "home"))
    d = dirs()
    good = deliveries.record_export(d, SID, tmp_path / "b", size=10, sha256="a" * 64, study="s").to_json()
    for lie in (
        {"state": "sent"},
        {"state": "damaged"},
        {"session": "20261206T120000Z-ffffffff"},  # another session's record under this name
        {"sent": 11},
        {"size": -1},
        {"size": True},
        {"bundle": "relative/path"},
        {"sha256": "a"},
        {"extra": 1},
    ):
        (d.exports / f"{SID}.json").write_text(json.dumps({**good, **lie}))
        got = deliveries.load(d, SID)
        assert got is not None and got.state == "damaged", lie


def test_a_link_in_place_of_a_record_is_not_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIN_HOME", str(tmp_path / "home"))
    d = dirs()
    good = deliveries.record_export(d, SID, tmp_path / "b", size=10, sha256="a" * 64, study="s")
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes((d.exports / f"{SID}.json").read_bytes())
    (d.exports / f"{SID}.json").unlink()
    os.symlink(elsewhere, d.exports / f"{SID}.json")
    assert good.state == "exported"
    got = deliveries.load(d, SID)
    assert got is not None and got.state == "damaged"


def test_an_export_records_its_bundle_and_sessions_shows_it(
    consented: Consented,
    session: str,  # noqa: F811 - the fixture
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d, study = consented
    res = export_session(d, session, tmp_path, study, approve=True, local=LOCAL)
    got = deliveries.load(d, session)
    assert got is not None
    assert (got.bundle, got.size, got.sha256, got.study) == (
        str(res.path.resolve()),
        res.path.stat().st_size,
        hashlib.sha256(res.path.read_bytes()).hexdigest(),
        study.id,
    )
    assert cli.main(["sessions", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[session]["delivery"]["state"] == "exported"
    assert cli.main(["sessions"]) == 0
    text = capsys.readouterr().out
    assert "UPLOAD" in text.splitlines()[0] and text.splitlines()[1].rstrip().endswith("exported")


def test_a_session_deleted_after_its_export_is_still_listed_with_its_delivery(
    consented: Consented,
    session: str,  # noqa: F811 - the fixture
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d, study = consented
    deleting = dataclasses.replace(study, retention_after_export="delete")
    consent.grant(d, deleting, deleting.terms_sha256)
    export_session(d, session, tmp_path, deleting, approve=True, local=LOCAL)
    assert cli.main(["sessions", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == session and row["state"] == "deleted" and row["delivery"]["state"] == "exported"
    assert cli.main(["sessions"]) == 0
    assert "deleted" in capsys.readouterr().out
