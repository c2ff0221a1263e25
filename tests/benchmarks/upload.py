"""Upload (issue 19): ``optin upload`` through ``optin dataset intake`` into SeaweedFS, against a bare
boto3 multipart upload of the same file to the same store, in the same run; the cost of a resume
after a cut; and the intake's requests per second on one worker.

    python -m tests.benchmarks.upload [SIZE_MB] [RUNS]     # default 256 MB, 3 runs

Everything on 127.0.0.1: SeaweedFS (``weed mini``) and the intake are started here and stopped at
the end. Ours includes what the bare upload does not do: the client's SHA-256 of the whole file
before sending (it checks the file is the one exported), an MD5 per part, two signed requests, and
the intake's read-back of the completed object (its SHA-256 verdict); each is timed apart too.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from agent.export import deliveries
from agent.paths import dirs
from agent.upload.http import Client
from agent.upload.sender import Sender, signer_for
from agent.upload_protocol import UploadRequest, sign_request
from tests.proxy import cutting_proxy
from tests.servers import IntakeServer, S3Server, weed_server

assert sys.platform != "win32", "weed and the intake run on Linux and macOS here"

STUDY = "bench-study"
PART = 8 * 1024 * 1024
MB = 1e6


def _file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 << 20))
            f.write(chunk)
            left -= len(chunk)


def _bare(s3: S3Server, path: Path, key: str, threads: int) -> float:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=threads)
    client = s3.client()
    started = time.perf_counter()
    client.upload_file(str(path), s3.shared_bucket, key, Config=config)
    return time.perf_counter() - started


def _ours(home: Path, intake_url: str, path: Path, session: str, identity: bytes) -> tuple[float, float]:
    """Seconds for the whole upload, and of it the client's SHA-256 of the file."""
    os.environ["OPTIN_HOME"] = str(home)
    home.mkdir(exist_ok=True, mode=0o700)
    d = dirs()
    size = path.stat().st_size
    started = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    hashed = time.perf_counter() - started
    delivery = deliveries.record_export(d, session, path, size=size, sha256=digest.hexdigest(), study=STUDY)
    with Client() as client:
        started = time.perf_counter()
        done = Sender(d, client, intake_url, signer_for(identity, STUDY)).send(delivery)
        took = time.perf_counter() - started
    assert done.state == "delivered"
    return took + hashed, hashed


def _rps(
    intake_url: str, identity: bytes, session: str, *, size: int, sha: str, seconds: float = 5.0
) -> float:
    """Signed ``status`` requests of a stored session a second, from 4 client threads."""
    signer = signer_for(identity, STUDY)
    count = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker() -> None:
        with Client() as client:
            while time.monotonic() < stop:
                request = UploadRequest(
                    "status",
                    STUDY,
                    signer.volunteer,
                    signer.signing_key,
                    session,
                    size,
                    sha,
                    int(time.time()),
                )
                reply = client.request(
                    "POST",
                    intake_url + "v1/status",
                    sign_request(identity, request),
                    headers={},
                    limit=1 << 20,
                )
                assert reply.status == 200, reply.status
                with lock:
                    count[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count[0] / seconds


def main(argv: Sequence[str] = ()) -> int:
    size_mb = int(argv[0]) if argv else 256
    runs = int(argv[1]) if len(argv) > 1 else 3
    size = size_mb * 1_000_000
    identity = hashlib.sha256(b"bench volunteer").digest()
    with tempfile.TemporaryDirectory(prefix="optin-bench-upload-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "weed").mkdir()
        with weed_server(tmp / "weed") as s3:
            path = tmp / "bundle.optin.tar.age"
            _file(path, size)
            env = s3.env()
            for name, value in env.items():
                os.environ[name] = value
            bucket = f"s3://{s3.bucket()}/intake"
            intake = IntakeServer(bucket, STUDY, env, ("--rate", "1000000"), log=tmp / "intake.log").start()
            try:
                bare1 = [_bare(s3, path, f"bare1/{i}", 1) for i in range(runs)]
                bare10 = [_bare(s3, path, f"bare10/{i}", 10) for i in range(runs)]
                ours = [
                    _ours(tmp / f"home{i}", intake.url, path, f"20261206T000000Z-{i:08x}", identity)
                    for i in range(runs)
                ]
                sha = hashlib.sha256(path.read_bytes()).hexdigest()
                rps = _rps(intake.url, identity, "20261206T000000Z-00000000", size=size, sha=sha)
            finally:
                intake.stop()
            host, port = s3.endpoint_url.removeprefix("http://").rsplit(":", 1)
            with cutting_proxy((host, int(port))) as proxy:
                cut_intake = IntakeServer(
                    f"s3://{s3.bucket()}/intake",
                    STUDY,
                    {**env, "AWS_ENDPOINT_URL": proxy.url},
                    ("--rate", "1000000"),
                    log=tmp / "intake-cut.log",
                ).start()
                try:
                    clean_bytes = proxy.upstream_bytes
                    clean, _h = _ours(
                        tmp / "homecut0", cut_intake.url, path, "20261206T000001Z-00000000", identity
                    )
                    clean_bytes = proxy.upstream_bytes - clean_bytes
                    proxy.faults.cut_after, proxy.faults.cuts = PART // 2, 1
                    before = proxy.upstream_bytes
                    cut, _h = _ours(
                        tmp / "homecut1", cut_intake.url, path, "20261206T000002Z-00000000", identity
                    )
                    cut_bytes = proxy.upstream_bytes - before
                finally:
                    cut_intake.stop()
    med = statistics.median

    def rate(seconds: float) -> float:
        return size / seconds / MB

    print(f"upload of a {size_mb} MB bundle on loopback, {runs} runs, medians (SeaweedFS 'weed mini'):")
    print(f"{'':<44} {'seconds':>8} {'MB/s':>8} {'vs bare':>8}")
    one, ten = med(bare1), med(bare10)
    total, hashed = med([t for t, _h in ours]), med([h for _t, h in ours])
    rows = [
        ("bare boto3 multipart, 1 thread", one),
        ("bare boto3 multipart, 10 threads", ten),
        ("optin upload (intake, read-back, SHA-256)", total),
    ]
    for label, seconds in rows:
        print(f"{label:<44} {seconds:>8.2f} {rate(seconds):>8.0f} {one / seconds:>8.2f}")
    print(f"{'  of which the client SHA-256 of the file':<44} {hashed:>8.2f}")
    print(
        f"resume after one cut half-way through a part (through a proxy): {cut:.2f} s against {clean:.2f} s "
        f"clean (+{cut - clean:.2f} s); bytes sent {cut_bytes / MB:.1f} MB against {clean_bytes / MB:.1f} MB"
    )
    print(
        f"intake: {rps:.0f} signed status requests a second (4 client threads, one uvicorn worker, "
        "each a signature check and one record read from the store)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
