"""A PostgreSQL that goes silent with its connections open (#14 item 3): a real TCP proxy in front
of it that stops forwarding without closing anything. /healthz answers 503 within 2 s, the real
gateway answers 5.03 within a few seconds instead of holding every request, both recover when
the database answers again; and every engine carries the timeouts and TCP keepalive that turn a
silent network into an error (PostgreSQL only: SQLite has no network)."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import aiocoap
import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from gateway.server import READ_DEADLINE, run_in_thread
from gateway.writer_process import _writer_engine
from parking import create_app
from parking.api.health import DEADLINE
from parking.dbconnect import KEEPALIVE, TCP_USER_TIMEOUT_MS
from parking.extensions import db
from parking.lots import import_lot_file
from parking.models import StoredReading as Row

from .conftest import CITY_FILE, database_url
from .freeze_proxy import FreezeProxy


@pytest.fixture
def silent(_template_dbs, tmp_path):
    """(app whose database is behind a FreezeProxy, the proxy, the direct URL), with the test city."""
    direct = database_url("postgresql", _template_dbs, tmp_path)  # skips when PostgreSQL is unreachable
    parsed = make_url(direct)
    proxy = FreezeProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    proxied = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": proxied, "STALE_AFTER": 1800,
                      "LOTS_FILE": str(CITY_FILE), "LOTS_SNAPSHOT_SECONDS": 0,
                      "SENSOR_AUTH": "none"})  # unprotected requests: the database is under test here
    with app.app_context():
        import_lot_file(CITY_FILE, "Europe/Berlin")
        try:
            yield app, proxy, direct
        finally:
            proxy.thaw()  # whatever still waits on the database finishes
            db.session.remove()
            db.engine.dispose()
    proxy.close()


def within(limit: float, call):
    """(result, seconds) of `call()` run on a thread; fails if it has not returned after `limit` s."""
    box: list = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"no answer within {limit} s"
    return box[0], time.monotonic() - started


def test_healthz_is_503_within_2_s_while_the_database_is_silent_and_200_after(silent):
    app, proxy, _ = silent
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    proxy.freeze()
    for _ in range(3):  # the first check is left waiting; the next ones answer at once
        response, seconds = within(10, lambda: client.get("/healthz"))
        assert response.status_code == 503 and seconds < 2.0
        assert response.json["parts"]["database"] == {"status": "unavailable", "error": "NotAnswering"}
    assert DEADLINE < 2.0
    proxy.thaw()
    deadline = time.monotonic() + 15
    while client.get("/healthz").status_code != 200:
        assert time.monotonic() < deadline, "/healthz did not recover after the database answered again"
        time.sleep(0.1)


def test_gateway_answers_503_within_seconds_of_the_database_going_silent(silent):
    app, proxy, direct = silent
    handle = run_in_thread(app, "127.0.0.1", 0)
    gateway = handle.gateway
    base = f"coap://127.0.0.1:{handle.port}"
    ts = time.time() - 60
    limit = gateway.writer.group_deadline + 2.0  # every answer comes by then, or not at all

    async def post(context, reading):
        request = Message(code=Code.POST, uri=base + "/occupancy", payload=json.dumps(reading).encode(),
                          content_format=50)
        started = time.monotonic()
        response = await asyncio.wait_for(context.request(request).response, 3 * limit)
        return reading, response, time.monotonic() - started

    async def scenario():
        contexts = [await aiocoap.Context.create_client_context() for _ in range(3)]
        try:
            _, before, _ = await post(contexts[0], {"bay": "PRW-001", "occupied": True, "ts": ts, "seq": 0})
            proxy.freeze()
            posts = [post(contexts[i % 3], {"bay": "GAR-00%d" % (i % 6 + 1), "occupied": True, "ts": ts + i, "seq": i})
                     for i in range(1, 13)]
            read = asyncio.wait_for(contexts[0].request(Message(code=Code.GET, uri=base + "/lots/PR-WEST")).response,
                                    3 * limit)
            frozen = await asyncio.gather(*posts)
            started = time.monotonic()
            lot = await read
            status = gateway.health()["status"]
            proxy.thaw()
            after = []
            deadline = time.monotonic() + 40
            while not after or after[-1][1].code != Code.CHANGED:  # Max-Age says when; a new writer starts
                assert time.monotonic() < deadline, [a[1].code for a in after]
                after.append(await post(contexts[1], {"bay": "STR-001", "occupied": False, "ts": ts + 100, "seq": 100}))
                if after[-1][1].code != Code.CHANGED:
                    await asyncio.sleep(after[-1][1].opt.max_age or 1)
            return before, frozen, lot, time.monotonic() - started, status, after
        finally:
            for context in contexts:
                await context.shutdown()

    try:
        before, frozen, lot, _, status, after = asyncio.run(scenario())
    finally:
        proxy.thaw()
        handle.stop()

    assert before.code == Code.CHANGED
    assert [response.code for _, response, _ in frozen] == [Code.SERVICE_UNAVAILABLE] * 12
    slowest = max(seconds for *_, seconds in frozen)
    assert slowest < limit, f"a request was held {slowest:.1f} s by a silent database"
    assert all(response.opt.max_age for _, response, _ in frozen)
    assert (lot.code, lot.payload) == (Code.SERVICE_UNAVAILABLE, f"storage not answering: retry in {lot.opt.max_age} s".encode())
    assert READ_DEADLINE < limit
    assert status == "storage_unavailable"
    assert after[-1][1].code == Code.CHANGED
    # Nothing answered 2.04 is lost; what was answered 5.03 may or may not be there (a resend is
    # stored once), but nothing else is.
    engine = create_engine(direct)
    with engine.connect() as conn:
        rows = {(b, seq) for b, seq in conn.execute(select(Row.bay_id, Row.seq))}
    engine.dispose()
    assert {("PRW-001", 0), ("STR-001", 100)} <= rows
    assert rows <= {("PRW-001", 0), ("STR-001", 100)} | {(r["bay"], r["seq"]) for r, _, _ in frozen}


def test_the_gateway_stops_within_seconds_while_the_database_is_silent(silent):
    app, proxy, _ = silent
    handle = run_in_thread(app, "127.0.0.1", 0)
    base = f"coap://127.0.0.1:{handle.port}"

    async def requests():
        context = await aiocoap.Context.create_client_context()
        try:
            lot = context.request(Message(code=Code.GET, uri=base + "/lots/GARAGE")).response
            reading = json.dumps({"bay": "GAR-001", "occupied": True, "ts": time.time() - 5}).encode()
            posted = context.request(Message(code=Code.POST, uri=base + "/occupancy", payload=reading,
                                             content_format=50)).response
            return await asyncio.wait_for(asyncio.gather(lot, posted), 30)
        finally:
            await context.shutdown()

    proxy.freeze()
    try:
        # A reader thread and the writer process are now held by the silent database.
        lot, posted = asyncio.run(requests())
        assert (lot.code, posted.code) == (Code.SERVICE_UNAVAILABLE, Code.SERVICE_UNAVAILABLE)
        _, seconds = within(20, handle.stop)  # SIGTERM's path: shutdown must not wait for the database
    finally:
        proxy.thaw()
        handle.stop()
    assert seconds < 15


def socket_options(dbapi_connection) -> tuple:
    """(SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT) of a psycopg connection."""
    sock = socket.socket(fileno=dbapi_connection.pgconn.socket)
    try:
        return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                *(sock.getsockopt(socket.IPPROTO_TCP, option) for option in
                  (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT, socket.TCP_USER_TIMEOUT)))
    finally:
        sock.detach()  # the socket is psycopg's


def test_every_engine_has_statement_and_connect_timeouts_and_tcp_keepalive(silent):
    app, _, _ = silent
    wanted = (1, KEEPALIVE["keepalives_idle"], KEEPALIVE["keepalives_interval"], KEEPALIVE["keepalives_count"],
              TCP_USER_TIMEOUT_MS)
    # The web app's engine, which the scheduler's jobs and the gateway's reads also use.
    with db.engine.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "1min"
        assert socket_options(conn.connection.dbapi_connection) == wanted
        assert conn.connection.dbapi_connection.info.get_parameters()["connect_timeout"] == "3"
    # The gateway writer's own engine: its lock timeout, and a statement timeout a second above it.
    writer = _writer_engine(app.config, 2.0)
    try:
        with writer.connect() as conn:
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "2s"
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "3s"
            assert socket_options(conn.connection.dbapi_connection) == wanted
            assert conn.connection.dbapi_connection.info.get_parameters()["connect_timeout"] == "3"
    finally:
        writer.dispose()
