"""The gateway's side of its writer process: handing requests over and settling their answers.

This module owns `Writer`, which the event loop uses as if it stored readings itself: `submit`
returns a future that is settled only after the commit holding the request's readings (or with
the request's refusal from `gateway.errors`: 4.00 / 4.04 / 5.03 / 5.00). The storing happens in a separate process
(`python -m gateway.writer_process`, started with `subprocess`, i.e. spawned, never forked: the
gateway has threads and an event loop), so that the database work does not compete with the event loop
for one interpreter lock. Also here: the limits of the queue and the groups, the flow of groups
over the socket (at most `IN_FLIGHT` groups with the writer: one being stored, one waiting, so
that it never idles while the loop is busy and what arrives meanwhile forms the next group), and
what happens when the writer process dies (every request it held is answered 5.03, a new one is
started) or holds a group past its deadline (a database gone silent: it is ended, the same follows).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import subprocess
import sys
import time
from bisect import bisect_left
from dataclasses import dataclass, field

from flask import Flask

from parking.metrics import COMMIT_BUCKETS

from . import writer_process as wp
from .errors import StorageFailed, Unavailable

log = logging.getLogger("parking.gateway")

BUSY_RETRY_AFTER = 1  # Max-Age (s) of a 5.03 when the queue is full
RESTART_RETRY_AFTER = 1  # Max-Age (s) of a 5.03 while the writer process is being restarted
# Requests waiting for the writer; beyond this the gateway answers 5.03 instead of growing.
QUEUE_LIMIT = 5_000
# Requests per commit: large enough to amortise a commit, small enough that a group is stored
# well inside the 0.1 s after which aiocoap stops piggy-backing the answer on the ACK.
GROUP_LIMIT = 64
# Groups handed to the writer process and not yet answered: the one it stores and the next.
IN_FLIGHT = 2
# How long the writer waits for a locked database (or PostgreSQL for a lock) before answering
# 5.03; the web app's default of 10 s would stall every sensor behind one long transaction.
LOCK_TIMEOUT = 2.0
# A group the writer process has not answered this long after it began storing it (the lock wait,
# the statement timeout, then this) means a database gone silent with the connection open, where
# no timeout of its own fires (a frozen server or proxy): the process is ended, its requests are
# answered 5.03, and a new one is started. Groups take milliseconds.
GROUP_GRACE = 2.0
# How often the gateway looks for such a group.
HUNG_CHECK = 0.25
# A writer process that dies sooner than this after its start is restarted after a pause that
# starts at RESTART_PAUSE and doubles each time (up to RESTART_PAUSE_MAX), so a broken set-up
# does not spin.
QUICK_DEATH = 10.0
RESTART_PAUSE = 1.0
RESTART_PAUSE_MAX = 30.0
# How long a new writer process may take to import and build its app (about 1-2 s).
START_TIMEOUT = 60.0
# The configuration the writer process rebuilds its app from.
CHILD_CONFIG = ("SQLALCHEMY_DATABASE_URI", "SQLALCHEMY_ENGINE_OPTIONS", "STALE_AFTER", "MAX_BACKLOG_DAYS", "TIMEZONE",
                "TESTING")


@dataclass(eq=False, slots=True)
class _Job:
    """One POST: its readings, when it arrived, and the future its handler awaits."""

    readings: list
    received_at: float
    future: asyncio.Future
    credential: int | None = None  # the sensor credential it came through (None: unprotected)
    seqno: int | None = None  # the request's OSCORE sequence number, checked against the stored window


@dataclass
class WriterStats:
    """Counters of what the writer process did, kept on the event loop (read, never written, by others)."""

    requests: int = 0
    readings: int = 0
    received: int = 0  # readings handed to the writer
    stored: int = 0
    duplicates: int = 0  # readings of requests answered 2.04 that were already stored
    groups: int = 0
    commit_seconds: float = 0.0
    commit_max: float = 0.0
    database_errors: int = 0  # groups answered 5.03 or 5.00 by the writer
    # Groups per commit-time bucket (parking.metrics.COMMIT_BUCKETS; the last one: slower still).
    commit_buckets: list[int] = field(default_factory=lambda: [0] * (len(COMMIT_BUCKETS) + 1))


class _Link(asyncio.Protocol):
    """The gateway's end of the socket to one writer process: messages in, end of file."""

    def __init__(self, writer: Writer):
        self.writer = writer
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        for message in wp.unframe(self._buffer):
            if message[0] == wp.DONE:
                self.writer._answered(message)
            elif not self.ready.done():
                self.ready.set_result(None)

    def eof_received(self) -> bool:
        return False  # close our end too: connection_lost follows

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.writer._link_lost(self)

    def send(self, message) -> None:
        self.transport.write(wp.frame(message))


