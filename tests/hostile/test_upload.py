"""Hostile input across the upload's trust boundaries (docs/upload.md, "Limits and hostile input"):
request bodies the intake reads, answers the client reads, a hostile intake (a real HTTP server
that lies, redirects, floods and stalls), and a bundle file that is not what was exported."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.canonical_json import canonical
from agent.export import deliveries
from agent.paths import dirs
from agent.store import signing
from agent.upload.http import Client
from agent.upload.sender import Sender, Signer, UploadFailed
from agent.upload_protocol import (
    REASONS,
    BadAnswer,
    RequestRefused,
    UploadRequest,
    check_request,
    parse_answer,
    sign_request,
)
from tests.hostile.conftest import Tally, fuzz_rounds

SEED = 1912
IDENTITY = bytes(range(32))
STUDY = "hostile-study"
SESSION = "20261206T140000Z-0c1d2e3f"


def _request(**kw: Any) -> UploadRequest:
    key = signing.public_signing_key(IDENTITY, STUDY)
    fields: dict[str, Any] = {
        "action": "begin",
        "study": STUDY,
        "volunteer": signing.id_of_key(STUDY, key),
        "signing_key": key,
        "session": SESSION,
        "size": 1000,
        "sha256": "a" * 64,
        "time": 1_765_000_000,
    }
    fields.update(kw)
    return UploadRequest(**fields)


def test_p7_mutated_requests_are_refused_with_a_reason_or_mean_the_same(hostile: Tally) -> None:
    """Every byte flip, cut or insertion of a signed request: refused with a code of the spec, or (a
    change of spelling only) read back as exactly the request that was signed."""
    good = sign_request(IDENTITY, _request())
    rng = random.Random(SEED)  # noqa: S311 - reproducible test inputs
    for _ in range(fuzz_rounds(400)):
        data = bytearray(good)
        for _edit in range(rng.randint(1, 4)):
            kind, at = rng.randrange(3), rng.randrange(len(data))
            if kind == 0:
                data[at] ^= 1 << rng.randrange(8)
            elif kind == 1:
                del data[at : at + rng.randint(1, 20)]
            else:
                data[at:at] = rng.randbytes(rng.randint(1, 8))
        hostile.tried("P7 upload requests")
        try:
            got, _sig = check_request(
                bytes(data), action="begin", study=STUDY, now=1_765_000_000, max_bundle_size=10**9
            )
        except RequestRefused as exc:
            assert exc.reason in REASONS and "\n" not in exc.message
        else:
            assert got == _request()
        hostile.held("P7 upload requests")


def test_p7_random_answers_never_crash_the_client(hostile: Tally) -> None:
    rng = random.Random(SEED + 1)  # noqa: S311
    shapes: list[Any] = [None, 0, -1, 2**70, 1.5, "", "x" * 5000, [], {}, True, [{"part": 1}], {"a": []}]
    keys = [
        "status",
        "part_size",
        "expires",
        "have",
        "send",
        "size",
        "sha256",
        "already",
        "reason",
        "message",
        "retry_after",
    ]
    statuses = ["upload", "stored", "refused", "retry", "other"]
    for _ in range(fuzz_rounds(600)):
        doc = {k: rng.choice(shapes) for k in rng.sample(keys, rng.randint(0, len(keys)))}
        doc["status"] = rng.choice(statuses)
        hostile.tried("P7 intake answers")
        try:
            answer = parse_answer(canonical(doc))
        except BadAnswer:
            pass
        else:
            assert answer.status in ("upload", "stored", "refused", "retry")
            assert all(
                p.url.startswith("https://") or p.url.startswith("http://127.0.0.1") for p in answer.send
            )
        hostile.held("P7 intake answers")


# --- a hostile intake ----------------------------------------------------------------------------


class _Hostile(BaseHTTPRequestHandler):
    """Answers every request with what the test's ``behave`` says; records what it was sent."""

    behave: Callable[[BaseHTTPRequestHandler, bytes], None]
    seen: list[tuple[str, str, int]]

    def do_POST(self) -> None:
        self._any()

    def do_PUT(self) -> None:
        self._any()

    def _any(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        type(self).seen.append((self.command, self.path, len(body)))
        type(self).behave(self, body)

    def log_message(self, format: str, *args: Any) -> None:
        return

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def hostile_intake() -> Iterator[tuple[str, type[_Hostile]]]:
    handler = type("Handler", (_Hostile,), {"seen": [], "behave": staticmethod(lambda h, b: None)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _sender(
    tmp: Path, url: str, clients: list[Client], monkeypatch: pytest.MonkeyPatch
) -> tuple[Sender, deliveries.Delivery]:
    monkeypatch.setenv("OPTIN_HOME", str(tmp / "home"))
    d = dirs()
    key = signing.public_signing_key(IDENTITY, STUDY)
    signer = Signer(IDENTITY, STUDY, signing.id_of_key(STUDY, key), key)
    client = Client(timeout=1)
    clients.append(client)
    bundle = tmp / f"{SESSION}.optin.tar.age"
    bundle.write_bytes(b"b" * 6_000_000)
    delivery = deliveries.record_export(
        d,
        SESSION,
        bundle,
        size=6_000_000,
        sha256=hashlib.sha256(bundle.read_bytes()).hexdigest(),
        study=STUDY,
    )
    return Sender(d, client, url, signer, sleep=lambda s: None), delivery


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def _json(h: BaseHTTPRequestHandler, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
    assert isinstance(h, _Hostile)
    h.reply(status, canonical(doc), headers)


def _upload_answer(url: str) -> dict[str, Any]:
    return {
        "status": "upload",
        "part_size": 5 * 1024 * 1024,
        "expires": int(time.time()) + 3600,
        "have": [],
        "send": [
            {"part": 1, "size": 5 * 1024 * 1024, "url": url},
            {"part": 2, "size": 6_000_000 - 5 * 1024 * 1024, "url": url},
        ],
    }


def _held() -> list[dict[str, Any]]:
    part = 5 * 1024 * 1024
    return [{"part": 1, "size": part, "etag": '"x"'}, {"part": 2, "size": 6_000_000 - part, "etag": '"y"'}]


HOSTILE_INTAKES: dict[str, tuple[Callable[[BaseHTTPRequestHandler, bytes], None], str]] = {
    "parts to another computer over http": (
        lambda h, b: _json(h, 200, _upload_answer("http://192.0.2.7/steal")),
        "not one of optin-upload/1",
    ),
    "a redirect": (
        lambda h, b: _json(h, 302, {}, {"Location": "https://elsewhere.example/"}),
        "not one of optin-upload/1",
    ),
    "an answer of 2 MB": (
        lambda h, b: h.reply(200, b"{" + b" " * 2_000_000 + b"}") if isinstance(h, _Hostile) else None,
        "not one of",
    ),
    "parts that do not cover the bundle": (
        lambda h, b: _json(
            h,
            200,
            {
                **_upload_answer("https://x.example/"),
                "send": [{"part": 1, "size": 10, "url": "https://x.example/"}],
            },
        ),
        "do not cover the bundle",
    ),
    "retry for ever": (
        lambda h, b: _json(
            h, 429, {"status": "retry", "reason": "rate_limited", "message": "m", "retry_after": 3600}
        ),
        "longer than optin waits",
    ),
    "a server error page": (
        lambda h, b: h.reply(502, b"<html>bad gateway</html>") if isinstance(h, _Hostile) else None,
        "did not answer after",
    ),
    "an unknown reason with control characters": (
        lambda h, b: _json(
            h, 403, {"status": "refused", "reason": "x\u202e\u0007", "message": "\u001b[31mred\u202e"}
        ),
        "refused",
    ),
    "a stall longer than the timeout": (lambda h, b: time.sleep(2), "did not answer"),
    "stored, but another bundle": (
        lambda h, b: _json(
            h, 200, {"status": "stored", "size": 6_000_000, "sha256": "0" * 64, "already": True}
        ),
        "stored another bundle",
    ),
    "parts asked for ever, none to send": (
        lambda h, b: _json(h, 200, {**_upload_answer("https://x.example/"), "send": [], "have": _held()}),
        "kept asking for parts",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_INTAKES))
def test_p7_a_hostile_intake_gets_nothing_and_the_volunteer_is_told(  # noqa: PLR0917 - fixtures
    name: str,
    hostile_intake: tuple[str, type[_Hostile]],
    tmp_path: Path,
    clients: list[Client],
    monkeypatch: pytest.MonkeyPatch,
    hostile: Tally,
) -> None:
    url, handler = hostile_intake
    behave, said = HOSTILE_INTAKES[name]
    handler.behave = staticmethod(behave)
    sender, delivery = _sender(tmp_path, url, clients, monkeypatch)
    hostile.tried("P7 hostile intakes")
    with pytest.raises(UploadFailed) as info:
        sender.send(delivery)
    message = str(info.value)
    assert said in message, message
    assert "\u202e" not in message and "\u001b" not in message and "\u0007" not in message
    assert all(command == "POST" for command, _path, _n in handler.seen), handler.seen  # no bundle bytes left
    after = deliveries.load(sender.dirs, SESSION)
    assert (
        after is not None
        and after.state in ("exported", "uploading", "refused")
        and after.state != "delivered"
    )
    hostile.held("P7 hostile intakes")


def test_p7_a_bundle_that_is_not_the_export_is_not_sent(
    tmp_path: Path, clients: list[Client], monkeypatch: pytest.MonkeyPatch, hostile: Tally
) -> None:
    """Replaced after export, cut short, a link in its place, a FIFO in its place: refused before
    anything is asked of the intake (nobody listens at the address)."""
    sender, delivery = _sender(tmp_path, "http://127.0.0.1:9/", clients, monkeypatch)
    bundle = Path(delivery.bundle)
    original = bundle.read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(original)

    def replaced() -> None:
        bundle.write_bytes(b"c" * len(original))

    def short() -> None:
        bundle.write_bytes(original[:-1])

    def link() -> None:
        bundle.unlink()
        os.symlink(elsewhere, bundle)

    def fifo() -> None:
        bundle.unlink()
        os.mkfifo(bundle)

    def gone() -> None:
        bundle.unlink()

    for damage in (replaced, short, link, fifo, gone):
        hostile.tried("P7 bundle files")
        damage()
        with pytest.raises(UploadFailed, match="export it again") as info:
            sender.send(delivery)
        assert not info.value.retry
        bundle.unlink(missing_ok=True)
        bundle.write_bytes(original)
        hostile.held("P7 bundle files")
    damaged = deliveries.damaged(SESSION)
    with pytest.raises(UploadFailed, match=r"record .* is damaged"):
        sender.send(damaged)
    with pytest.raises(UploadFailed, match="exported for study"):
        sender.send(deliveries.updated(delivery, study="another"))
