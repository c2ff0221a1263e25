"""A TCP proxy on 127.0.0.1 that the upload tests put between the parts and the store, to cut
connections mid-request and to slow them down: the network failures ``optin upload`` must survive.

Real sockets and a real store behind it; only the bytes' path is interfered with.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Faults:
    """What the proxy does to the next connections: ``cut_after`` bytes sent upstream, the connection
    is reset (for ``cuts`` connections); every upstream chunk waits ``delay_s``."""

    cut_after: int = 0
    cuts: int = 0
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def should_cut(self, sent: int) -> bool:
        """Whether a connection that has sent ``sent`` bytes upstream is cut now (one of ``cuts``)."""
        if not self.cut_after or sent < self.cut_after:
            return False
        with self.lock:
            if self.cuts <= 0:
                return False
            self.cuts -= 1
            return True


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to ``target``; see :class:`Faults`. Counts connections, bytes and cuts."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.faults = Faults()
        self.connections = 0
        self.cut = 0
        self.upstream_bytes = 0
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._server], [], [], 0.1)
            if not ready:
                continue
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            worker = threading.Thread(target=self._pipe, args=(client,), name="proxy-pipe", daemon=True)
            worker.start()
            self._threads.append(worker)

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        sent = 0
        with contextlib.closing(client), contextlib.closing(upstream):
            while not self._stop.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 0.2)
                for sock in ready:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    if sock is client:
                        if self.faults.delay_s:
                            time.sleep(self.faults.delay_s)
                        if self.faults.should_cut(sent + len(data)):
                            upstream.sendall(data[: max(0, self.faults.cut_after - sent)])
                            with self._lock:
                                self.cut += 1
                            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            return  # closed with a reset: the request dies mid-body
                        upstream.sendall(data)
                        sent += len(data)
                        with self._lock:
                            self.upstream_bytes += len(data)
                    else:
                        client.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        for thread in self._threads:
            thread.join(timeout=5)


@contextlib.contextmanager
def cutting_proxy(target: tuple[str, int]) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()