class Writer:
    """Stores requests in small groups in a writer process with its own database connection.

    Each request is validated on its own there (`ingest.prepare`: 4.00 / 4.04 for that request
    only); the valid ones of a group are stored with one `ingest.store` and one commit; then every
    request's future is settled here, on the event loop. A database error rolls the group back and
    answers it 5.03; the next group tries again, so the gateway recovers without a restart. If the
    writer process dies, what it held is answered 5.03 and a new process is started.
    """

    def __init__(self, app: Flask, loop: asyncio.AbstractEventLoop, *, lock_timeout: float,
                 queue_limit: int, group_limit: int, on_commit, restart_pause: float = RESTART_PAUSE):
        self.loop = loop
        self.lock_timeout = lock_timeout
        self.queue_limit = queue_limit
        self.group_limit = group_limit
        self.on_commit = on_commit  # called on the loop with the ids of the lots a commit changed
        self.config = {k: app.config[k] for k in CHILD_CONFIG if k in app.config}
        self.stats = WriterStats()
        self.available = True
        self.queued = 0  # requests waiting for the writer (not in the group it is storing)
        self.restarts = 0
        self.process = None
        self._pending: collections.deque[_Job] = collections.deque()
        self._in_flight: collections.deque[list[_Job]] = collections.deque()
        self._link: _Link | None = None
        self._started_at = 0.0
        self.restart_pause = restart_pause
        self._pause = restart_pause
        self._restarter: asyncio.Task | None = None
        self._stopping = False
        # Seconds a group may take once the writer began it, and when it began the one it holds now.
        self.group_deadline = lock_timeout + wp.STATEMENT_MARGIN + GROUP_GRACE
        self._head_since = 0.0
        self._watchdog: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        """The writer process's id (None before start)."""
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        """Start the writer process; returns once it has built its app (it connects on the first group).

        A fresh interpreter (`python -m gateway.writer_process`), not multiprocessing: its "spawn"
        would import the gateway's main module again in the child, which fails for a script
        without a main guard. Its own process group: Ctrl-C in a terminal reaches the gateway,
        which then stops it cleanly.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.writer_process", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL, process_group=0,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the child has its own copy: our end sees EOF when it exits
        self.process, self._started_at = process, time.monotonic()
        _, link = await self.loop.create_unix_connection(lambda: _Link(self), sock=ours)
        link.send((wp.INIT, self.config, self.lock_timeout, logging.getLogger("parking.gateway").getEffectiveLevel()))
        try:
            await asyncio.wait([link.ready, link.lost], timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            if not link.ready.done():
                raise RuntimeError(f"the writer process did not start (exit code {process.poll()})")
        except BaseException:
            link.transport.abort()
            process.kill()
            await asyncio.to_thread(process.wait, 5)
            raise
        self._link = link
        if self._watchdog is None:
            self._watchdog = self.loop.create_task(self._watch(), name="gateway: writer watchdog")
        self._pump()

    def submit(self, readings: list, received_at: float, key=None, seqno: int | None = None) -> asyncio.Future:
        """Queue one request (event loop only); the future is settled once it is stored or refused.

        `key`: the sensor's context (gateway.security.SensorKey) of a protected request. Its
        replay window, taken now, is stored in the commit of this request: a later window
        contains every earlier one, so the newest of a group is the one stored. `seqno`: the
        request's OSCORE sequence number, which the writer checks against the window stored in
        the database (another gateway process may have let it through).
        """
        if self._link is None:
            raise Unavailable(f"storage restarting: retry in {RESTART_RETRY_AFTER} s", RESTART_RETRY_AFTER)
        if self.queued >= self.queue_limit:
            raise Unavailable("gateway busy: too many requests waiting", BUSY_RETRY_AFTER)
        job = _Job(readings, received_at, self.loop.create_future())
        self.stats.received += len(readings)
        if key is not None:
            job.credential, job.seqno = key.credential_id, seqno
        self._pending.append(job)
        self.queued += 1
        self._pump()
        return job.future

    def _pump(self, limit: int = IN_FLIGHT) -> None:
        """Hand waiting requests to the writer, a group per message, while it holds fewer than `limit`."""
        link = self._link
        while self._pending and link is not None and len(self._in_flight) < limit:
            count = min(len(self._pending), self.group_limit)
            group = [self._pending.popleft() for _ in range(count)]
            if not self._in_flight:
                self._head_since = time.monotonic()  # the writer begins this group at once
            self._in_flight.append(group)
            link.send((wp.GROUP, [(job.received_at, [(r.bay, r.occupied, r.ts, r.seq, r.battery) for r in job.readings],
                                   job.credential, job.seqno) for job in group]))
        self._count_queued()

    def _count_queued(self) -> None:
        """Requests waiting: not sent yet, or sent behind the group being stored."""
        behind = sum(len(group) for group in self._in_flight) - len(self._in_flight[0]) if self._in_flight else 0
        self.queued = len(self._pending) + behind

    def _answered(self, message) -> None:
        """One group's answer from the writer: settle its futures, then send what waits."""
        _, outcomes, stored, seconds, available, lots = message
        group = self._in_flight.popleft()
        self._head_since = time.monotonic()  # the next group in flight, if any, begins now
        stats = self.stats
        stats.requests += len(group)
        stats.readings += sum(len(job.readings) for job in group)
        stats.stored += stored
        stats.groups += 1
        stats.commit_seconds += seconds
        stats.commit_max = max(stats.commit_max, seconds)
        stats.commit_buckets[bisect_left(COMMIT_BUCKETS, seconds)] += 1
        self.available = available
        stats.duplicates += sum(len(job.readings) for job, outcome in zip(group, outcomes) if outcome is None) - stored
        if any(isinstance(outcome, (Unavailable, StorageFailed)) for outcome in outcomes):
            stats.database_errors += 1  # one failed group, one error
        for job, outcome in zip(group, outcomes):
            if job.future.done():  # the request was cancelled
                continue
            if outcome is None:
                job.future.set_result(None)
            else:
                job.future.set_exception(outcome)
        if not available:
            # Whatever waits would fail the same way: answer it now rather than one lock timeout
            # per group later. The next request tries the database again.
            self._fail(self._take_pending(), Unavailable)
        self._pump()
        if lots:
            self.on_commit(set(lots))

    def _take_pending(self) -> list[_Job]:
        jobs = list(self._pending)
        self._pending.clear()
        return jobs

    @staticmethod
    def _fail(jobs: list[_Job], refusal) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(refusal())

    def _link_lost(self, link: _Link) -> None:
        """The writer process's socket ended: it exited (on stop) or died."""
        if link is not self._link:
            return
        self._link = None
        outstanding = [job for group in self._in_flight for job in group] + self._take_pending()
        self._in_flight.clear()
        self.queued = 0
        if self._stopping:
            self._fail(outstanding, lambda: Unavailable("gateway shutting down"))
            return
        # Its readings may or may not be committed: a retry is stored once (seq or ts + state).
        self.available = False
        self._fail(outstanding, lambda: Unavailable(f"storage restarting: retry in {RESTART_RETRY_AFTER} s",
                                                    RESTART_RETRY_AFTER))
        log.error("writer process %s ended unexpectedly; %d requests answered 5.03; starting a new one",
                  self.pid, len(outstanding))
        self._restarter = self.loop.create_task(self._restart(), name="gateway: writer restart")

    async def _watch(self) -> None:
        """End a writer process that holds a group past `group_deadline` (the database went silent)."""
        while True:  # also while stopping: storing what is queued must not hang either
            await asyncio.sleep(HUNG_CHECK)
            link = self._link
            if link is None or not self._in_flight:
                continue
            held = time.monotonic() - self._head_since
            if held > self.group_deadline:
                log.error("writer process %s has not answered for %.1f s (database not answering?); ending it",
                          self.pid, held)
                self.process.kill()
                link.transport.abort()  # its requests are answered now, not when the kernel reaps it

    async def _restart(self) -> None:
        """Reap the dead writer process and start a new one (after a pause if it died young)."""
        old = self.process
        try:
            code = await asyncio.to_thread(old.wait, 5)
        except subprocess.TimeoutExpired:  # its socket closed, yet it lives: end it
            old.kill()
            code = await asyncio.to_thread(old.wait, 5)
        log.error("writer process %s exit code %s", old.pid, code)
        if time.monotonic() - self._started_at < QUICK_DEATH:
            await asyncio.sleep(self._pause)
            self._pause = min(self._pause * 2, RESTART_PAUSE_MAX)
        else:
            self._pause = self.restart_pause
        while not self._stopping:
            try:
                await self.start()
            except Exception as exc:  # noqa: BLE001 - try again later
                log.error("could not start a writer process: %s", exc)
                await asyncio.sleep(self._pause)
                self._pause = min(self._pause * 2, RESTART_PAUSE_MAX)
                continue
            self.restarts += 1
            self.available = True
            log.warning("writer process %s started", self.pid)
            return

    async def stop(self, timeout: float = 30.0) -> None:
        """Store what is queued, then end the writer process and close its connection."""
        if self._stopping:
            return
        self._stopping = True
        if self._restarter is not None and not self._restarter.done():
            self._restarter.cancel()
            await asyncio.gather(self._restarter, return_exceptions=True)
        link = self._link
        if link is not None:
            self._pump(limit=len(self._pending) + len(self._in_flight) + 1)  # everything waiting
            link.send((wp.STOP,))
            try:
                await asyncio.wait_for(asyncio.shield(link.lost), timeout)
            except asyncio.TimeoutError:
                log.error("writer process did not stop within %.0f s", timeout)
                link.transport.abort()
        process = self.process
        if process is not None:
            try:
                await asyncio.to_thread(process.wait, 5)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 5)
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)

