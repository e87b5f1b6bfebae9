"""A loopback TCP relay between a client and a real server, for connection faults a process kill cannot
make deterministic: the client's last packets written to its socket but never reaching the server.

A SIGKILLed worker with unread data in its receive buffer resets the connection, and the broker may never
handle the PUBACKs the worker had just written; a network fault does the same to any client. Whether it
does depends on timing; here `swallow_upstream()` makes it certain: from then on every byte the
client sends is read and dropped, so its writes complete but the server never sees them. `cut()` closes
every relayed connection; new ones are relayed normally again. TLS passes through untouched (the client
verifies the server's own certificate: the relay listens on the same host).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

CHUNK = 64 * 1024


class TcpRelay:
    def __init__(self, server_port: int, host: str = "127.0.0.1") -> None:
        self._server = (host, server_port)
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._swallow = threading.Event()
        self.swallowed_bytes = 0
        self._closed = threading.Event()
        self._accepting = threading.Thread(target=self._accept, name="relay-accept", daemon=True)
        self._accepting.start()

    def __enter__(self) -> TcpRelay:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def swallow_upstream(self) -> None:
        """Read and drop what clients send from now on (until `cut`): their writes succeed, the server
        never receives them."""
        self._swallow.set()

    def cut(self) -> None:
        """Close every relayed connection; the next connection is relayed whole again."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            for client, server in pairs:
                for sock in (client, server):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
            self._swallow.clear()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._server)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                if upstream and self._swallow.is_set():
                    self.swallowed_bytes += len(data)
                    continue
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
