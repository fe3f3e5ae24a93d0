"""One deployment per CoAP port on a host: the lock a gateway holds while it serves.

aiocoap binds its server socket with SO_REUSEPORT, so the kernel lets a second process of the
same user bind the same UDP port and shares the datagrams between them: a gateway of another
deployment (another database) would silently take part of the readings. So before it binds, a
gateway takes `PortLock`: an `fcntl.flock` on `coap-<port>.lock` in a folder of the user's
(`lock_folder`; SO_REUSEPORT only shares a port between sockets of one user), whose content names
the deployment, i.e. its database as `parking.startup.database_label` shows it (no password).

- Nobody holds it: the gateway writes its deployment into it and holds it shared while it serves.
- Gateways of the same deployment hold it: the new one joins them, holding it shared too. Several
  processes of ONE deployment may serve one port this way, the kernel spreading the datagrams.
- A gateway of another deployment holds it: refused (`PortTaken`), naming the port and the
  setting to change.

A lock ends with its process however that ends (SIGKILL included), so none is ever stale.
Every check-and-take and every release happens under one exclusive guard lock of the folder, so
two gateways started at the same instant cannot both see a free port, and the last one to leave
can remove the file without racing a newcomer.
"""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path

from parking.startup import StartupError


class PortTaken(StartupError):
    """The CoAP port is served by a gateway of another deployment."""


def lock_folder() -> Path:
    """The user's folder of gateway port locks (`PARKING_LOCK_DIR`, else in the temp folder)."""
    configured = os.environ.get("PARKING_LOCK_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"parking-gateway-{os.getuid()}"


class PortLock:
    """The lock on one UDP port for one deployment; `take()` before binding, `release()` after closing."""

    def __init__(self, port: int, deployment: str, folder: Path | None = None):
        self.port = port
        self.deployment = deployment
        self.folder = folder or lock_folder()
        self.path = self.folder / f"coap-{port}.lock"
        self.joined = False  # True: other processes of this deployment were serving already
        self._fd: int | None = None

    def take(self) -> PortLock:
        """Hold the port for this deployment, or raise PortTaken naming who holds it."""
        with self._guard():
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                if holder.get("deployment") != self.deployment:
                    os.close(fd)
                    raise PortTaken(
                        f"CoAP port {self.port} is already served by another deployment "
                        f"(database {holder.get('deployment', '?')}, gateway pid {holder.get('pid', '?')}): "
                        "stop that gateway, or set PARKING_COAP_PORT to a free port"
                    ) from None
                self.joined = True
            else:
                record = json.dumps({"deployment": self.deployment, "pid": os.getpid()}).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, record, 0)
            # From exclusive to shared is not atomic in flock(2); the guard keeps others out meanwhile.
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._fd = fd
        return self

    def release(self) -> None:
        """Let go of the port; the last process of the deployment removes the file."""
        if self._fd is None:
            return
        with self._guard():
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # other processes of the deployment still serve the port
            else:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def _guard(self):
        """The folder's exclusive lock, held only for a check-and-take or a release."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return _Flock(self.folder / "guard.lock")

    @staticmethod
    def _read(fd: int) -> dict:
        """What the first holder wrote (an empty dict when it is unreadable)."""
        try:
            return json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            return {}


class _Flock:
    """An exclusive flock on a file for the duration of a `with` block."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info):
        os.close(self.fd)  # closing the last descriptor releases the lock
        return False
