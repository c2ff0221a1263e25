"""``optin dataset intake``: the study's intake as an ASGI app (Starlette) served by uvicorn
(docs/upload.md; docs/operator-guide.md, "Receiving uploads").

A thin layer over :class:`agent.dataset.intake_service.Intake`: it reads each request body within its
size and time limits, runs the intake's work in a worker thread, and turns every outcome into the
spec's answer. ``GET /healthz`` says whether the store answers; ``GET /metrics`` gives counters in the
Prometheus text format. Logs carry actions, statuses, reason codes, ids and sizes, never a body.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from agent.canonical_json import canonical
from agent.dataset import intake_rules
from agent.dataset.dest_s3 import S3Dest
from agent.dataset.intake_service import Intake, RetryLater, Settings, StoreUnavailable
from agent.upload_protocol import ACTIONS, MAX_REQUEST_BYTES, RequestRefused, refusal_body

log = logging.getLogger(__name__)

#: Seconds a client has to send a request's body.
BODY_TIMEOUT_S = 10.0
#: Seconds a health answer is reused (a probe every second costs one store call in five).
HEALTH_TTL_S = 5.0


class _TooLarge(Exception):
    pass


async def _body(request: Request) -> bytes:
    """The request's body: at most :data:`MAX_REQUEST_BYTES`, within :data:`BODY_TIMEOUT_S`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise _TooLarge
    out = bytearray()
    with anyio.fail_after(BODY_TIMEOUT_S):
        async for chunk in request.stream():
            out += chunk
            if len(out) > MAX_REQUEST_BYTES:
                raise _TooLarge
    return bytes(out)


