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
from parking.models import Reading as Row

BAYS = [f"PRW-00{i}" for i in range(1, 5)] + [f"GAR-00{i}" for i in range(1, 7)] + ["STR-001", "STR-002"]
SENDERS = 8


def alive(pid: int) -> bool:
    """Whether a process exists and has not ended (a zombie has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


async def load_with_a_kill(port: int, gateway, kill_after: float, recover_within: float):
    """Distinct confirmable POSTs from several senders; SIGKILL the writer process mid-load, then
    go on until 2.04 answers have come back for a while (or `recover_within` s pass).

    Returns [(reading, code, answered after the kill)] and the killed pid.
    """
    answers: list[tuple[tuple, Code, bool]] = []
    base = time.time() - 3600
    killed_at: list[float] = []
    contexts = [await aiocoap.Context.create_client_context() for _ in range(SENDERS)]

    async def sender(index: int, context: aiocoap.Context) -> None:
        n = 0
        while True:
            serial = n * SENDERS + index
            n += 1
            reading = {"bay": BAYS[serial % len(BAYS)], "occupied": serial % 3 == 0, "ts": base + serial * 0.001,
                       "seq": serial}
            request = Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/occupancy",
                              payload=json.dumps(reading).encode(), content_format=50)
            response = await context.request(request).response
            after = bool(killed_at) and time.monotonic() > killed_at[0]
            answers.append(((reading["bay"], reading["ts"], reading["occupied"]), response.code, after))
            if response.code == Code.SERVICE_UNAVAILABLE:
                await asyncio.sleep(0.05)  # Max-Age says 1 s; a short pause keeps the test short

    tasks = [asyncio.create_task(sender(i, c)) for i, c in enumerate(contexts)]
    await asyncio.sleep(kill_after)
    victim = gateway.writer.pid
    killed_at.append(time.monotonic())
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + recover_within
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        recovered = [a for a in answers if a[2] and a[1] == Code.CHANGED]
        if len(recovered) >= 50:
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for context in contexts:
        await context.shutdown()
    return answers, victim


def test_killed_writer_process_loses_nothing_acknowledged_and_is_replaced(city, caplog):
    handle = run_in_thread(city, "127.0.0.1", 0)
    try:
        gateway = handle.gateway
        answers, victim = asyncio.run(load_with_a_kill(handle.port, gateway, kill_after=1.5, recover_within=30))
        replacement = gateway.writer.pid
        status = gateway.health()["status"]
    finally:
        handle.stop()

    codes = {code for _, code, _ in answers}
    assert codes <= {Code.CHANGED, Code.SERVICE_UNAVAILABLE}, codes
    before = [a for a in answers if not a[2]]
    after = [a for a in answers if a[2]]
    assert sum(code == Code.CHANGED for _, code, _ in before) >= 20, "too little load before the kill to mean anything"
    # Recovered without a restart of the gateway: a new writer process stores again.
    assert sum(code == Code.CHANGED for _, code, _ in after) >= 50
    assert replacement != victim and not alive(victim)
    assert status == "ok"
    assert "writer process" in caplog.text and "ended unexpectedly" in caplog.text

    db.session.rollback()
    rows = {(b, ts, occ) for b, ts, occ in db.session.execute(select(Row.bay_id, Row.ts, Row.occupied))}
    acknowledged = [reading for reading, code, _ in answers if code == Code.CHANGED]
    missing = [r for r in acknowledged if r not in rows]
    assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged readings not stored"


def test_stop_ends_the_writer_process(city):
    handle = run_in_thread(city, "127.0.0.1", 0)
    pid = handle.gateway.writer.pid
    assert alive(pid)
    handle.stop()
    assert not alive(pid)
