"""`parking-gateway --processes N` (gateway/processes.py): N real gateway processes on one UDP
port, each with its own writer; readings sent by a real CoAP client (aiocoap) from many source
ports are all acknowledged and stored; SIGTERM or Ctrl-C stops every process within seconds; a
child that cannot start, or that dies, stops the others, with one line."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

import aiocoap
import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from sqlalchemy import create_engine, select

from parking.models import StoredReading as Row

from .conftest import free_port
from .test_runner import BAYS, Held, Runner, _children

SENDERS = 16  # client contexts, i.e. source ports: the kernel spreads them over the processes


def _env(url: str, tmp_path: Path) -> dict:
    return {**os.environ, "DATABASE_URL": url, "PARKING_SENSOR_AUTH": "none",
            "PARKING_LOCK_DIR": str(tmp_path / "locks"), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def _start(url: str, tmp_path: Path, port: int, count: int = 2) -> Runner:
    return Runner(["--processes", str(count), "--port", str(port)], _env(url, tmp_path), module="gateway.server")


def _socket_inodes(port: int) -> set[str]:
    """The inodes of the UDP sockets bound to `port` (IPv4 and IPv6 tables)."""
    found = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def _holders(port: int, pids: list[int]) -> set[int]:
    """Which of `pids` hold a socket bound to `port`."""
    inodes = {f"socket:[{inode}]" for inode in _socket_inodes(port)}
    holding = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    holding.add(pid)
            except OSError:
                continue
    return holding


def _alive(pid: int) -> bool:
    """Running (a zombie, already ended and waiting to be reaped, does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def _post_all(port: int, count: int) -> list[tuple]:
    """`count` readings (unique bay and ts) from SENDERS client contexts; the ones answered 2.04."""
    base = time.time() - 3600
    acknowledged: list[tuple] = []
    contexts = [await aiocoap.Context.create_client_context() for _ in range(SENDERS)]

    async def sender(number: int, context: aiocoap.Context) -> None:
        for serial in range(number, count, SENDERS):
            reading = {"bay": BAYS[serial % len(BAYS)], "occupied": serial % 3 == 0, "ts": round(base + serial, 3)}
            request = Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/occupancy",
                              payload=json.dumps(reading).encode(), content_format=50)
            response = await context.request(request).response
            if response.code == Code.CHANGED:
                acknowledged.append((reading["bay"], reading["ts"], reading["occupied"]))

    try:
        await asyncio.gather(*(sender(n, c) for n, c in enumerate(contexts)))
    finally:
        for context in contexts:
            await context.shutdown()
    return acknowledged


def _stored(url: str) -> set[tuple]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = {(b, round(t, 3), bool(o)) for b, t, o in connection.execute(select(Row.bay_id, Row.ts, Row.occupied))}
    engine.dispose()
    return rows


def _family(parent: Runner) -> tuple[list[int], list[int]]:
    """The parent's gateway children and their writer processes."""
    children = _children(parent.process.pid)
    writers = [w for c in children for w in _children(c) if b"gateway.writer_process" in Path(f"/proc/{w}/cmdline").read_bytes()]
    return children, writers


def _released(port: int, tmp_path: Path | None) -> None:
    """The port can be bound again without SO_REUSEPORT, and (after a clean stop, `tmp_path`
    given) the port lock's file is gone. A child stopped during its start may leave the file: the
    lock itself ends with the process, and the next gateway takes the file over."""
    held = Held()
    try:
        held.udp(port)
    finally:
        held.close()
    if tmp_path is not None:
        assert not (tmp_path / "locks" / f"coap-{port}.lock").exists()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_share_the_port_and_every_reading_is_stored(city, tmp_path):
    url = city.config["SQLALCHEMY_DATABASE_URI"]
    port = free_port(socket.SOCK_DGRAM)
    parent = _start(url, tmp_path, port)
    try:
        assert parent.wait_for("2 gateway processes serve coap://127.0.0.1:", 120), parent.output
        children, writers = _family(parent)
        assert len(children) == 2 and len(writers) == 2, parent.output  # each child its own writer
        assert _holders(port, children) == set(children)  # both bound to the one port
        acknowledged = asyncio.run(_post_all(port, 240))
        assert len(acknowledged) == 240, f"{240 - len(acknowledged)} not answered 2.04"
        assert set(acknowledged) <= _stored(url)
        assert len(_stored(url)) == 240
        code, seconds = parent.stop(signal.SIGTERM, 30)
    finally:
        parent.kill()
    assert code == 0, parent.output
    assert seconds < 15, f"stopping took {seconds:.1f} s"
    assert parent.output.rstrip().endswith("stopped") and "Traceback" not in parent.output, parent.output
    assert "[1/2]" in parent.output and "[2/2]" in parent.output  # the children's lines, relayed
    assert not any(_alive(pid) for pid in children + writers)
    _released(port, tmp_path)


