"""The gateway's writer process (gateway/writer.py, gateway/writer_process.py): killed under load,
it costs no acknowledged reading, and the gateway carries on with a new one; on SQLite and on
PostgreSQL."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import aiocoap
from aiocoap import Message
from aiocoap.numbers.codes import Code
from sqlalchemy import select

from gateway.server import run_in_thread
from parking.extensions import db
from parking.models import StoredReading as Row

BAYS = [f"PRW-00{i}" for i in range(1, 5)] + [f"GAR-00{i}" for i in range(1, 7)] + ["STR-001", "STR-002"]
SENDERS = 8


def alive(pid: int) -> bool:
    """Whether a process exists and has not ended (a zombie has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


RESTARTING = b"storage restarting: retry in 1 s"
UNAVAILABLE = b"storage unavailable: retry in 5 s"


async def load_with_a_kill(port: int, gateway, kill_after: float, recover_within: float):
    """Distinct confirmable POSTs from several senders; SIGKILL the writer process mid-load, then
    go on until 2.04 answers have come back for a while (or `recover_within` s pass).

    Every sender finishes the request it has out before it stops, and an error of any of them
    fails the run: every request sent has its answer in the result.
    Returns [(reading, answer, answered after the kill)], the number sent, and the killed pid.
    """
    answers: list[tuple[tuple, Message, bool]] = []
    sent = 0
    base = time.time() - 3600
    killed_at: list[float] = []
    stop = asyncio.Event()
    contexts = [await aiocoap.Context.create_client_context() for _ in range(SENDERS)]

    async def sender(index: int, context: aiocoap.Context) -> None:
        nonlocal sent
        n = 0
        while not stop.is_set():
            serial = n * SENDERS + index
            n += 1
            reading = {"bay": BAYS[serial % len(BAYS)], "occupied": serial % 3 == 0, "ts": base + serial * 0.001,
                       "seq": serial}
            request = Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/occupancy",
                              payload=json.dumps(reading).encode(), content_format=50)
            sent += 1
            response = await asyncio.wait_for(context.request(request).response, 30)
            after = bool(killed_at) and time.monotonic() > killed_at[0]
            answers.append(((reading["bay"], reading["ts"], reading["occupied"]), response, after))
            if response.code == Code.SERVICE_UNAVAILABLE:
                await asyncio.sleep(0.05)  # Max-Age says 1 s; a short pause keeps the test short

    tasks = [asyncio.create_task(sender(i, c)) for i, c in enumerate(contexts)]
    try:
        await asyncio.sleep(kill_after)
        victim = gateway.writer.pid
        killed_at.append(time.monotonic())
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + recover_within
        while time.monotonic() < deadline and not any(t.done() for t in tasks):
            await asyncio.sleep(0.1)
            if sum(1 for _, a, after in answers if after and a.code == Code.CHANGED) >= 50:
                break
        stop.set()
        await asyncio.gather(*tasks)  # a sender's error is the test's error
    finally:
        for task in tasks:
            task.cancel()
        for context in contexts:
            await context.shutdown()
    return answers, sent, victim


