"""The web app under gunicorn with two worker processes, as docs/scaling.md runs it: every answer
of GET /api/lots and /healthz is right whichever worker gives it, and each worker's lot-list
snapshot (parking/lot_list.py) takes up a reading stored by another process within seconds."""
from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from parking.ingest import SensorReading, ingest

from .conftest import free_port
from .test_runner import ROOT, _children

WORKERS = 2


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, json.load(response)


def _counts(base: str) -> dict[str, tuple]:
    """(total, free, occupied, unknown) per lot, as GET /api/lots says now."""
    _, body = _get(f"{base}/api/lots")
    return {f["id"]: tuple(f["properties"][k] for k in ("total", "free", "occupied", "unknown"))
            for f in body["features"]}


def _has_open(pid: int, path: str) -> bool:
    """Whether the process has the file open."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == path:
                return True
        except OSError:
            continue  # closed meanwhile
    return False


@pytest.fixture
def gunicorn(city, tmp_path):
    """gunicorn -w 2 'app:app' on a free port of 127.0.0.1 and the test's database; yields (base URL, process)."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": city.config["SQLALCHEMY_DATABASE_URI"], "PYTHONPATH": str(ROOT),
           "PARKING_LOTS_SNAPSHOT_SECONDS": "1"}
    log = tmp_path / "gunicorn.log"
    with open(log, "w") as out:
        process = subprocess.Popen([str(Path(sys.prefix) / "bin" / "gunicorn"), "-w", str(WORKERS),
                                    "-b", f"127.0.0.1:{port}", "app:app"], cwd=ROOT, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if _get(f"{base}/healthz")[0] == 200 and len(_children(process.pid)) == WORKERS:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"gunicorn did not start:\n{log.read_text()[-3000:]}")
        yield base, process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_two_workers_answer_alike_and_follow_new_readings(city, gunicorn):
    base, process, log = gunicorn
    now = time.time()
    ingest([SensorReading("GAR-001", True, now - 60), SensorReading("GAR-002", False, now - 60)])
    expected = {"PR-WEST": (4, 0, 0, 4), "GARAGE": (6, 1, 1, 4), "STREET": (2, 0, 0, 2)}

    def settled(want: dict) -> bool:
        # Many requests at once, so that both workers answer some: every answer must be right.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: _counts(base), range(24)))
        return all(answer == want for answer in answers)

    deadline = time.monotonic() + 30  # a snapshot is at most an interval (1 s here) old
    while not settled(expected) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert settled(expected)

    # A reading stored by another process (a gateway): every worker's snapshot takes it up.
    ingest([SensorReading("GAR-003", True, time.time() - 5)])
    expected["GARAGE"] = (6, 1, 2, 3)
    deadline = time.monotonic() + 30
    while not settled(expected) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert settled(expected)

    url = city.config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("sqlite:///"):  # both workers answered (each holds the file open once it has)
        assert all(_has_open(pid, url.removeprefix("sqlite:///")) for pid in _children(process.pid))
    status, health = _get(f"{base}/healthz")
    assert status == 200 and health["status"] == "ok"
    assert health["parts"]["database"]["status"] == "ok"
    assert "scheduler" not in health["parts"]  # web workers never schedule: parking-run does

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