@pytest.fixture
def backend() -> str:
    """The cases below are about processes, not databases: SQLite only, to keep the suite short."""
    return "sqlite"


def test_ctrl_c_stops_every_process(city, tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    parent = _start(city.config["SQLALCHEMY_DATABASE_URI"], tmp_path, port, count=3)
    try:
        assert parent.wait_for("3 gateway processes serve", 120), parent.output
        children, writers = _family(parent)
        assert len(children) == 3 and len(writers) == 3
        code, seconds = parent.stop(signal.SIGINT, 30)
    finally:
        parent.kill()
    assert code == 0 and seconds < 15, parent.output
    assert "Traceback" not in parent.output and "KeyboardInterrupt" not in parent.output, parent.output
    assert not any(_alive(pid) for pid in children + writers)
    _released(port, tmp_path)


def test_a_child_that_cannot_start_stops_the_others_with_one_line(city, tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    held = Held()
    held.udp(port)  # another program's socket, without SO_REUSEPORT: no gateway can bind
    try:
        parent = _start(city.config["SQLALCHEMY_DATABASE_URI"], tmp_path, port)
        try:
            code = parent.process.wait(timeout=120)
        finally:
            parent.kill()
    finally:
        held.close()
    assert code == 2, parent.output
    errors = [line.rstrip() for line in parent.lines if "error" in line.lower()]
    assert len(errors) == 1, parent.output  # however many children failed alike
    assert errors[0].startswith(f"parking-gateway: error: the CoAP gateway cannot listen: 127.0.0.1:{port} is in use "
                                "by another process: stop it, or set PARKING_COAP_PORT to a free port (gateway process ")
    assert errors[0].endswith(" of 2 could not start; the others were stopped)"), errors
    assert "Traceback" not in parent.output
    _released(port, None)


def test_a_child_that_dies_stops_the_others(city, tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    parent = _start(city.config["SQLALCHEMY_DATABASE_URI"], tmp_path, port)
    try:
        assert parent.wait_for("2 gateway processes serve", 120), parent.output
        children, writers = _family(parent)
        os.kill(children[0], signal.SIGKILL)
        code = parent.process.wait(timeout=30)
    finally:
        parent.kill()
    assert code == 1, parent.output
    assert f"(pid {children[0]}) exited with code -9; stopping the others" in parent.output
    assert "Traceback" not in parent.output
    deadline = time.monotonic() + 10  # the killed child's writer ends at its socket's end
    while any(_alive(pid) for pid in children + writers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children + writers)
    _released(port, tmp_path)


def test_a_parent_killed_leaves_no_child(city, tmp_path):
    """SIGKILL of the parent: each child sees its standard input end and stops by itself."""
    port = free_port(socket.SOCK_DGRAM)
    parent = _start(city.config["SQLALCHEMY_DATABASE_URI"], tmp_path, port)
    try:
        assert parent.wait_for("2 gateway processes serve", 120), parent.output
        children, writers = _family(parent)
        parent.process.kill()
        parent.process.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in children + writers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in children + writers)
    finally:
        parent.kill()
    _released(port, tmp_path)


@pytest.mark.parametrize("args, says", [
    (["--processes", "0", "--port", "5999"], "--processes 0: give 1 or more"),
    (["--processes", "2", "--port", "0"], "--processes needs one fixed port for all: set --port or PARKING_COAP_PORT"),
])
def test_a_wrong_count_or_port_is_one_line(city, tmp_path, args, says):
    parent = Runner(args, _env(city.config["SQLALCHEMY_DATABASE_URI"], tmp_path), module="gateway.server")
    try:
        code = parent.process.wait(timeout=60)
    finally:
        parent.kill()
    assert code == 2, parent.output
    errors = [line for line in parent.lines if line.startswith("parking-gateway: error: ")]
    assert len(errors) == 1 and says in errors[0] and "Traceback" not in parent.output, parent.output
    assert "gateway processes serve" not in parent.output  # refused before any child started
