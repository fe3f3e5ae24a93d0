"""`parking-run` end to end, as `make demo` and `make run` run it: a real process with the web
app, the gateway, the scheduler (and the simulator); it stops every part on SIGINT and on SIGTERM,
also under CoAP load; a part that cannot start stops every part, exit code 2, one line."""
from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import aiocoap
import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code

from .conftest import CITY_FILE, POSTGRES_URL, empty_postgres_database, free_port, require_postgres
from .test_gateway import coap_client

ROOT = Path(__file__).resolve().parent.parent
BAYS = [f"PRW-00{i}" for i in range(1, 5)] + [f"GAR-00{i}" for i in range(1, 7)] + ["STR-001", "STR-002"]


@pytest.fixture
def backend() -> str:
    """The runner's own database: SQLite (the failure cases bring their own URLs)."""
    return "sqlite"


class Runner:
    """`python -m service.runner` (or another module) with its output read line by line by a thread."""

    def __init__(self, args: list[str], env: dict, module: str = "service.runner"):
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with self.process.stdout:
            for line in self.process.stdout:
                self.lines.append(line)
                self._new.put(line)
        self._new.put(None)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> bool:
        """Until a line containing `text` appears (True) or the process ends or time is up."""
        deadline = time.monotonic() + timeout
        if any(text in line for line in self.lines):
            return True
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                return False
            if text in line:
                return True
        return False

    def stop(self, signum: int, timeout: float) -> tuple[int, float]:
        """Send the signal; (exit code, seconds it took), or kill it and fail."""
        began = time.monotonic()
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"still running {timeout} s after {signal.Signals(signum).name}:\n{self.output[-3000:]}")
        self._reader.join(timeout=10)
        return code, time.monotonic() - began

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=10)


def _env(tmp_path: Path, http: int, coap: int, **settings: str) -> dict:
    return {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/run.db", "PARKING_HTTP_PORT": str(http),
            "PARKING_COAP_PORT": str(coap), "PYTHONPATH": str(ROOT), **settings}


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _children(pid: int) -> list[int]:
    """The child processes of a process (from /proc/<pid>/task/*/children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


def _simulator_of(runner: Runner) -> int:
    """The pid of the runner's simulator child."""
    for pid in _children(runner.process.pid):
        if b"gateway.simulator" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError("no simulator child")


@pytest.mark.parametrize("ending", ["SIGINT", "simulator dies"])
def test_demo_runs_and_stops_cleanly(tmp_path, ending):
    """`make demo`: history, live readings over CoAP, a scheduled rollup, then Ctrl-C; or the
    simulator dies, and the runner stops every other part too."""
    http, coap = free_port(), free_port(socket.SOCK_DGRAM)
    runner = Runner(["--simulate", "--backfill-days", "0.05", "--speed", "20"],
                    {**_env(tmp_path, http, coap), "PARKING_ROLLUP_INTERVAL": "2"})
    code = None
    try:
        assert runner.wait_for("Press Ctrl-C to stop.", 120), runner.output
        assert f"http://127.0.0.1:{http}/" in runner.output
        assert f"database sqlite:///{tmp_path}/run.db" in runner.output  # which database, logged at start
        lots = _get(f"http://127.0.0.1:{http}/api/lots")["features"]
        assert len(lots) == 13
        assert sum(f["properties"]["free"] + f["properties"]["occupied"] for f in lots) > 500
        # A live reading: the simulator's CoAP POSTs answered 2.04 by the gateway.
        deadline, answered = time.monotonic() + 60, 0
        while time.monotonic() < deadline and not answered:
            health = _get(f"http://127.0.0.1:{http}/healthz")
            answered = health["parts"]["gateway"]["answered"]["2.04"]
            time.sleep(0.2)
        assert answered > 0, runner.output
        assert {"database", "gateway", "scheduler"} <= set(health["parts"])
        # As deployed, every simulated sensor's readings are OSCORE-protected with its own key
        # (those 2.04s), and a plain request from anyone else is refused.
        assert health["parts"]["gateway"]["sensor_auth"] == "oscore"
        if ending == "SIGINT":
            plain = coap_client("-m", "post", "-t", "50", "-e", '{"bay": "PRW-001", "occupied": true}',
                                f"coap://127.0.0.1:{coap}/occupancy")
            assert plain.stderr.startswith("4.01"), plain.stderr
        # The scheduled rollup ran (the first run is due 5 s after start) and stored hours.
        assert runner.wait_for("rollup: ", 60), runner.output
        with sqlite3.connect(tmp_path / "run.db") as connection:
            assert connection.execute("SELECT count(*) FROM hourly_utilization").fetchone()[0] > 0
        if ending == "SIGINT":
            code, _ = runner.stop(signal.SIGINT, 30)
        else:
            os.kill(_simulator_of(runner), signal.SIGKILL)
            code = runner.process.wait(timeout=30)
    finally:
        runner.kill()
    if ending == "SIGINT":
        assert code == 0, runner.output
        assert "stopping (SIGINT)" in runner.output
    else:
        assert code == 1, runner.output
        assert "the simulator exited with -9; stopping" in runner.output
    assert runner.output.rstrip().endswith("stopped"), runner.output
    assert "Traceback" not in runner.output
    _assert_released(http, coap)


