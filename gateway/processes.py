"""`parking-gateway --processes N`: N gateway processes sharing one UDP port, and their parent.

This module owns both sides of that arrangement:

- the parent (`run_parent`): starts N children, each a whole gateway (`python -m gateway.server
  --child`, with its own writer process and database connection), all on the same host and
  port. aiocoap binds with SO_REUSEPORT and the port lock (gateway.portlock) admits processes of
  one deployment, so they share the port; the kernel gives each datagram to one of them by a
  hash of its source and destination address and port, so one sensor (one source address and
  port) keeps reaching the same process while the set of processes stays the same, which its
  Block1 transfers, CoAP duplicate detection and OSCORE replay window rely on (docs/scaling.md).
  The parent relays the children's log lines, prefixed `[k/N]`; it serves nothing itself.
- the children's side (`serve_as_child`): say "ready" on standard output once serving, and stop
  when standard input ends, i.e. when the parent stops or dies (SIGKILL included), so no child
  outlives its parent.

Every child starts or none keeps running: a child that fails at start (a port in use, a writer
that cannot start) makes the parent stop the others and end with exit code 2 and one line,
that child's own error line naming the setting to change. SIGINT (Ctrl-C) or SIGTERM stop every
child (SIGTERM each, then SIGKILL after `stop_timeout`); a child that exits while serving stops
the others too, exit code 1, so that the supervisor restarts the whole group.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time

from parking.config import client_host
from parking.startup import StartupError, check_database

from .writer import START_TIMEOUT

log = logging.getLogger("parking.gateway")

CHILD_FLAG = "--child"
READY = b"ready"
ERROR_PREFIX = "parking-gateway: error: "
RELAY_GRACE = 10.0  # seconds a child's output may go on after it exited


class Child:
    """One gateway child: its process, what it said it is (ready, or its error line)."""

    def __init__(self, index: int, count: int, process: asyncio.subprocess.Process):
        self.index, self.count, self.process = index, count, process
        self.error: str | None = None  # its one-line start-up error, held back from the relay
        self.ready = asyncio.Event()
        self.relays = [asyncio.create_task(self._relay()), asyncio.create_task(self._await_ready())]

    @property
    def label(self) -> str:
        return f"gateway process {self.index} of {self.count}"

    @property
    def name(self) -> str:
        return f"{self.label} (pid {self.process.pid})"

    async def _relay(self) -> None:
        """The child's standard error, line by line, to ours with its number in front."""
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith(ERROR_PREFIX) and self.error is None:
                self.error = line.removeprefix(ERROR_PREFIX)
                continue
            print(f"[{self.index}/{self.count}] {line}", file=sys.stderr, flush=True)

    async def _await_ready(self) -> None:
        """Its first line on standard output says it serves; anything after is relayed (so that
        a full pipe never holds it up)."""
        async for raw in self.process.stdout:
            if raw.strip() == READY and not self.ready.is_set():
                self.ready.set()
            else:
                print(f"[{self.index}/{self.count}] {raw.decode(errors='replace').rstrip()}", flush=True)

    def terminate(self) -> None:
        """Ask it to stop: SIGTERM, and the end of its standard input."""
        if self.process.returncode is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()

    async def finish(self, timeout: float) -> None:
        """Wait for it to exit (killed after `timeout` seconds) and for its last lines."""
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            log.warning("%s did not stop within %.0f s: killing it", self.name, timeout)
            self.process.kill()
            await self.process.wait()
        await self.last_lines()

    async def last_lines(self) -> None:
        """Until its output pipes end: its writer process holds them too, and ends at its own
        socket's end; bounded, so a descendant that keeps them open cannot hold up the parent."""
        _, pending = await asyncio.wait(self.relays, timeout=RELAY_GRACE)
        for task in pending:
            task.cancel()


