"""A TCP proxy on 127.0.0.1 for tests: forwards to a server until frozen, then forwards nothing
and closes nothing (a network that drops every packet with the connections left open, or a
server that stopped answering), until thawed."""
from __future__ import annotations

import select
import socket
import threading


class FreezeProxy:
    """Listens on 127.0.0.1 (`port`) and forwards each connection to `target`; `freeze()`/`thaw()`."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, name="freeze-proxy", daemon=True)]
        self._threads[0].start()

    def freeze(self) -> None:
        """Stop forwarding in both directions; every connection stays open, new ones are accepted."""
        self._forwarding.clear()

    def thaw(self) -> None:
        """Forward again what waited and what comes."""
        self._forwarding.set()

    def close(self) -> None:
        """Close every connection and stop."""
        self._closing.set()
        self._forwarding.set()
        self._listener.close()
        for sock in list(self._sockets):
            sock.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                if not select.select([self._listener], [], [], 0.05)[0]:
                    continue
                client, _ = self._listener.accept()
            except (OSError, ValueError):  # closed
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                thread = threading.Thread(target=self._pump, args=(source, sink), name="freeze-proxy", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy source to sink while forwarding; while frozen, read nothing (the kernel buffers fill)."""
        try:
            while not self._closing.is_set():
                if not self._forwarding.wait(0.05):
                    continue
                if not select.select([source], [], [], 0.05)[0]:
                    continue
                if not self._forwarding.is_set():
                    continue  # frozen between the wait and the data: leave it unread
                data = source.recv(65_536)
                if not data:
                    break
                sink.sendall(data)
        except (OSError, ValueError):  # closed under it by close()
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