async def _load_then_signal(coap: int, runner: Runner, after: float, signum: int) -> tuple[list, int]:
    """64 outstanding CoAP POSTs for `after` seconds, then the signal while they go on.

    Returns the readings answered 2.04 (bay, ts, occupied) and the runner's exit code.
    """
    acknowledged: list[tuple] = []
    base = time.time() - 3600
    contexts = [await aiocoap.Context.create_client_context() for _ in range(8)]
    serial = 0

    async def sender(context: aiocoap.Context) -> None:
        nonlocal serial
        while True:
            serial += 1
            reading = {"bay": BAYS[serial % len(BAYS)], "occupied": serial % 3 == 0, "ts": base + serial * 0.01}
            request = Message(code=Code.POST, uri=f"coap://127.0.0.1:{coap}/occupancy",
                              payload=json.dumps(reading).encode(), content_format=50)
            try:
                response = await context.request(request).response
            except aiocoap.error.Error:
                await asyncio.sleep(0.05)
                continue
            if response.code == Code.CHANGED:
                acknowledged.append((reading["bay"], reading["ts"], reading["occupied"]))

    tasks = [asyncio.create_task(sender(c)) for c in contexts for _ in range(8)]
    await asyncio.sleep(after)
    loop = asyncio.get_running_loop()
    code, seconds = await loop.run_in_executor(None, runner.stop, signum, 20)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for context in contexts:
        await context.shutdown()
    return acknowledged, code, seconds


@pytest.mark.parametrize("round_", range(2))
def test_sigterm_under_coap_load_stops_every_part(tmp_path, round_):
    """`make run` stopped by a supervisor (SIGTERM) while sensors post, at a random moment."""
    http, coap = free_port(), free_port(socket.SOCK_DGRAM)
    # Unprotected load (tests/test_oscore.py covers credentials): the stop under load is under test.
    runner = Runner([], _env(tmp_path, http, coap, PARKING_LOTS_FILE=str(CITY_FILE), PARKING_SENSOR_AUTH="none"))
    try:
        assert runner.wait_for("Press Ctrl-C to stop.", 60), runner.output
        after = random.uniform(0.3, 2.5)
        acknowledged, code, seconds = asyncio.run(_load_then_signal(coap, runner, after, signal.SIGTERM))
    finally:
        runner.kill()
    assert code == 0, runner.output
    assert "stopping (SIGTERM)" in runner.output and runner.output.rstrip().endswith("stopped"), runner.output
    assert len(acknowledged) > 20, f"too little load to mean anything ({len(acknowledged)})"
    with sqlite3.connect(tmp_path / "run.db") as connection:
        rows = set(connection.execute("SELECT bay_id, ts, occupied FROM readings"))
    missing = [r for r in acknowledged if (r[0], r[1], int(r[2])) not in {(b, t, int(o)) for b, t, o in rows}]
    assert missing == [], f"{len(missing)} acknowledged readings lost"
    assert seconds < 15, f"stopping took {seconds:.1f} s"


