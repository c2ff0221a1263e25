"""optin upload → optin dataset intake → the bucket → optin dataset build, for real (docs/upload.md):
a real SeaweedFS and a real intake process (uvicorn) on 127.0.0.1, started by the suite; a TCP proxy
cutting and slowing connections; the client killed and the intake restarted mid-upload."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
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
from tests.proxy import CuttingProxy, cutting_proxy
from tests.servers import IntakeServer, S3Server, intake_server
from tests.study.synth import STUDY_ID, make_bundles, make_study_identity, volunteer_identity
from tests.tools import wait_until

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
    return Volunteer(d, signer, client, Sender(d, client, intake_url, signer, sleep=lambda s: time.sleep(min(s, 0.2))))


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
    intake: IntakeServer,
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clients: list[Client],
) -> None:
    v = volunteer(tmp_path, 0, intake.url, monkeypatch, clients)
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
