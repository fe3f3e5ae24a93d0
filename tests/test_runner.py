"""`parking-run --simulate` end to end, as `make demo` runs it: a real process with the web app,
the gateway, the scheduler and the simulator; free counts appear; Ctrl-C stops every part."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import free_port


@pytest.fixture
def backend() -> str:
    """The demo's own database: SQLite."""
    return "sqlite"


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_demo_runs_and_stops_cleanly(tmp_path):
    http, coap = free_port(), free_port(socket.SOCK_DGRAM)
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path}/demo.db",
               PARKING_HTTP_PORT=str(http), PARKING_COAP_PORT=str(coap))
    process = subprocess.Popen(
        [sys.executable, "-m", "service.runner", "--simulate", "--backfill-days", "0.05", "--speed", "20"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        output = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            output.append(line)
            if "Press Ctrl-C to stop." in line or process.poll() is not None:
                break
        assert process.poll() is None, "".join(output)
        assert f"http://127.0.0.1:{http}/" in "".join(output)
        lots = _get(f"http://127.0.0.1:{http}/api/lots")["features"]
        assert len(lots) == 13
        assert sum(f["properties"]["free"] + f["properties"]["occupied"] for f in lots) > 500
        health = _get(f"http://127.0.0.1:{http}/healthz")
        assert {"database", "gateway", "scheduler"} <= set(health["parts"])
    finally:
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, rest
    assert "stopped" in rest