def _bad_lot_file(tmp_path: Path) -> str:
    path = tmp_path / "lots.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "id": "A", '
                    '"geometry": {"type": "Point", "coordinates": [12, 49]}, "properties": {}}]}')
    return str(path)


def _missing_postgres_database() -> str:
    require_postgres()
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/parking_missing_{uuid.uuid4().hex[:8]}"


class Held:
    """What keeps a port busy during a failure case: a TCP listener or a plain UDP socket."""

    def __init__(self):
        self.sockets: list[socket.socket] = []

    def tcp(self, port: int) -> None:
        sock = socket.socket()
        self.sockets.append(sock)
        # As servers bind: closed connections in TIME_WAIT do not count, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()

    def udp(self, port: int) -> None:  # no SO_REUSEPORT: the kernel refuses aiocoap's bind
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sockets.append(sock)
        sock.bind(("127.0.0.1", port))

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.mark.parametrize(
    "case, says",
    [
        ("http-port-in-use", "the web server cannot listen: 127.0.0.1:{http} is in use by another process: "
                             "stop it, or set PARKING_HTTP_PORT to a free port"),
        ("coap-port-in-use", "the CoAP gateway cannot listen: 127.0.0.1:{coap} is in use by another process: "
                             "stop it, or set PARKING_COAP_PORT to a free port"),
        ("bad-lot-file", "PARKING_LOTS_FILE {lots} was refused, nothing imported: "),
        ("postgres-scheme", "DATABASE_URL starts with postgres://, which SQLAlchemy does not know: "
                            "write postgresql+psycopg:// instead"),
        ("database-missing", "does not exist"),
    ],
)
def test_a_part_that_cannot_start_stops_every_part(tmp_path, case, says):
    """One line naming the setting, exit code 2, nothing left running (before: the web server's
    failure left a headless gateway answering 2.04 and ignoring SIGTERM)."""
    http, coap = free_port(), free_port(socket.SOCK_DGRAM)
    settings = {"PARKING_LOTS_FILE": str(CITY_FILE)}
    held = Held()
    if case == "http-port-in-use":
        held.tcp(http)
    elif case == "coap-port-in-use":
        held.udp(coap)
    elif case == "bad-lot-file":
        settings["PARKING_LOTS_FILE"] = _bad_lot_file(tmp_path)
    elif case == "postgres-scheme":
        settings["DATABASE_URL"] = "postgres://parking@127.0.0.1/city"
    elif case == "database-missing":
        settings["DATABASE_URL"] = _missing_postgres_database()
    try:
        runner = Runner([], _env(tmp_path, http, coap, **settings))
        try:
            code = runner.process.wait(timeout=60)
        finally:
            runner.kill()
    finally:
        held.close()
    assert code == 2, runner.output
    assert "Traceback" not in runner.output
    errors = [line for line in runner.lines if line.startswith("parking-run: error: ")]
    assert len(errors) == 1, runner.output
    assert says.format(http=http, coap=coap, lots=settings["PARKING_LOTS_FILE"]) in errors[0]
    _assert_released(http, coap)


def _assert_released(http: int, coap: int) -> None:
    """Nothing keeps the ports: both can be bound again at once (UDP without SO_REUSEPORT)."""
    held = Held()
    try:
        held.tcp(http)
        held.udp(coap)
    finally:
        held.close()


def test_debug_shows_the_traceback_of_a_start_up_error(tmp_path):
    runner = Runner(["--debug"], _env(tmp_path, free_port(), free_port(socket.SOCK_DGRAM),
                                      PARKING_LOTS_FILE=_bad_lot_file(tmp_path)))
    try:
        code = runner.process.wait(timeout=60)
    finally:
        runner.kill()
    assert code == 2
    assert "Traceback" in runner.output and "LotFileError" in runner.output
    assert "parking-run: error: PARKING_LOTS_FILE" in runner.output


