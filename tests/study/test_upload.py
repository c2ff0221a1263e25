"""optin upload → optin dataset intake → the bucket → optin dataset build, for real (docs/upload.md):
a real SeaweedFS and a real intake process (uvicorn) on 127.0.0.1, started by the suite; a TCP proxy
cutting and slowing connections; the client killed and the intake restarted mid-upload."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.export import deliveries
from agent.paths import Dirs, dirs
from agent.store import signing
from agent.upload.http import Client
from agent.upload.sender import Sender, Signer, UploadFailed
from agent.upload_protocol import MIN_PART_SIZE, UploadRequest, sign_request
from tests.proxy import cutting_proxy
from tests.servers import IntakeServer, S3Server, intake_server
from tests.study.synth import STUDY_ID, make_bundles, make_study_identity, volunteer_identity

PART = MIN_PART_SIZE
#: the intake as the tests run it: 5 MiB parts (S3's smallest), so a 12 MB bundle is three parts
INTAKE_ARGS = ("--part-size", str(PART))


@dataclass
class Volunteer:
    """A volunteer's optin home, their signing identity for the study, and a sender to the intake."""

    dirs: Dirs
    signer: Signer
    client: Client
    sender: Sender

    def export(self, path: Path, session: str) -> deliveries.Delivery:
        """Record ``path`` as the export of ``session`` (as export_session does)."""
        data = path.read_bytes()
        return deliveries.record_export(
            self.dirs, session, path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), study=STUDY_ID
        )


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Every client a test makes, closed at its end."""
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def volunteer(
    tmp: Path, index: int, intake_url: str, monkeypatch: pytest.MonkeyPatch, clients: list[Client]
) -> Volunteer:
    home = tmp / f"volunteer-{index}"
    home.mkdir(mode=0o700, exist_ok=True)
    monkeypatch.setenv("OPTIN_HOME", str(home))
    identity = volunteer_identity(7, index)
    signer = Signer(
        identity,
        STUDY_ID,
        signing.volunteer_id(identity, STUDY_ID),
        signing.public_signing_key(identity, STUDY_ID),
    )
    client = Client(timeout=10)
    clients.append(client)
    d = dirs()
    return Volunteer(
        d, signer, client, Sender(d, client, intake_url, signer, sleep=lambda s: time.sleep(min(s, 0.2)))
    )


@pytest.fixture
def alice(
    intake: IntakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clients: list[Client]
) -> Volunteer:
    """Volunteer 0, sending to the test's intake."""
    return volunteer(tmp_path, 0, intake.url, monkeypatch, clients)