def test_killed_writer_process_loses_nothing_acknowledged_and_is_replaced(city, caplog):
    handle = run_in_thread(city, "127.0.0.1", 0)
    try:
        gateway = handle.gateway
        answers, sent, victim = asyncio.run(load_with_a_kill(handle.port, gateway, kill_after=1.5, recover_within=30))
        replacement = gateway.writer.pid
        status = gateway.health()["status"]
    finally:
        handle.stop()

    assert len(answers) == sent, f"{sent - len(answers)} requests never answered"
    for _, answer, after in answers:  # 2.04, or 5.03 with its Max-Age and text, nothing else
        if answer.code != Code.CHANGED:
            assert after and answer.code == Code.SERVICE_UNAVAILABLE, (answer.code, answer.payload)
            assert (answer.payload, answer.opt.max_age) in {(RESTARTING, 1), (UNAVAILABLE, 5)}, answer.payload
        else:
            assert answer.payload == b""
    before = [a for a in answers if not a[2]]
    after = [a for a in answers if a[2]]
    assert len(before) >= 20, "too little load before the kill to mean anything"
    assert sum(a.code == Code.SERVICE_UNAVAILABLE for _, a, _ in after) >= 1, "the kill went unnoticed"
    # Recovered without a restart of the gateway: a new writer process stores again.
    assert sum(a.code == Code.CHANGED for _, a, _ in after) >= 50
    assert replacement != victim and not alive(victim)
    assert status == "ok"
    assert "writer process" in caplog.text and "ended unexpectedly" in caplog.text

    db.session.rollback()
    rows = {(b, ts, occ) for b, ts, occ in db.session.execute(select(Row.bay_id, Row.ts, Row.occupied))}
    acknowledged = [reading for reading, answer, _ in answers if answer.code == Code.CHANGED]
    missing = [r for r in acknowledged if r not in rows]
    assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged readings not stored"


def post_one(port: int, reading: dict) -> Message:
    """One POST from its own client context."""

    async def main():
        context = await aiocoap.Context.create_client_context()
        try:
            request = Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/occupancy",
                              payload=json.dumps(reading).encode(), content_format=50)
            return await asyncio.wait_for(context.request(request).response, 30)
        finally:
            await context.shutdown()

    return asyncio.run(main())


def wait_for(condition, seconds: float, what: str):
    """Poll until `condition()` is true; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.02)


def test_a_writer_dying_young_is_restarted_after_pauses_that_double_and_one_that_cannot_start_is_retried(
        city, caplog):
    pause = 0.25  # the first pause (1 s as deployed), short to keep the test short
    handle = run_in_thread(city, "127.0.0.1", 0, restart_pause=pause)
    writer = handle.gateway.writer
    try:
        # Killed right after each start (before QUICK_DEATH): each restart waits twice as long.
        gaps = []
        for _ in range(3):
            victim = writer.pid
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: writer.pid != victim and writer.available, 40, "new writer process")
            gaps.append(time.monotonic() - killed)
        assert writer.restarts == 3
        assert gaps[0] >= pause and gaps[1] >= 2 * pause and gaps[2] >= 4 * pause, gaps
        # While it restarts a request is answered at once: 5.03 with Max-Age 1, nothing stored.
        victim = writer.pid
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not writer.available, 10, "noticed death")
        refused = post_one(handle.port, {"bay": "GAR-001", "occupied": True, "ts": time.time() - 5, "seq": 1})
        assert (refused.code, refused.payload, refused.opt.max_age) == (Code.SERVICE_UNAVAILABLE, RESTARTING, 1)
        wait_for(lambda: writer.pid != victim and writer.available, 60, "new writer process")
        # A writer process that cannot start (here: a database URL it cannot parse) is tried again
        # after a pause, and the one after the fix comes up.
        good = writer.config["SQLALCHEMY_DATABASE_URI"]
        writer.config["SQLALCHEMY_DATABASE_URI"] = "no-such-scheme://"
        victim = writer.pid
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: "could not start a writer process" in caplog.text, 60, "failed start")
        writer.config["SQLALCHEMY_DATABASE_URI"] = good
        wait_for(lambda: writer.pid != victim and writer.available and alive(writer.pid), 90, "writer after the fix")
        stored = post_one(handle.port, {"bay": "GAR-001", "occupied": True, "ts": time.time() - 5, "seq": 1})
        assert stored.code == Code.CHANGED
    finally:
        handle.stop()
    db.session.rollback()
    assert [(b, occ) for b, _, occ in db.session.execute(select(Row.bay_id, Row.ts, Row.occupied))] == [("GAR-001", True)]


def test_stop_ends_the_writer_process(city):
    handle = run_in_thread(city, "127.0.0.1", 0)
    pid = handle.gateway.writer.pid
    assert alive(pid)
    handle.stop()
    assert not alive(pid)