def test_a_second_run_on_a_port_of_another_deployment_refuses(city, tmp_path):
    """A second `make demo` of another checkout: its gateway would share the CoAP port."""
    from gateway.server import run_in_thread

    coap = free_port(socket.SOCK_DGRAM)
    first = run_in_thread(city, "127.0.0.1", coap)
    try:
        http = free_port()
        runner = Runner([], _env(tmp_path, http, coap, PARKING_LOTS_FILE=str(CITY_FILE)))
        try:
            code = runner.process.wait(timeout=60)
        finally:
            runner.kill()
    finally:
        first.stop()
    assert code == 2, runner.output
    assert f"parking-run: error: CoAP port {coap} is already served by another deployment" in runner.output
    assert "PARKING_COAP_PORT" in runner.output and "Traceback" not in runner.output
    _assert_released(http, free_port(socket.SOCK_DGRAM))  # the web server it had bound is closed again


@pytest.fixture
def postgres_database():
    """A database of its own on the test PostgreSQL, dropped afterwards (skipped when unreachable)."""
    with empty_postgres_database("parking_run") as url:
        yield url


def _scheduler_part(http: int) -> dict:
    return _get(f"http://127.0.0.1:{http}/healthz")["parts"]["scheduler"]


def _rollup_runs(http: int) -> int:
    """How many rollup runs the process has made (its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = [line.split()[-1] for line in text.splitlines() if line.startswith('parking_job_seconds_count{job="rollup"}')]
    return int(float(found[0])) if found else 0


def _until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_two_runs_on_one_postgresql_elect_one_scheduler_and_the_other_takes_over(tmp_path, postgres_database):
    """Two `parking-run` on one PostgreSQL, started at once: their starts take turns, exactly one
    runs the rollup job and /healthz of both names it; SIGKILL it and the other leads within a minute."""
    runners, ports = [], []
    try:
        for _ in range(2):
            http, coap = free_port(), free_port(socket.SOCK_DGRAM)
            ports.append(http)
            runners.append(Runner([], _env(tmp_path, http, coap, DATABASE_URL=postgres_database,
                                           PARKING_LOTS_FILE=str(CITY_FILE), PARKING_SENSOR_AUTH="none",
                                           PARKING_ROLLUP_INTERVAL="1")))
        for runner in runners:
            assert runner.wait_for("Press Ctrl-C to stop.", 120), runner.output
        assert _until(lambda: any(_scheduler_part(p)["leader"] for p in ports), 30), [r.output for r in runners]
        parts = [_scheduler_part(p) for p in ports]
        leader = 0 if parts[0]["leader"] else 1
        standby = 1 - leader
        assert parts[standby]["leader"] is False
        assert _until(lambda: _scheduler_part(ports[standby])["leader_process"] == parts[leader]["leader_process"], 30)
        assert f"pid {runners[leader].process.pid}" in parts[leader]["leader_process"]
        # The leader rolls up every second; the standby runs no job at all.
        assert _until(lambda: _rollup_runs(ports[leader]) >= 3, 60), runners[leader].output
        assert _rollup_runs(ports[standby]) == 0
        assert "standing by; parking scheduler" in runners[standby].output

        runners[leader].process.kill()  # SIGKILL: no goodbye, the lock ends with its session
        killed = time.monotonic()
        assert _until(lambda: _scheduler_part(ports[standby])["leader"], 60), runners[standby].output
        took = time.monotonic() - killed
        assert _until(lambda: _rollup_runs(ports[standby]) >= 1, 30), runners[standby].output
        assert f"pid {runners[standby].process.pid}" in _scheduler_part(ports[standby])["leader_process"]
        print(f"the standby led {took:.1f} s after the leader's SIGKILL")
        code, _ = runners[standby].stop(signal.SIGTERM, 30)
        assert code == 0, runners[standby].output
        assert "Traceback" not in runners[standby].output
    finally:
        for runner in runners:
            runner.kill()