def serve_processes(args, stop_timeout: float) -> int:
    """`parking-gateway --processes N` (`args` its parsed command line): check what one line can
    name first (the count, the port, the database), then run the N children until stopped."""
    from parking import create_app

    app = create_app()
    host = args.host or app.config["COAP_HOST"]
    port = args.port if args.port is not None else app.config["COAP_PORT"]
    if args.processes < 1:
        raise StartupError(f"--processes {args.processes}: give 1 or more")
    if port == 0:
        raise StartupError("--processes needs one fixed port for all: set --port or PARKING_COAP_PORT (not 0)")
    check_database(app)  # one line for a wrong DATABASE_URL, not one per child
    child_args = ["--host", host, "--port", str(port)] + ["-v"] * args.verbose + ["--debug"] * args.debug
    where = f"coap://{client_host(host)}:{port}"
    # A child's start is its interpreter's and its writer's (START_TIMEOUT) on a busy machine.
    return asyncio.run(run_parent(child_args, args.processes, where, START_TIMEOUT + 30, stop_timeout))


async def run_parent(child_args: list[str], count: int, where: str, start_timeout: float,
                     stop_timeout: float) -> int:
    """Start `count` children with `child_args`, serve until a signal or a child's exit, stop all."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    children: list[Child] = []
    try:
        for index in range(1, count + 1):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.server", *child_args, CHILD_FLAG,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                # Its own session: Ctrl-C reaches the parent only, which stops the children in order.
                start_new_session=True,
            )
            children.append(Child(index, count, process))
        failed = await _started(children, stop, start_timeout)
        if failed is not None:
            await _stop_all(children, stop_timeout)
            reason = failed.error or f"it exited with code {failed.process.returncode} (its log is above)"
            raise StartupError(f"{reason} ({failed.label} could not start; the others were stopped)")
        if stop.is_set():
            log.info("stopping (a stop signal during the start)")
            await _stop_all(children, stop_timeout)
            return 0
        if not all(child.ready.is_set() for child in children):
            await _stop_all(children, stop_timeout)
            raise StartupError(f"the gateway processes did not all start within {start_timeout:.0f} s "
                               "(is the database slow?); the others were stopped")
        log.info("%d gateway processes serve %s (pids %s); Ctrl-C or SIGTERM stops them all",
                 count, where, " ".join(str(c.process.pid) for c in children))
        ended = await _first_exit(children, stop)
        if ended is not None:
            log.error("%s exited with code %s; stopping the others", ended.name, ended.process.returncode)
        else:
            log.info("stopping %d gateway processes", count)
        await _stop_all(children, stop_timeout)
        log.info("stopped")
        return 0 if ended is None else 1
    except BaseException:
        await _stop_all(children, stop_timeout)
        raise


async def _started(children: list[Child], stop: asyncio.Event, timeout: float) -> Child | None:
    """Until every child is ready, a stop signal or `timeout`; the child that exited first, if one did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        for child in children:
            if child.process.returncode is not None and not child.ready.is_set():
                await child.last_lines()  # its error line
                return child
        if all(child.ready.is_set() for child in children):
            return None
        await asyncio.sleep(0.05)
    return None


async def _first_exit(children: list[Child], stop: asyncio.Event) -> Child | None:
    """The first child to exit while serving, or None on a stop signal."""
    waits = {asyncio.create_task(child.process.wait()): child for child in children}
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*waits, stopped], return_when=asyncio.FIRST_COMPLETED)
    for task in [*waits, stopped]:
        task.cancel()
    ended = [waits[task] for task in done if task in waits]
    return None if stopped in done and not ended else ended[0]


async def _stop_all(children: list[Child], timeout: float) -> None:
    """SIGTERM every child at once, then wait for each (SIGKILL after `timeout`)."""
    for child in children:
        child.terminate()
    await asyncio.gather(*(child.finish(timeout) for child in children))


def serve_as_child(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """In a child, once it serves: say so to the parent, and stop when the parent's pipe ends."""
    os.write(sys.stdout.fileno(), READY + b"\n")

    def watch() -> None:
        while os.read(sys.stdin.fileno(), 4096):
            pass  # the parent writes nothing; only the end counts
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
