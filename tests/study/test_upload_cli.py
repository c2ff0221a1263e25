"""``optin upload`` as the volunteer runs it (docs/volunteer-guide.md, "Uploading to the study"): a
session recorded, exported and uploaded to a real intake over a real SeaweedFS; the states ``optin
sessions`` shows; the study's ``after_upload``; the command killed mid-upload and run again."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import cli, consent
from agent.export import deliveries
from agent.paths import Dirs
from agent.study import Study, install_study
from tests.proxy import cutting_proxy
from tests.servers import IntakeServer, S3Server, intake_server
from tests.study.test_upload import INTAKE_ARGS, PART, objects, random_bundle
from tests.tools import Consented, wait_until
from tests.unit.test_export import session  # noqa: F401 - the recorded session fixture


def uploading_study(d: Dirs, study_file: Path, url: str, after_upload: str = "keep") -> Study:
    """The installed study with an intake (and ``after_upload``), agreed to again."""
    text = (
        study_file.read_text() + f'\n[upload]\nurl = "{url}"\n[retention]\nafter_upload = "{after_upload}"\n'
    )
    changed = study_file.with_name("study-upload.toml")
    changed.write_text(text)
    study = install_study(d, changed)
    consent.grant(d, study, study.terms_sha256)
    return study


@contextlib.contextmanager
def exported_to(  # noqa: PLR0917 - the fixtures it stands for
    s3: S3Server,
    bucket: str,
    consented: Consented,
    study_file: Path,
    session: str,  # noqa: F811 - the fixture's value
    tmp_path: Path,
    *,
    after_upload: str,
) -> Iterator[IntakeServer]:
    """An intake over ``bucket``, the study uploading there (``after_upload``), and ``session`` exported
    into ``tmp_path / "out"``."""
    d, study = consented
    with intake_server(s3, bucket, study.id, tmp_path, args=INTAKE_ARGS) as intake:
        uploading_study(d, study_file, intake.url, after_upload=after_upload)
        assert cli.main(["export", session, "--approve", "--out", str(tmp_path / "out")]) == 0
        yield intake


def test_an_exported_session_is_uploaded_and_deleted_once_the_study_has_it(  # noqa: PLR0917 - fixtures
    consented: Consented,
    session: str,  # noqa: F811 - the fixture
    study_file: Path,
    s3: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d, _study = consented
    bucket = f"s3://{s3.bucket()}/intake"
    with exported_to(s3, bucket, consented, study_file, session, tmp_path, after_upload="delete"):
        capsys.readouterr()
        bundle = tmp_path / "out" / f"{session}.optin.tar.age"
        sent = bundle.read_bytes()
        assert cli.main(["sessions", "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert row["delivery"]["state"] == "exported"
        assert cli.main(["upload", "--all-exported", "--json"]) == 0
        (result,) = json.loads(capsys.readouterr().out)
        assert result["result"] == "delivered" and result["deleted_locally"] and not result["already"]
        # the study has exactly these bytes; here, the recording and its export are gone
        (key,) = [k for k in objects(s3, bucket) if k.startswith("bundles/")]
        assert key.endswith(f"/{session}.optin.tar.age") and objects(s3, bucket)[key] == sent
        assert not bundle.exists() and not (d.sessions / session).exists()
        assert cli.main(["sessions"]) == 0
        listing = capsys.readouterr().out
        assert session in listing and "deleted" in listing and listing.rstrip().endswith("delivered")
        assert cli.main(["upload", session]) == 0
        assert "delivered" in capsys.readouterr().out


def test_upload_says_what_is_missing(
    consented: Consented,
    session: str,  # noqa: F811 - the fixture
    study_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["upload", "--all-exported"]) == 2
    assert "names no place to upload to" in capsys.readouterr().err
    d, _study = consented
    uploading_study(d, study_file, "http://127.0.0.1:9/")
    assert cli.main(["upload", "--all-exported"]) == 2
    assert "no export is waiting" in capsys.readouterr().err
    assert cli.main(["upload", session]) == 2
    assert f"optin export {session} --out DIR" in capsys.readouterr().err
    assert cli.main(["upload"]) == 2
    assert "--all-exported" in capsys.readouterr().err
    fake = random_bundle(tmp_path, session, 10)
    deliveries.record_export(
        d, session, fake, size=10, sha256=hashlib.sha256(fake.read_bytes()).hexdigest(), study="optin-demo"
    )
    consent.withdraw(d)
    assert cli.main(["upload", session]) == 2  # the upload address is part of what was agreed to
    assert "consent" in capsys.readouterr().err


def _last_json(capsys: pytest.CaptureFixture[str]) -> str:
    """What the last command printed on stdout: its JSON (export's is read away first)."""
    out = capsys.readouterr().out
    return out[out.rindex("\n[") + 1 :] if "\n[" in out else out


def _upload(env: dict[str, str], *ids: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "upload", *ids, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )


@pytest.mark.parametrize(
    "stage",
    ["before the first part is acknowledged", "after a part", "after the last part, while completing"],
)
def test_a_killed_upload_resumes_and_sends_what_the_store_lacks(
    stage: str, consented: Consented, study_file: Path, s3: S3Server, tmp_path: Path
) -> None:
    d, study = consented
    bucket = f"s3://{s3.bucket()}/intake"
    host, port = s3.endpoint_url.removeprefix("http://").rsplit(":", 1)
    with (
        cutting_proxy((host, int(port))) as proxy,
        intake_server(s3, bucket, study.id, tmp_path, args=INTAKE_ARGS, endpoint=proxy.url) as intake,
    ):
        uploading_study(d, study_file, intake.url)
        sid = "20261206T130000Z-0b1c2d3e"
        path = random_bundle(tmp_path, sid, 3 * PART + 99)
        data = path.read_bytes()
        deliveries.record_export(
            d, sid, path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), study=study.id
        )
        proxy.faults.delay_s = 0.01  # a slow line: about a second a part
        env = dict(os.environ)
        child = _upload(env, sid)

        def reached() -> bool:
            found = deliveries.load(d, sid)
            if found is None or found.state != "uploading":
                return False
            if stage == "after a part":
                return found.sent >= PART
            if stage.startswith(
                "after the last part"
            ):  # the intake reads the object back through the slow proxy
                return found.sent == len(data)
            return proxy.upstream_bytes > PART // 2

        assert wait_until(reached, 60.0), "the upload never reached the stage"
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate(timeout=10)
        killed_at = deliveries.load(d, sid)
        assert killed_at is not None and killed_at.state == "uploading"
        before = proxy.upstream_bytes
        proxy.faults.delay_s = 0.0
        again = subprocess.run(
            [sys.executable, "-m", "agent", "upload", sid, "--json"],
            capture_output=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert again.returncode == 0, again.stderr.decode()[-2000:]
        (row,) = json.loads(again.stdout)
        assert row["result"] == "delivered"
        resent = proxy.upstream_bytes - before
        held = killed_at.sent
        assert resent < len(data) - held + PART, (
            resent,
            held,
        )  # the parts the store held were not sent again
    stored = objects(s3, bucket)
    assert [v for k, v in stored.items() if k.startswith("bundles/")] == [data]
    after = deliveries.load(d, sid)
    assert after is not None and after.state == "delivered" and after.sent == len(data)


def test_a_delivered_session_stays_when_the_study_keeps_it_and_a_refused_one_always_does(  # noqa: PLR0917 - fixtures
    consented: Consented,
    session: str,  # noqa: F811 - the fixture
    study_file: Path,
    s3: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d, _study = consented
    bucket = f"s3://{s3.bucket()}/intake"
    with exported_to(s3, bucket, consented, study_file, session, tmp_path, after_upload="keep") as intake:
        assert cli.main(["upload", session, "--json"]) == 0
        (row,) = json.loads(_last_json(capsys))
        assert row["result"] == "delivered" and "deleted_locally" not in row
        assert (d.sessions / session).is_dir() and (tmp_path / "out" / f"{session}.optin.tar.age").is_file()
        # the study deletes after an upload; a second export of the delivered session is refused: kept
        uploading_study(d, study_file, intake.url, after_upload="delete")
        assert cli.main(["export", session, "--approve", "--out", str(tmp_path / "again")]) == 0
        assert cli.main(["upload", session, "--json"]) == 1
        (row,) = json.loads(_last_json(capsys))
        assert row["result"] == "failed" and row["reason"] == "session_delivered"
        assert (d.sessions / session).is_dir() and (tmp_path / "again" / f"{session}.optin.tar.age").is_file()
