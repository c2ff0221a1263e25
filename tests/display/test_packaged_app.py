"""The one-folder app PyInstaller builds from packaging/pyinstaller/optin.spec runs on its own:
`optin doctor` and the whole `optin demo` (its own virtual display, tray, capture, export,
`optin inspect`), and it starts its dialog process without `python -m`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tools import unavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        unavailable("PyInstaller (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("pyinstaller")
    built = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "ERROR",
         "--distpath", str(out / "dist"), "--workpath", str(out / "build"),
         str(ROOT / "packaging" / "pyinstaller" / "optin.spec")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    yield out / "dist" / "optin" / "optin"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["OPTIN_HOME"] = str(tmp_path / "home")
    env.pop("DISPLAY", None)  # the demo brings its own display; doctor reports the missing one
    return env


def test_the_app_runs_doctor_and_its_dialog_process(app: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    version = subprocess.run([str(app), "--version"], capture_output=True, text=True, env=env, check=True)
    assert version.stdout.startswith("optin ")
    doctor = subprocess.run(
        [str(app), "doctor", "--json"], capture_output=True, text=True, env=env, check=False
    )
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    assert checks["packages"]["ok"] is True and checks["age"]["ok"] is True
    assert checks["display"]["ok"] is False and doctor.returncode == 2  # no DISPLAY here, as said
    request = json.dumps({"title": "t", "message": "m", "yes": "y", "no": "n"})
    dialog = subprocess.run(
        [str(app), "_dialog", "--confirm"],
        input=request,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert dialog.returncode == 2 and "display" in dialog.stderr.lower()  # dispatched, and says why not


def test_the_app_runs_the_whole_demo(app: Path, tmp_path: Path) -> None:
    demo = subprocess.run(
        [str(app), "demo", "--json"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=300,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    summary = json.loads(demo.stdout)
    assert summary["checks"] == "passed" and summary["steps"]["count"] > 0


def test_the_app_holds_no_study_side_and_says_how_to_get_it(app: Path, tmp_path: Path) -> None:
    """The volunteer's app carries none of the study side (boto3, pyarrow, Ray, the intake: pip's
    `study` extra, for operators); its one network command, `optin upload`, is there and says what it
    needs."""
    bundled = {p.name.split(".")[0].lower() for p in (app.parent / "_internal").iterdir()}
    assert not bundled & {"boto3", "botocore", "pyarrow", "ray", "matplotlib", "duckdb"}, bundled
    out = subprocess.run(
        [str(app), "dataset", "stats", str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        check=False,
    )
    assert out.returncode == 2 and "study extra" in out.stderr, out.stderr
    upload = subprocess.run(
        [str(app), "upload", "--all-exported"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        check=False,
    )
    assert upload.returncode == 2 and "Fix:" in upload.stderr and "Traceback" not in upload.stderr, (
        upload.stderr
    )
