"""One deployment per CoAP port (gateway/portlock.py): a second gateway of another deployment on
the same port refuses to start instead of taking a share of the datagrams (aiocoap binds with
SO_REUSEPORT); gateways of one deployment may share it. Real gateway processes over loopback."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, func, select

from gateway.portlock import PortLock, PortTaken
from parking.models import StoredReading as Row

from .test_gateway_crash import ROOT, free_udp_port, one_post, start


def test_lock_refuses_another_deployment_and_admits_the_same(tmp_path):
    first = PortLock(5999, "sqlite:////a.db", tmp_path).take()
    assert not first.joined
    with pytest.raises(PortTaken) as refused:
        PortLock(5999, "sqlite:////b.db", tmp_path).take()
    assert "CoAP port 5999" in str(refused.value) and "PARKING_COAP_PORT" in str(refused.value)
    assert "sqlite:////a.db" in str(refused.value)
    second = PortLock(5999, "sqlite:////a.db", tmp_path).take()
    assert second.joined
    first.release()
    with pytest.raises(PortTaken):  # the second still serves
        PortLock(5999, "sqlite:////b.db", tmp_path).take()
    second.release()
    assert not (tmp_path / "coap-5999.lock").exists()  # the last one out removes the file
    PortLock(5999, "sqlite:////b.db", tmp_path).take().release()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    """The kernel drops a flock when its process dies, even by SIGKILL."""
    code = (
        "import sys, time; from pathlib import Path; from gateway.portlock import PortLock; "
        f"PortLock(5998, 'sqlite:////a.db', Path({str(tmp_path)!r})).take(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PortTaken):
            PortLock(5998, "sqlite:////b.db", tmp_path).take()
    finally:
        holder.kill()
        holder.communicate(timeout=10)
    PortLock(5998, "sqlite:////b.db", tmp_path).take().release()


@pytest.fixture
def backend() -> str:
    """The port lock does not depend on the database kind: SQLite only, to keep the suite short."""
    return "sqlite"


def _stored(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(Row)).scalar()
    engine.dispose()
    return count


def _second_gateway(url: str, port: int, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gateway.server", "--port", str(port), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)


def test_second_gateway_of_another_deployment_refuses_the_port(city, tmp_path):
    url = city.config["SQLALCHEMY_DATABASE_URI"]
    port = free_udp_port()
    first = start(url, port, tmp_path / "first.log")
    try:
        other = tmp_path / "other.db"
        refused = _second_gateway(f"sqlite:///{other}", port)
        assert refused.returncode == 2, refused.stderr
        lines = [line for line in refused.stderr.splitlines() if "error" in line]
        assert lines == [
            f"parking-gateway: error: CoAP port {port} is already served by another deployment "
            f"(database {url}, gateway pid {first.pid}): stop that gateway, or set PARKING_COAP_PORT "
            "to a free port"
        ], refused.stderr
        assert "Traceback" not in refused.stderr

        # Every reading goes to the one deployment serving the port (before: 7 of 12 went astray).
        for i in range(12):
            answer = asyncio.run(one_post(port, {"bay": "STR-001", "occupied": i % 2 == 0, "ts": time.time() - 100 + i}))
            assert answer.code.dotted == "2.04"
        assert _stored(url) == 12

        debug = _second_gateway(f"sqlite:///{other}", port, "--debug")
        assert debug.returncode == 2 and "Traceback" in debug.stderr and "PortTaken" in debug.stderr
    finally:
        first.terminate()
        assert first.wait(timeout=30) == 0
