"""Benchmarks: ``make bench`` (``python -m tests.benchmarks``); not collected by pytest.

Each benchmark runs the bare library and optin's path side by side in one run
and prints the ratio.  Record results with the machine in docs/performance.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.paths import Dirs
    from agent.study import Study


def consented_home(home: Path, *, ocr: str | None = None) -> tuple[Dirs, Study]:
    """A throwaway OPTIN_HOME with keys (a file identity) and a consented study of every scope:
    ``(dirs, study)``.  Sets OPTIN_HOME, OPTIN_PASSPHRASE_FILE and a keyring that always fails.

    :param ocr: the study's ``[redaction] ocr`` (default: the demo study's).  Called again on the
        same ``home`` it installs and consents to that study, keeping the keys (the consent text,
        and so a session's ``consent_sha256``, stays the same).
    """
    from pyrage import x25519

    from agent import consent
    from agent.paths import dirs
    from agent.store import keys
    from agent.study import demo_study_toml, install_study

    os.environ["OPTIN_HOME"] = str(home)
    pw = home / "pw"
    pw.write_text("benchmark passphrase\n")
    pw.chmod(0o600)
    os.environ["OPTIN_PASSPHRASE_FILE"] = str(pw)
    os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    d = dirs()
    study_file = home / "study.toml"
    toml = demo_study_toml(str(x25519.Identity.generate().to_public()))
    study_file.write_text(toml if ocr is None else f'{toml}\n[redaction]\nocr = "{ocr}"\n')
    study = install_study(d, study_file)
    consent.grant(d, study, study.terms_sha256)
    if not (d.keys / "recipient").exists():
        keys.init_keys(d, storage="file")
    return d, study


def run_child(
    module: str, args: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """``python -m module --child ARGS`` in a fresh interpreter (its memory is its own): the JSON
    object its last line prints.  :raises RuntimeError: it failed (with the end of its stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--child", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    if done.returncode != 0:
        what = f"{module} --child {' '.join(args[:1])}"
        msg = f"{what} failed with status {done.returncode}: {done.stderr[-2000:]}"
        raise RuntimeError(msg)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