def _json(status: int, body: bytes, retry_after: int | None = None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _answer(intake: Intake, action: str, body: bytes, address: str) -> Response:
    """Do one checked action in this worker thread and turn its outcome into the spec's answer."""
    started = time.monotonic()
    try:
        status, doc = intake.handle(action, body, address)
        out = _json(status, canonical(doc))
        outcome = str(doc["status"])
    except RetryLater as exc:
        code, data = refusal_body(exc.reason, exc.message, exc.retry_after)
        out, outcome = _json(code, data, exc.retry_after), f"retry|{exc.reason}"
    except RequestRefused as exc:
        code, data = refusal_body(exc.reason, exc.message)
        out, outcome = _json(code, data), f"refused|{exc.reason}"
    except StoreUnavailable:
        code, data = refusal_body("store_unavailable", "the study's storage did not answer", 60)
        out, outcome = _json(code, data, 60), "retry|store_unavailable"
    except Exception:  # a bug: logged with a correlation id, never the body
        incident = uuid.uuid4().hex[:12]
        log.exception("intake %s failed (incident %s)", action, incident)
        code, data = refusal_body("internal_error", f"the intake failed (incident {incident})", 60)
        out, outcome = _json(code, data, 60), "retry|internal_error"
    intake.count(outcome)
    log.info("%s %s %s %.0f ms", action, out.status_code, outcome, 1000 * (time.monotonic() - started))
    return out


def make_app(intake: Intake, *, store_check: Callable[[], None] | None = None) -> Starlette:
    """The ASGI app over ``intake``; ``store_check`` raises when the store does not answer (health)."""
    health: dict[str, Any] = {"at": 0.0, "ok": False}
    health_lock = threading.Lock()

    async def endpoint(request: Request) -> Response:
        action = str(request.path_params["action"])
        if action not in ACTIONS:
            code, data = refusal_body("bad_request", "no such action")
            return _json(404, data)
        try:
            body = await _body(request)
        except _TooLarge:
            intake.count("refused|request_too_large")
            code, data = refusal_body("request_too_large", f"a request is at most {MAX_REQUEST_BYTES} bytes")
            return _json(code, data)
        except (TimeoutError, ClientDisconnect):
            intake.count("refused|request_timeout")
            code, data = refusal_body(
                "request_timeout", f"the body did not arrive within {BODY_TIMEOUT_S:g} s"
            )
            return _json(code, data)
        address = request.client.host if request.client else "unknown"
        return await run_in_threadpool(_answer, intake, action, body, address)

    def healthy() -> bool:
        with health_lock:
            if time.monotonic() - health["at"] < HEALTH_TTL_S:
                return bool(health["ok"])
            try:
                (store_check or intake.dest.check_bucket)()
                ok = True
            except Exception:
                ok = False
            health.update(at=time.monotonic(), ok=ok)
            return ok

    async def healthz(_request: Request) -> Response:
        ok = await run_in_threadpool(healthy)
        return _json(200 if ok else 503, canonical({"status": "ok" if ok else "store_unavailable"}))

    async def metrics(_request: Request) -> Response:
        counters, gauges = intake.metrics()
        return PlainTextResponse(
            intake_rules.metrics_text(counters, gauges), media_type="text/plain; version=0.0.4"
        )

    routes = [
        Route("/v1/{action}", endpoint, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def serve(
    app: Starlette,
    host: str,
    port: int,
    *,
    tls_cert: str = "",
    tls_key: str = "",
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM (uvicorn's handlers): one process, a bounded number of
    connections, no server header, no access log (ours above carries no addresses)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        limit_concurrency=256,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=16 * 1024,
        ssl_certfile=tls_cert or None,
        ssl_keyfile=tls_key or None,
    )
    server = uvicorn.Server(config)
    if ready is not None:
        _announce_when_started(server, ready)
    server.run()


def _announce_when_started(server: Any, ready: Callable[[int], None]) -> None:
    def wait() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.02)
        sockets = [s for srv in server.servers for s in srv.sockets]
        ready(int(sockets[0].getsockname()[1]) if sockets else 0)

    threading.Thread(target=wait, name="optin-intake-ready", daemon=True).start()


#: Seconds between reads of the dataset's withdrawal register.
REGISTER_REFRESH_S = 60.0


class Withdrawn:
    """The withdrawn volunteers of the dataset in ``dest_url`` (pseudonyms and signing keys), read at
    start and every :data:`REGISTER_REFRESH_S` on a thread of its own; a failed read keeps the last."""

    def __init__(self, dest_url: str) -> None:
        from agent.dataset.stores import open_dest

        self._dest = open_dest(dest_url)
        self._keys: frozenset[str] = frozenset()
        self._stop = threading.Event()
        self.refresh()
        threading.Thread(target=self._run, name="optin-intake-register", daemon=True).start()

    def refresh(self) -> None:
        from agent.dataset.version_files import withdrawn_keys
        from agent.dataset.versions import read_current

        self._keys = withdrawn_keys(self._dest, read_current(self._dest))

    def _run(self) -> None:
        while not self._stop.wait(REGISTER_REFRESH_S):
            try:
                self.refresh()
            except Exception as exc:
                log.warning("the withdrawal register could not be read: %s", type(exc).__name__)

    def __call__(self) -> frozenset[str]:
        return self._keys

    def stop(self) -> None:
        self._stop.set()


def run(
    bucket_url: str,
    settings: Settings,
    *,
    listen: tuple[str, int],
    dest_url: str = "",
    tls_cert: str = "",
    tls_key: str = "",
    ready: Callable[[str], None] | None = None,
) -> None:
    """``optin dataset intake``: open the bucket (and the dataset's register), then serve until a signal;
    ``ready`` gets the address served once it is listening."""
    intake_dest = S3Dest.open(bucket_url)
    withdrawn = Withdrawn(dest_url) if dest_url else None
    intake = Intake(intake_dest, settings, withdrawn=withdrawn or frozenset)
    scheme = "https" if tls_cert else "http"

    def listening(port: int) -> None:
        host = f"[{listen[0]}]" if ":" in listen[0] else listen[0]
        if ready is not None:
            ready(f"{scheme}://{host}:{port}/")

    try:
        serve(make_app(intake), listen[0], listen[1], tls_cert=tls_cert, tls_key=tls_key, ready=listening)
    finally:
        if withdrawn is not None:
            withdrawn.stop()


__all__ = ["BODY_TIMEOUT_S", "Withdrawn", "make_app", "run", "serve"]
