"""HTTP(S) for ``optin upload``, with the standard library's :mod:`http.client`.

Only addresses :func:`agent.upload_protocol.url_problem` accepts (https, or http to this computer);
TLS with the system's certificates and host name checks (``ssl.create_default_context``); no redirect
is followed (a 3xx is an answer like any other); every answer body is read up to a limit; every socket
operation has a timeout. Failures are :class:`NetworkError`, naming the host and what failed, never a
URL's query (a presigned URL holds a signature) or a body.
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass

from agent.upload_protocol import Address, split_url

#: Seconds one connect, send or receive may take before the attempt fails.
TIMEOUT_S = 30.0
USER_AGENT = "optin-upload/1"


class NetworkError(Exception):
    """The request did not get an answer (connection refused or cut, timeout, TLS); retrying may help."""


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, the headers the client uses, the body (at most the caller's limit)."""

    status: int
    etag: str
    retry_after: str
    body: bytes


class Client:
    """One connection per host, reused; a failed request closes it (the next one reconnects).

    :param context: the TLS context (tests pass one trusting their own certificate authority).
    """

    def __init__(self, *, timeout: float = TIMEOUT_S, context: ssl.SSLContext | None = None) -> None:
        self._timeout = timeout
        self._context = context or ssl.create_default_context()
        self._connections: dict[tuple[bool, str, int], http.client.HTTPConnection] = {}

    def _connection(self, address: Address) -> http.client.HTTPConnection:
        key = (address.https, address.host, address.port)
        found = self._connections.get(key)
        if found is None:
            host = address.host.strip("[]")
            if address.https:
                found = http.client.HTTPSConnection(
                    host, address.port, timeout=self._timeout, context=self._context
                )
            else:
                found = http.client.HTTPConnection(host, address.port, timeout=self._timeout)
            self._connections[key] = found
        return found

    def request(
        self,
        method: str,
        url: str,
        body: bytes | memoryview,
        *,
        headers: dict[str, str],
        limit: int,
    ) -> Reply:
        """Send one request to ``url`` and read its answer (at most ``limit`` body bytes are kept; the
        rest is read and dropped only up to ``limit`` more, then the connection is closed).

        :raises ValueError: ``url`` is not an address the client may use (never quoted).
        :raises NetworkError: no answer.
        """
        address = split_url(url)
        connection = self._connection(address)
        sent = {"User-Agent": USER_AGENT, "Content-Length": str(len(body)), **headers}
        try:
            connection.request(method, address.target, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read(limit + 1)
            complete = response.isclosed() or len(data) <= limit
            reply = Reply(
                response.status,
                response.getheader("ETag", "") or "",
                response.getheader("Retry-After", "") or "",
                data,
            )
            if not complete or response.getheader("Connection", "").lower() == "close":
                self._drop(address)
        except (OSError, http.client.HTTPException) as exc:
            self._drop(address)
            raise NetworkError(_what_failed(address, exc)) from None
        return reply

    def _drop(self, address: Address) -> None:
        found = self._connections.pop((address.https, address.host, address.port), None)
        if found is not None:
            found.close()

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _what_failed(address: Address, exc: BaseException) -> str:
    where = f"{address.host}:{address.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the certificate of {where} is not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {where} failed ({type(exc).__name__})"
    if isinstance(exc, TimeoutError):
        return f"{where} did not answer within {TIMEOUT_S:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where} refused the connection"
    if isinstance(exc, ConnectionError | http.client.RemoteDisconnected | http.client.IncompleteRead):
        return f"the connection to {where} was cut"
    return f"talking to {where} failed ({type(exc).__name__})"


__all__ = ["TIMEOUT_S", "Client", "NetworkError", "Reply"]
