"""Where optin keeps its files.

Everything lives under one root when ``OPTIN_HOME`` is set (tests, the demo,
portable installs); otherwise platformdirs gives the OS conventions.  Every
directory is created 0700 and checked: a directory that another user owns or
can write to is refused, because the store's promises depend on it.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.errors import EnvironmentProblem

APP = "optin"


@dataclass(frozen=True)
class Dirs:
    """The agent's directories."""

    config: Path
    data: Path
    runtime: Path

    @property
    def sessions(self) -> Path:
        return self.data / "sessions"

    @property
    def keys(self) -> Path:
        return self.data / "keys"

    @property
    def exports(self) -> Path:
        return self.data / "exports"


def dirs() -> Dirs:
    """Return the agent's directories (not created)."""
    home = os.environ.get("OPTIN_HOME")
    if home:
        root = Path(home).expanduser().resolve()
        return Dirs(config=root / "config", data=root / "data", runtime=root / "run")
    import platformdirs

    data = Path(platformdirs.user_data_dir(APP, appauthor=False))
    if sys.platform.startswith("linux") and not os.environ.get("XDG_RUNTIME_DIR"):
        # No login session runtime dir (cron, su, containers): keep runtime files private under data.
        runtime = data / "run"
    else:
        runtime = Path(platformdirs.user_runtime_dir(APP, appauthor=False))
    return Dirs(
        config=Path(platformdirs.user_config_dir(APP, appauthor=False)),
        data=data,
        runtime=runtime,
    )


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700 and check that it is ours alone.

    :raises EnvironmentProblem: the directory is owned by another user or is
        writable by group or others.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private_dir(path)
    return path


def check_private_dir(path: Path) -> None:
    """Refuse a directory that someone else owns or can write to."""
    st = path.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        msg = (
            f"{path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()}); "
            "optin keeps its data only in directories you own. Fix: use your own OPTIN_HOME."
        )
        raise EnvironmentProblem(msg)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_IRGRP | stat.S_IROTH):
        msg = f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; optin needs it private. Fix: chmod 700 {path}"
        raise EnvironmentProblem(msg)
