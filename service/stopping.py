"""SIGINT and SIGTERM for a process whose main thread waits while other threads work.

`StopSignals` owns the process's handlers of both signals while it is installed. Its handler
only appends the signal number to a list, and the interpreter's C-level handler writes a byte
to a socket (`signal.set_wakeup_fd`) that `wait` selects on. Nothing in the handler takes a lock.

Why not a `threading.Event` set from the handler: a Python-level signal handler runs in the main
thread between two bytecodes, so it can interrupt that thread inside `Event.wait` while it
holds the Event's internal lock; `Event.set` in the handler then waits for that lock forever.
That is how `parking-run` came to ignore SIGTERM after a burst of load (issue #13, item 11).
"""
from __future__ import annotations

import select
import signal
import socket

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Installed with `with`: `wait(timeout)` returns the first stop signal received, or None."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.signals = signals
        self.received: list[int] = []
        self._previous: dict[int, object] = {}
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._previous_fd = -1

    def __enter__(self) -> StopSignals:
        self._reader, self._writer = socket.socketpair()
        for end in (self._reader, self._writer):
            end.setblocking(False)
        # Must be called from the main thread, as signal.signal itself.
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc_info) -> bool:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()
        return False

    def _note(self, signum: int, frame) -> None:  # noqa: ARG002 - the signal module's signature
        """The handler: remember the signal; list.append takes no lock another frame could hold."""
        self.received.append(signum)

    def wait(self, timeout: float) -> int | None:
        """Up to `timeout` seconds for a stop signal; the first one received, or None."""
        if not self.received:
            # The wake-up byte ends the wait even when the kernel delivered the signal to
            # another thread (the main thread's handler then runs right after select returns).
            select.select([self._reader], [], [], timeout)
            try:
                while self._reader.recv(512):
                    pass
            except BlockingIOError:
                pass
        return self.received[0] if self.received else None