def random_bundle(tmp: Path, session: str, size: int, seed: int = 0) -> Path:
    """Bytes that stand for an encrypted bundle (the intake never decrypts: any bytes are a bundle to it)."""
    path = tmp / f"{session}.optin.tar.age"
    path.write_bytes(hashlib.sha256(f"{seed}".encode()).digest() * (size // 32) + b"x" * (size % 32))
    return path


@pytest.fixture
def bucket(s3: S3Server) -> str:
    return f"s3://{s3.bucket()}/intake"


@pytest.fixture
def intake(s3: S3Server, bucket: str, tmp_path: Path) -> Iterator[IntakeServer]:
    with intake_server(s3, bucket, STUDY_ID, tmp_path, args=INTAKE_ARGS) as server:
        yield server


def objects(s3: S3Server, bucket_url: str) -> dict[str, bytes]:
    """Every object below the intake's prefix, by key relative to it."""
    name, prefix = bucket_url.removeprefix("s3://").split("/", 1)
    client = s3.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=name, Key=item["Key"])["Body"].read()
            out[item["Key"].removeprefix(prefix + "/")] = body
    return out


SESSION = "20261206T120000Z-0a1b2c3d"


def test_a_bundle_in_parts_is_delivered_once(
    alice: Volunteer,
    intake: IntakeServer,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    v = alice
    path = random_bundle(tmp_path, SESSION, 2 * PART + 12345)
    seen: list[tuple[int, int]] = []
    done = v.sender.send(v.export(path, SESSION), lambda sent, total: seen.append((sent, total)))
    assert done.state == "delivered" and done.sent == done.size == path.stat().st_size
    assert deliveries.load(v.dirs, SESSION) == done
    assert seen[0] == (0, done.size) and seen[-1] == (done.size, done.size) and len(seen) == 4  # 3 parts
    stored = objects(s3, bucket)
    key = f"bundles/{v.signer.volunteer}/{SESSION}.optin.tar.age"
    assert stored[key] == path.read_bytes()
    record = json.loads(stored[f"intake/sessions/{v.signer.volunteer}/{SESSION}.json"])
    assert record["state"] == "stored" and record["sha256"] == done.sha256
    # again: the intake says it has it; nothing is sent
    again = v.sender.send(deliveries.updated(done, state="exported", sent=0))
    assert again.state == "delivered"
    assert objects(s3, bucket) == stored


def raw(
    url: str, action: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to the intake as any client could (no checks of our own): status and JSON answer."""
    import http.client

    port = int(url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            f"/v1/{action}",
            body=body,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read() or b"{}")
    finally:
        conn.close()


def request_of(
    v: Volunteer, session: str, size: int, sha: str, action: str = "begin", **kw: Any
) -> UploadRequest:
    fields: dict[str, Any] = {
        "action": action,
        "study": STUDY_ID,
        "volunteer": v.signer.volunteer,
        "signing_key": v.signer.signing_key,
        "session": session,
        "size": size,
        "sha256": sha,
        "time": int(time.time()),
    }
    fields.update(kw)
    return UploadRequest(**fields)


def test_bundles_of_several_volunteers_are_delivered_and_built_from_the_intake_bucket(
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clients: list[Client],
) -> None:
    identity_file, recipient = make_study_identity(tmp_path)
    made = make_bundles(tmp_path / "exports", recipient, volunteers=3, sessions=2, seed=7, steps=3)
    with intake_server(s3, bucket, STUDY_ID, tmp_path, args=INTAKE_ARGS) as intake:
        for b in made:
            v = volunteer(tmp_path, b.volunteer_index, intake.url, monkeypatch, clients)
            assert v.signer.volunteer == b.volunteer
            assert v.sender.send(v.export(b.path, b.session)).state == "delivered"
    stored = objects(s3, bucket)
    for b in made:
        assert stored[f"bundles/{b.volunteer}/{b.session}.optin.tar.age"] == b.path.read_bytes()
    dest = tmp_path / "dataset"
    env = {**os.environ, **s3.env()}
    built = subprocess.run(
        [sys.executable, "-m", "agent", "dataset", "build", f"{bucket}/bundles", str(dest),
         "--identity", str(identity_file), "--workers", "1", "--json"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    report = json.loads(built.stdout)
    assert report["bundles"]["ingested"] == len(made), report
    stats = subprocess.run(
        [sys.executable, "-m", "agent", "dataset", "stats", str(dest), "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    totals = json.loads(stats.stdout)["totals"]
    assert totals["volunteers"] == 3 and totals["sessions"] == len(made), totals


def test_a_connection_cut_mid_part_is_sent_again_and_nothing_is_duplicated(
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clients: list[Client],
) -> None:
    host, port = s3.endpoint_url.removeprefix("http://").rsplit(":", 1)
    with (
        cutting_proxy((host, int(port))) as proxy,
        intake_server(s3, bucket, STUDY_ID, tmp_path, args=INTAKE_ARGS, endpoint=proxy.url) as intake,
    ):
        proxy.faults.cut_after, proxy.faults.cuts = PART // 2, 2  # two parts die half-way
        v = volunteer(tmp_path, 0, intake.url, monkeypatch, clients)
        path = random_bundle(tmp_path, SESSION, 2 * PART + 777)
        done = v.sender.send(v.export(path, SESSION))
        assert proxy.cut == 2
    assert done.state == "delivered"
    stored = objects(s3, bucket)
    assert stored[f"bundles/{v.signer.volunteer}/{SESSION}.optin.tar.age"] == path.read_bytes()
    assert [k for k in stored if k.startswith("bundles/")] == [
        f"bundles/{v.signer.volunteer}/{SESSION}.optin.tar.age"
    ]


def test_a_network_that_stays_down_leaves_the_upload_to_resume(
    alice: Volunteer,
    intake: IntakeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clients: list[Client],
) -> None:
    v = alice
    path = random_bundle(tmp_path, SESSION, PART + 1)
    exported = v.export(path, SESSION)
    intake.stop()
    with pytest.raises(UploadFailed, match=r"did not answer.*run optin upload again") as info:
        v.sender.send(exported)
    assert info.value.retry
    left = deliveries.load(v.dirs, SESSION)
    assert left is not None and left.state == "exported" and "refused the connection" in left.message
    intake.start()
    assert v.sender.send(left).state == "delivered"


def test_the_intake_restarted_mid_upload_resumes_from_the_parts_the_store_holds(
    alice: Volunteer,
    intake: IntakeServer,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    v = alice
    path = random_bundle(tmp_path, SESSION, 2 * PART + 5)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    status, answer = raw(
        intake.url, "begin", sign_request(v.signer.identity, request_of(v, SESSION, len(data), sha))
    )
    assert status == 200 and answer["status"] == "upload" and len(answer["send"]) == 3
    first = answer["send"][0]
    reply = v.client.request("PUT", first["url"], data[:PART], headers={}, limit=4096)
    assert reply.status == 200
    assert intake.restart().proc is not None
    seen: list[int] = []
    done = v.sender.send(v.export(path, SESSION), lambda sent, _total: seen.append(sent))
    assert done.state == "delivered" and seen[0] == PART  # part 1 was held: not sent again
    assert objects(s3, bucket)[f"bundles/{v.signer.volunteer}/{SESSION}.optin.tar.age"] == data


def test_forged_stale_and_malformed_requests_are_refused(
    intake: IntakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clients: list[Client]
) -> None:
    mine = volunteer(tmp_path, 0, intake.url, monkeypatch, clients)
    theirs = volunteer(tmp_path, 1, intake.url, monkeypatch, clients)
    sha = hashlib.sha256(b"x").hexdigest()
    good = request_of(mine, SESSION, PART, sha)
    body = json.loads(sign_request(mine.signer.identity, good))
    # their id with my signature; my id with their key; a flipped signature
    for member, value in (
        ("volunteer", theirs.signer.volunteer),
        ("signing_key", base64.b64encode(theirs.signer.signing_key).decode()),
    ):
        forged = json.loads(json.dumps(body))
        forged["request"][member] = value
        assert raw(intake.url, "begin", json.dumps(forged).encode()) == (403, {
            "status": "refused", "reason": "bad_signature",
            "message": "the signature or the volunteer id does not match the signing key"})  # fmt: skip
    flipped = json.loads(json.dumps(body))
    sig = bytearray(base64.b64decode(flipped["signature"]))
    sig[0] ^= 1
    flipped["signature"] = base64.b64encode(bytes(sig)).decode()
    assert raw(intake.url, "begin", json.dumps(flipped).encode())[1]["reason"] == "bad_signature"
    stale = sign_request(
        mine.signer.identity, request_of(mine, SESSION, PART, sha, time=int(time.time()) - 700)
    )
    assert raw(intake.url, "begin", stale)[1]["reason"] == "stale_request"
    other_study = sign_request(mine.signer.identity, request_of(mine, SESSION, PART, sha, study="other"))
    assert raw(intake.url, "begin", other_study)[1]["reason"] == "wrong_study"
    assert raw(intake.url, "begin", b"{not json")[0] == 400
    assert raw(intake.url, "begin", b"[" * 5000 + b"]" * 5000)[0] == 400
    assert raw(intake.url, "begin", b"{" + b" " * (70 * 1024) + b"}")[1]["reason"] == "request_too_large"
    assert raw(intake.url, "nothing", json.dumps(body).encode())[0] == 404
    # a replayed begin gets the same answer, and changes nothing
    first = raw(intake.url, "begin", json.dumps(body).encode())
    again = raw(intake.url, "begin", json.dumps(body).encode())
    assert first[0] == again[0] == 200 and [p["part"] for p in first[1]["send"]] == [
        p["part"] for p in again[1]["send"]
    ]


def test_a_slow_client_is_cut_off(intake: IntakeServer) -> None:
    import socket

    port = int(intake.url.rsplit(":", 1)[1].strip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/begin HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        started = time.monotonic()
        answer = sock.recv(4096)
        took = time.monotonic() - started
        while not answer.endswith(b"}") and (more := sock.recv(4096)):
            answer += more
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert b'"reason":"request_timeout"' in answer
    assert took < 25  # the 10 s body limit, with room for a loaded machine


def test_a_second_export_of_a_delivered_session_is_refused_not_overwritten(
    alice: Volunteer,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    v = alice
    first = random_bundle(tmp_path, SESSION, 1000, seed=1)
    assert v.sender.send(v.export(first, SESSION)).state == "delivered"
    (tmp_path / "again").mkdir()
    second = random_bundle(tmp_path / "again", SESSION, 1000, seed=2)
    with pytest.raises(UploadFailed, match="session_delivered") as info:
        v.sender.send(v.export(second, SESSION))
    assert not info.value.retry
    after = deliveries.load(v.dirs, SESSION)
    assert after is not None and after.state == "refused" and after.reason == "session_delivered"
    assert after.shown_state() == "refused: session_delivered"
    assert objects(s3, bucket)[f"bundles/{v.signer.volunteer}/{SESSION}.optin.tar.age"] == first.read_bytes()


def test_rate_limits_answer_retry_with_a_wait(
    s3: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clients: list[Client]
) -> None:
    with intake_server(s3, bucket, STUDY_ID, tmp_path, args=(*INTAKE_ARGS, "--rate", "4")) as intake:
        v = volunteer(tmp_path, 0, intake.url, monkeypatch, clients)
        sha = hashlib.sha256(b"x").hexdigest()
        answers = [
            raw(
                intake.url,
                "status",
                sign_request(v.signer.identity, request_of(v, SESSION, 1, sha, action="status")),
            )
            for _ in range(4)
        ]
    assert [a[0] for a in answers[:2]] == [404, 404]  # the burst: half a minute's requests
    assert (
        answers[-1][0] == 429
        and answers[-1][1]["reason"] == "rate_limited"
        and answers[-1][1]["retry_after"] >= 1
    )


def test_health_and_metrics(
    alice: Volunteer,
    intake: IntakeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clients: list[Client],
) -> None:
    import urllib.request

    with urllib.request.urlopen(intake.url + "healthz", timeout=10) as reply:  # noqa: S310 - our own http://127.0.0.1
        assert reply.status == 200 and json.loads(reply.read()) == {"status": "ok"}
    v = alice
    v.sender.send(v.export(random_bundle(tmp_path, SESSION, 10), SESSION))
    raw(intake.url, "begin", b"{}")
    with urllib.request.urlopen(intake.url + "metrics", timeout=10) as reply:  # noqa: S310
        text = reply.read().decode()
    assert "optin_intake_stored_total 1" in text
    assert 'optin_intake_refused_total{reason="bad_request"} 1' in text
    assert "optin_intake_uploads_in_progress 0" in text
    log = (intake.log or Path()).read_text()
    assert SESSION in log and v.signer.volunteer in log  # ids and codes only: never a body
    assert base64.b64encode(v.signer.signing_key).decode() not in log


def test_a_withdrawn_volunteer_is_refused_by_the_intake(
    s3: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clients: list[Client]
) -> None:
    """The intake reads the dataset's withdrawal register (--dest): a withdrawn volunteer's uploads are
    refused, everyone else's taken."""
    identity_file, recipient = make_study_identity(tmp_path)
    made = make_bundles(tmp_path / "exports", recipient, volunteers=2, sessions=1, seed=7, steps=2)
    dest = tmp_path / "dataset"
    env = {**os.environ, **s3.env()}
    for argv in (
        ["build", str(tmp_path / "exports"), str(dest), "--identity", str(identity_file), "--workers", "1"],
        ["withdraw", str(dest), "--volunteer", made[0].volunteer],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "agent", "dataset", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    with intake_server(s3, bucket, STUDY_ID, tmp_path, args=(*INTAKE_ARGS, "--dest", str(dest))) as intake:
        gone, kept = (volunteer(tmp_path, b.volunteer_index, intake.url, monkeypatch, clients) for b in made)
        with pytest.raises(UploadFailed, match="volunteer_withdrawn") as info:
            gone.sender.send(gone.export(random_bundle(tmp_path, SESSION, 100), SESSION))
        assert not info.value.retry
        other = "20261206T120000Z-99999999"
        (tmp_path / "kept").mkdir()
        assert (
            kept.sender.send(kept.export(random_bundle(tmp_path / "kept", other, 100), other)).state
            == "delivered"
        )
    assert [k for k in objects(s3, bucket) if k.startswith("bundles/")] == [
        f"bundles/{kept.signer.volunteer}/{other}.optin.tar.age"
    ]


def test_an_upload_the_store_dropped_starts_again(
    alice: Volunteer,
    intake: IntakeServer,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    """A lifecycle rule (or an operator) aborts an unfinished upload: the next begin starts a new one."""
    v = alice
    path = random_bundle(tmp_path, SESSION, PART + 10)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    status, _answer = raw(
        intake.url, "begin", sign_request(v.signer.identity, request_of(v, SESSION, len(data), sha))
    )
    assert status == 200
    name, prefix = bucket.removeprefix("s3://").split("/", 1)
    client = s3.client()
    (upload,) = client.list_multipart_uploads(Bucket=name, Prefix=prefix)["Uploads"]
    client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    assert v.sender.send(v.export(path, SESSION)).state == "delivered"
    assert objects(s3, bucket)[f"bundles/{v.signer.volunteer}/{SESSION}.optin.tar.age"] == data


def test_bytes_that_are_not_the_bundle_announced_are_deleted_and_refused(
    alice: Volunteer,
    intake: IntakeServer,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    """A client that announces one bundle and sends other bytes of the same size gets sha256_mismatch;
    nothing stays in the store, and the session can then be sent right."""
    v = alice
    path = random_bundle(tmp_path, SESSION, 1000)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    begin = sign_request(v.signer.identity, request_of(v, SESSION, len(data), sha))
    status, answer = raw(intake.url, "begin", begin)
    (part,) = answer["send"]
    assert v.client.request("PUT", part["url"], b"z" * len(data), headers={}, limit=4096).status == 200
    complete = sign_request(v.signer.identity, request_of(v, SESSION, len(data), sha, action="complete"))
    status, answer = raw(intake.url, "complete", complete)
    assert (status, answer["reason"]) == (422, "sha256_mismatch")
    assert not [k for k in objects(s3, bucket) if k.startswith("bundles/")]
    assert v.sender.send(v.export(path, SESSION)).state == "delivered"


def test_one_volunteer_is_limited_from_several_addresses(
    s3: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clients: list[Client]
) -> None:
    import http.client

    with intake_server(s3, bucket, STUDY_ID, tmp_path, args=(*INTAKE_ARGS, "--rate", "4")) as intake:
        v = volunteer(tmp_path, 0, intake.url, monkeypatch, clients)
        sha = hashlib.sha256(b"x").hexdigest()
        statuses = []
        for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):  # each address has its own bucket
            conn = http.client.HTTPConnection(
                "127.0.0.1", intake.port, timeout=30, source_address=(address, 0)
            )
            body = sign_request(v.signer.identity, request_of(v, SESSION, 1, sha, action="status"))
            conn.request("POST", "/v1/status", body=body, headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            statuses.append((reply.status, json.loads(reply.read()).get("message", "")))
            conn.close()
    assert [s for s, _m in statuses] == [404, 404, 429]
    assert "this volunteer" in statuses[-1][1]


@pytest.mark.parametrize(
    "option", [("--part-size", "1MiB"), ("--rate", "0"), ("--url-ttl", "10"), ("--url-ttl", "9999999")]
)
def test_bad_intake_options_are_refused_with_the_fix(
    option: tuple[str, str], s3: S3Server, bucket: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "dataset", "intake", "--bucket", bucket, "--study-id", STUDY_ID,
         "--listen", "127.0.0.1:0", *option],
        capture_output=True, text=True, env={**os.environ, **s3.env()}, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Fix:" in done.stderr and "Traceback" not in done.stderr


def _certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the test's own authority) and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "optin test intake")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "intake-cert.pem", tmp / "intake-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_the_intake_over_tls_is_trusted_only_with_its_certificate(
    s3: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clients: list[Client]
) -> None:
    """``--tls-cert``/``--tls-key``: the client checks the certificate (the system's authorities by
    default): an intake whose certificate it does not trust gets nothing, one it trusts the bundle."""
    import ssl

    cert, key = _certificate(tmp_path)
    server = IntakeServer(
        bucket, STUDY_ID, s3.env(), (*INTAKE_ARGS, "--tls-cert", str(cert), "--tls-key", str(key))
    )
    server.log, server.scheme = tmp_path / "intake-tls.log", "https"
    server.start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        v = volunteer(tmp_path, 0, server.url, monkeypatch, clients)
        path = random_bundle(tmp_path, SESSION, 100)
        with pytest.raises(UploadFailed, match=r"certificate of 127.0.0.1:.* is not trusted"):
            v.sender.send(v.export(path, SESSION))
        trusting = Client(timeout=10, context=ssl.create_default_context(cafile=str(cert)))
        clients.append(trusting)
        sender = Sender(v.dirs, trusting, server.url, v.signer)
        assert sender.send(v.export(path, SESSION)).state == "delivered"
    finally:
        server.stop()


def test_a_damaged_record_in_the_bucket_is_not_trusted(
    alice: Volunteer,
    intake: IntakeServer,
    s3: S3Server,
    bucket: str,
) -> None:
    """A record the intake did not write (garbage, another session's, a state it does not know) is never
    read as stored: the intake answers retry (internal_error) and logs it, and nothing is sent."""
    v = alice
    name, prefix = bucket.removeprefix("s3://").split("/", 1)
    key = f"{prefix}/intake/sessions/{v.signer.volunteer}/{SESSION}.json"
    sha = hashlib.sha256(b"x").hexdigest()
    begin = sign_request(v.signer.identity, request_of(v, SESSION, 1, sha))
    good = {
        "v": 1, "volunteer": v.signer.volunteer, "session": SESSION, "signing_key": "", "size": 1,
        "sha256": sha, "part_size": PART, "upload_id": "u", "state": "stored", "reason": None,
        "began": 1, "finished": 2,
    }  # fmt: skip
    for damaged in (
        b"garbage",
        json.dumps({**good, "session": "20261206T120000Z-ffffffff"}).encode(),
        json.dumps({**good, "state": "delivered"}).encode(),
        json.dumps({**good, "reason": "made up"}).encode(),
        b"[" * 10_000,
    ):
        s3.client().put_object(Bucket=name, Key=key, Body=damaged)
        status, answer = raw(intake.url, "begin", begin)
        assert (status, answer["status"], answer["reason"]) == (500, "retry", "internal_error"), damaged[:40]
    s3.client().put_object(Bucket=name, Key=key, Body=json.dumps(good).encode())
    assert raw(intake.url, "begin", begin)[1]["status"] == "stored"  # the record as the intake writes it
    assert "is damaged" in (intake.log or Path()).read_text()


def test_a_full_store_refuses_the_parts_and_the_upload_resumes_when_it_has_room(
    alice: Volunteer,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    """The store stops taking writes mid-upload (full: SeaweedFS answers 500 to every write, as a
    read-only bucket does): the volunteer is told to try later and tell the study, nothing counts as
    sent that the store did not take, and once it has room the upload carries on and is delivered."""
    v = alice
    path = random_bundle(tmp_path, SESSION, 2 * PART + 3)
    exported = v.export(path, SESSION)
    name = bucket.removeprefix("s3://").split("/", 1)[0]
    sent: list[int] = []

    def fill_after_the_first_part(done: int, _total: int) -> None:
        sent.append(done)
        if done >= PART and len(sent) == 2:
            s3.writable(name, writable=False)

    try:
        with pytest.raises(
            UploadFailed, match=r"could not be sent.*HTTP 500.*if the store is full, tell the study"
        ) as info:
            v.sender.send(exported, fill_after_the_first_part)
        assert info.value.retry
        left = deliveries.load(v.dirs, SESSION)
        assert left is not None and left.state == "uploading" and left.sent == PART
    finally:
        s3.writable(name, writable=True)
    assert v.sender.send(left).state == "delivered"
    assert objects(s3, bucket)[f"bundles/{v.signer.volunteer}/{SESSION}.optin.tar.age"] == path.read_bytes()
