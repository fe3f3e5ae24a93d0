"""The CoAP gateway over loopback (contract §3): a real aiocoap client, libcoap's coap-client where
installed, and raw datagrams where the test is about datagrams, against the real gateway, on
SQLite and on PostgreSQL."""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import aiocoap
import cbor2
import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from gateway.resources import MAX_PAYLOAD
from gateway.server import run_in_thread, run_with_deadline
from gateway.transport import DEDUP_WINDOW, RECEIVE_BUFFER
from parking.extensions import db
from parking.models import Bay
from parking.models import StoredReading as Row

COAP_CLIENT = next(
    filter(None, map(shutil.which, ("coap-client", "coap-client-notls", "coap-client-gnutls", "coap-client-openssl"))),
    None,
)


# --- helpers ------------------------------------------------------------------------------------
class Client:
    """One aiocoap client context talking to one gateway."""

    def __init__(self, context: aiocoap.Context, address: tuple[str, int]):
        self.context = context
        self.base = f"coap://{address[0]}:{address[1]}"

    async def post(self, payload, content_format=50, **options) -> Message:
        """POST /occupancy; JSON-encodes a dict or list payload."""
        if not isinstance(payload, bytes):
            payload = json.dumps(payload).encode()
        if content_format is not None:
            options["content_format"] = content_format
        request = Message(code=Code.POST, uri=self.base + "/occupancy", payload=payload, **options)
        return await self.context.request(request).response

    async def get(self, path: str, **options) -> Message:
        """GET a path."""
        return await self.context.request(Message(code=Code.GET, uri=self.base + path, **options)).response


def talk(address, scenario):
    """Run `await scenario(client)` with one client context on a fresh event loop; return its result."""

    async def main():
        context = await aiocoap.Context.create_client_context()
        try:
            return await scenario(Client(context, address))
        finally:
            await context.shutdown()

    return asyncio.run(main())


def stored() -> list[tuple]:
    """Every stored reading as (bay, ts, occupied, seq), in ts order, as committed right now."""
    db.session.rollback()  # a fresh snapshot: the gateway commits on its own connection
    return [tuple(r) for r in db.session.execute(select(Row.bay_id, Row.ts, Row.occupied, Row.seq).order_by(Row.ts, Row.id))]


def bay(bay_id: str) -> Bay:
    """A bay as committed right now."""
    db.session.rollback()
    return db.session.get(Bay, bay_id)


def datagram(mid: int, payload: bytes, content_format: int = 50) -> bytes:
    """A confirmable POST /occupancy as raw bytes, with a chosen message ID."""
    message = Message(code=Code.POST, payload=payload, content_format=content_format, uri_path=("occupancy",))
    message.mtype = aiocoap.CON
    message.mid = mid
    message.token = mid.to_bytes(2, "big")
    return message.encode()


def exchange(address, datagrams: list[bytes]) -> list[list[Message]]:
    """Send datagrams one by one from one socket; per datagram, what came back.

    That is the piggy-backed answer, or an empty ACK followed by the separate answer (when the
    handler took over 0.1 s), or only an empty ACK (a repeat of a datagram answered that way).
    """
    replies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in datagrams:
            sock.sendto(data, address)
            got: list[Message] = []
            sock.settimeout(10)
            while not got or got[-1].code == Code.EMPTY:
                try:
                    raw = sock.recv(65_536)
                except TimeoutError:
                    if got:  # an empty ACK and nothing after it: a repeat
                        break
                    raise
                message = Message.decode(raw)
                message.raw = raw
                got.append(message)
                if message.mtype == aiocoap.CON:  # a separate answer wants its ACK
                    ack = Message(code=Code.EMPTY)
                    ack.mtype, ack.mid = aiocoap.ACK, message.mid
                    sock.sendto(ack.encode(), address)
                sock.settimeout(2)
            replies.append(got)
    return replies


def probe(app) -> dict:
    """The gateway's health probe, as /healthz calls it."""
    return app.extensions["parking_parts"]["gateway"]()


@pytest.fixture
def start_gateway(city):
    """Start gateways with chosen options on free ports; all are stopped after the test."""
    handles = []

    def start(**options):
        handle = run_in_thread(city, "127.0.0.1", 0, **options)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()


@contextlib.contextmanager
def locked_database(backend: str, app):
    """Another connection holds the write lock (SQLite) or an exclusive lock on readings (PostgreSQL)."""
    if backend == "sqlite":
        path = make_url(app.config["SQLALCHEMY_DATABASE_URI"]).database
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.rollback()
            holder.close()
    else:
        engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
        with engine.connect() as holder:
            holder.execute(text("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE"))
            try:
                yield
            finally:
                holder.rollback()
        engine.dispose()


@contextlib.contextmanager
def unreachable_database(backend: str, app):
    """The database refuses the gateway: SQLite locked by another writer; PostgreSQL refusing
    connections, with the existing ones terminated (what a restart or failover looks like)."""
    if backend == "sqlite":
        with locked_database(backend, app):
            yield
        return
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    name = url.database
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        admin.dispose()
        db.session.remove()
        db.engine.dispose()  # the test's own pooled connections were terminated too


# --- storing ------------------------------------------------------------------------------------
TS = time.time() - 600


@pytest.mark.parametrize(
    "content_format, payload",
    [
        (50, json.dumps({"bay": "PRW-001", "occupied": True, "ts": TS, "seq": 7, "battery": 90}).encode()),
        (60, cbor2.dumps({"bay": "PRW-001", "occupied": True, "ts": TS, "seq": 7, "battery": 90})),
        (110, json.dumps([{"bn": "urn:dev:bay:PRW-001:", "bt": TS, "n": "presence", "vb": True}]).encode()),
        (112, cbor2.dumps([{-2: "urn:dev:bay:PRW-001:", -3: TS, 0: "presence", 4: True}])),
    ],
    ids=["json", "cbor", "senml-json", "senml-cbor"],
)
def test_every_content_format_is_stored(coap_gateway, content_format, payload):
    response = talk(coap_gateway, lambda c: c.post(payload, content_format))
    assert (response.code, response.payload) == (Code.CHANGED, b"")
    ((bay_id, ts, occupied, _),) = stored()
    assert (bay_id, ts, occupied) == ("PRW-001", pytest.approx(TS, abs=1e-6), True)
    assert bay("PRW-001").state is True


def test_reading_without_ts_takes_the_receipt_time(coap_gateway):
    before = time.time()
    response = talk(coap_gateway, lambda c: c.post({"bay": "STR-001", "occupied": False}))
    assert response.code == Code.CHANGED
    ((_, ts, occupied, _),) = stored()
    assert before <= ts <= time.time() and occupied is False


def test_a_batch_is_stored_whole(coap_gateway):
    batch = [{"bay": f"GAR-00{i}", "occupied": i % 2 == 0, "ts": TS + i} for i in range(1, 7)]
    assert talk(coap_gateway, lambda c: c.post(batch)).code == Code.CHANGED
    assert [(b, occ) for b, _, occ, _ in stored()] == [(f"GAR-00{i}", i % 2 == 0) for i in range(1, 7)]


@pytest.mark.parametrize(
    "bad, code, text",
    [
        ({"bay": "NOPE-1", "occupied": True}, Code.NOT_FOUND, "unknown bay: NOPE-1"),
        (lambda: {"bay": "GAR-003", "occupied": True, "ts": time.time() + 3600}, Code.BAD_REQUEST, "s in the future"),
        ({"bay": "GAR-003", "occupied": "yes"}, Code.BAD_REQUEST, "reading 1: occupied: must be true or false"),
    ],
    ids=["unknown-bay", "future", "not-boolean"],
)
def test_a_batch_is_refused_whole(coap_gateway, bad, code, text):
    bad = bad() if callable(bad) else bad
    batch = [{"bay": "GAR-001", "occupied": True, "ts": TS}, bad, {"bay": "GAR-002", "occupied": False, "ts": TS}]
    response = talk(coap_gateway, lambda c: c.post(batch))
    assert response.code == code
    assert text in response.payload.decode()
    assert stored() == []


@pytest.mark.parametrize(
    "payload, content_format, code, text",
    [
        (b'{"bay": "PRW-001", "occupied": tru', 50, Code.BAD_REQUEST, "malformed JSON at byte"),
        (b"[]", 50, Code.BAD_REQUEST, "empty batch: send at least one reading"),
        (b'{"bay": "PRW-001", "occupied": true, "colour": 1}', 50, Code.BAD_REQUEST, "unknown key 'colour'"),
        (json.dumps([{"n": "urn:dev:bay:PRW-001:battery", "v": 80}]).encode(), 110, Code.BAD_REQUEST,
         "unknown name 'urn:dev:bay:PRW-001:battery'"),
        (lambda: json.dumps({"bay": "PRW-001", "occupied": True, "ts": time.time() + 400}).encode(), 50,
         Code.BAD_REQUEST, "in the future (limit 300 s)"),
        (b'{"bay": "PRW-099", "occupied": true}', 50, Code.NOT_FOUND, "unknown bay: PRW-099"),
        # Implausible readings (#14): a byte string as bay id, a ts from 1970 or older than the backlog.
        (cbor2.dumps({"bay": b"PRW-001", "occupied": True}), 60, Code.BAD_REQUEST, "bay: must be a string"),
        (b'{"bay": "PRW-001", "occupied": true, "ts": 0}', 50, Code.BAD_REQUEST,
         "bay PRW-001: ts 0 is "),
        (b'{"bay": "PRW-001", "occupied": true, "ts": 1}', 50, Code.BAD_REQUEST,
         "days old (limit 30 days, PARKING_MAX_BACKLOG_DAYS)"),
        (b'[{"bay": "PRW-001", "occupied": true}, {"bay": "PRW-002", "occupied": true, "ts": 157766400}]', 50,
         Code.BAD_REQUEST, "reading 1 (bay PRW-002): ts 157766400 is "),
        (b'{"bay": "PRW-001", "occupied": true}', None, Code.UNSUPPORTED_CONTENT_FORMAT, "Content-Format none not supported"),
        (b"PRW-001 occupied", 0, Code.UNSUPPORTED_CONTENT_FORMAT, "Content-Format 0 not supported: use 50 (JSON)"),
        (b"\x00" * (MAX_PAYLOAD + 1), 50, Code.REQUEST_ENTITY_TOO_LARGE,
         f"request of {MAX_PAYLOAD + 1} bytes is over the limit of {MAX_PAYLOAD} bytes"),
    ],
    ids=["malformed", "empty", "unknown-key", "senml-name", "future", "unknown-bay", "bytes-bay", "ts-0", "ts-1",
         "ts-1975", "no-format", "text", "too-large"],
)
def test_refusals_answer_their_code_with_a_diagnostic(coap_gateway, payload, content_format, code, text):
    payload = payload() if callable(payload) else payload  # a time-dependent payload is made now
    response = talk(coap_gateway, lambda c: c.post(payload, content_format))
    assert response.code == code
    assert text in response.payload.decode()
    if code == Code.REQUEST_ENTITY_TOO_LARGE:  # sent block-wise by aiocoap; refused at block 0 by Size1
        assert response.opt.size1 == MAX_PAYLOAD
    assert stored() == []


def test_the_backlog_window_takes_an_outage_buffer_and_follows_its_setting(start_gateway, city):
    now = time.time()
    default = start_gateway()
    city.config["MAX_BACKLOG_DAYS"] = 2  # read by the next gateway's writer process
    short = start_gateway()
    readings = [{"bay": "GAR-001", "occupied": True, "ts": now - 29 * 86400},
                {"bay": "GAR-002", "occupied": True, "ts": now - 3 * 86400}]

    async def scenario(c):
        return [await c.post(r) for r in readings]

    refused = talk(("127.0.0.1", short.port), scenario)
    assert [a.code for a in refused] == [Code.BAD_REQUEST, Code.BAD_REQUEST]
    assert refused[1].payload.decode() == (
        f"bay GAR-002: ts {now - 3 * 86400:.0f} is 3.0 days old (limit 2 days, PARKING_MAX_BACKLOG_DAYS)")
    assert stored() == []
    kept = talk(("127.0.0.1", default.port), scenario)
    assert [a.code for a in kept] == [Code.CHANGED, Code.CHANGED]
    assert sorted(b for b, *_ in stored()) == ["GAR-001", "GAR-002"]


# --- duplicates and order -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "first, again",
    [
        ({"bay": "PRW-002", "occupied": True, "ts": TS, "seq": 11}, {"bay": "PRW-002", "occupied": True, "ts": TS, "seq": 11}),
        ({"bay": "PRW-002", "occupied": True, "ts": TS}, {"bay": "PRW-002", "occupied": True, "ts": TS}),
        # Same seq within the hour: a retransmission whose ts the sensor recomputed.
        ({"bay": "PRW-002", "occupied": True, "ts": TS, "seq": 11}, {"bay": "PRW-002", "occupied": True, "ts": TS + 2, "seq": 11}),
    ],
    ids=["replay", "same-ts-and-state", "same-seq"],
)
def test_a_duplicate_is_answered_204_and_stored_once(coap_gateway, first, again):
    async def scenario(c):
        return await c.post(first), await c.post(again)

    answers = talk(coap_gateway, scenario)
    assert [a.code for a in answers] == [Code.CHANGED, Code.CHANGED]
    assert len(stored()) == 1


def test_a_retransmitted_datagram_gets_the_same_answer_and_is_handled_once(coap_gateway, city):
    data = datagram(0x1234, json.dumps({"bay": "PRW-003", "occupied": False, "ts": TS}).encode())
    first, second = exchange(coap_gateway, [data, data])
    assert first[-1].code == Code.CHANGED and first[-1].token == b"\x12\x34"
    # The repeat gets the very ACK the original got (the 2.04 itself, or an empty ACK when the
    # 2.04 came separately), byte for byte, from aiocoap's duplicate cache.
    assert second[0].mid == 0x1234 and second[0].raw == first[0].raw
    assert probe(city)["answered"]["2.04"] == 1  # the second one never reached the resource
    assert len(stored()) == 1


def test_late_readings_land_in_ts_order(coap_gateway):
    readings = [
        {"bay": "STR-002", "occupied": True, "ts": TS + 60, "seq": 3},
        {"bay": "STR-002", "occupied": False, "ts": TS + 120, "seq": 4},
        {"bay": "STR-002", "occupied": False, "ts": TS, "seq": 1},  # arrives last, happened first
        {"bay": "STR-002", "occupied": True, "ts": TS + 30, "seq": 2},
    ]

    async def scenario(c):
        return [await c.post(r) for r in readings]

    assert all(a.code == Code.CHANGED for a in talk(coap_gateway, scenario))
    assert [seq for *_, seq in stored()] == [1, 2, 3, 4]
    current = bay("STR-002")
    assert (current.state, current.last_ts, current.state_since) == (False, TS + 120, TS + 120)


# --- sizes --------------------------------------------------------------------------------------
def batch_of(size: int) -> bytes:
    """A JSON batch of distinct readings at least `size` bytes long."""
    items, i = [], 0
    while len(json.dumps(items)) < size:
        items.append({"bay": f"GAR-00{i % 6 + 1}", "occupied": i % 2 == 0, "ts": TS + i, "seq": i})
        i += 1
    return json.dumps(items).encode()


def test_a_single_datagram_over_aiocoaps_4096_byte_read_is_read_whole(coap_gateway):
    payload = batch_of(5_000)
    ((*_, answer),) = exchange(coap_gateway, [datagram(1, payload)])
    assert answer.code == Code.CHANGED, answer.payload
    assert len(stored()) == len(json.loads(payload))


@pytest.mark.parametrize("size", [MAX_PAYLOAD + 1, 60_000])
def test_an_oversize_single_datagram_is_413_never_400(coap_gateway, size):
    ((*_, answer),) = exchange(coap_gateway, [datagram(2, b"[" + b" " * (size - 2) + b"]")])
    assert answer.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert answer.payload.decode() == f"request of {size} bytes is over the limit of {MAX_PAYLOAD} bytes"
    assert answer.opt.size1 == MAX_PAYLOAD


def test_a_larger_batch_goes_block_wise(coap_gateway):
    payload = batch_of(MAX_PAYLOAD - 600)  # aiocoap splits anything over 1,024 bytes into Block1
    response = talk(coap_gateway, lambda c: c.post(payload))
    assert response.code == Code.CHANGED
    assert len(stored()) == len(json.loads(payload))


def block(mid: int, number: int, more: bool, szx: int, payload: bytes, query: str | None = None) -> bytes:
    """A confirmable POST /occupancy carrying one Block1 block (RFC 7959), as raw bytes."""
    message = Message(code=Code.POST, payload=payload, content_format=50, uri_path=("occupancy",))
    message.opt.block1 = BlockOption.BlockwiseTuple(number, more, szx)
    if query is not None:
        message.opt.uri_query = (query,)
    message.mtype, message.mid, message.token = aiocoap.CON, mid, mid.to_bytes(2, "big")
    return message.encode()


BODY = json.dumps([{"bay": f"GAR-00{i}", "occupied": True, "ts": int(TS) + i} for i in range(1, 7)]).encode()


def blocks_of(body: bytes, szx: int, first: int = 0) -> list[tuple]:
    """(number, more, szx, payload) of every block of `body` from block `first`, in blocks of 2**(szx+4)."""
    size = 2 ** (szx + 4)
    numbers = range(first, -(-len(body) // size))
    return [(n, n < numbers[-1], szx, body[n * size:(n + 1) * size]) for n in numbers]


@pytest.mark.parametrize(
    "blocks, code, text",
    [
        # #16: a gap after block 0, and a changed block size that does not continue where block 0
        # ended, were an uncaught ValueError (5.00); a block without block 0 was 4.08 with no text.
        ([(0, True, 2, BODY[:64]), (2, True, 2, BODY[128:192])], Code.REQUEST_ENTITY_INCOMPLETE,
         "block 2 of 64 bytes starts at byte 128, but 64 bytes have arrived: start again with block 0"),
        ([(0, True, 2, BODY[:64]), (1, False, 3, BODY[64:])], Code.REQUEST_ENTITY_INCOMPLETE,
         "block 1 of 128 bytes starts at byte 128, but 64 bytes have arrived: start again with block 0"),
        ([(1, False, 2, BODY[64:])], Code.REQUEST_ENTITY_INCOMPLETE,
         "block 1 without block 0 (or its transfer expired): start again with block 0"),
        ([(0, True, 6, b" " * 16_000)], Code.BAD_REQUEST,
         "Block1 block 0 must carry its block size of 1024 bytes (it carries 16000)"),
        ([(0, True, 7, b" " * 1024)], Code.BAD_REQUEST, "Block1 size exponent 7 (BERT) is for CoAP over TCP: use 16 to 1024 bytes"),
    ],
    ids=["gap", "changed-size", "no-block-0", "oversize-block", "bert"],
)
def test_block1_misuse_is_4xx_with_a_diagnostic_and_counted(coap_gateway, city, blocks, code, text):
    answers = exchange(coap_gateway, [block(0x100 + i, *b) for i, b in enumerate(blocks)])
    *continued, (*_, last) = answers
    assert [a[-1].code for a in continued] == [Code.CONTINUE] * len(continued)
    assert (last.code, last.payload.decode()) == (code, text)
    assert probe(city)["answered"][code.dotted] == 1 and probe(city)["answered"]["5.00"] == 0
    assert stored() == []
    # The gateway goes on: the same body in proper blocks is stored.
    *_, (*_, done) = exchange(coap_gateway, [block(0x200 + i, *b) for i, b in enumerate(blocks_of(BODY, 2))])
    assert done.code == Code.CHANGED
    assert len(stored()) == 6


def test_a_smaller_block_size_from_where_the_transfer_stands_is_taken(coap_gateway):
    # RFC 7959 §2.5: a client may switch to a smaller block size; the next block continues at byte 128.
    blocks = [(0, True, 3, BODY[:128])] + blocks_of(BODY, 1, first=4)
    *continued, (*_, done) = exchange(coap_gateway, [block(0x300 + i, *b) for i, b in enumerate(blocks)])
    assert [a[-1].code for a in continued] == [Code.CONTINUE] * (len(blocks) - 1)
    assert done.code == Code.CHANGED
    assert len(stored()) == 6


# --- lots and Observe ---------------------------------------------------------------------------
def test_lot_counts_and_unknown_lot(coap_gateway):
    now = time.time()

    async def scenario(c):
        await c.post([{"bay": "PRW-001", "occupied": True, "ts": now - 5}, {"bay": "PRW-002", "occupied": False, "ts": now - 3}])
        return await c.get("/lots/PR-WEST"), await c.get("/lots/PR-WEST", accept=60), await c.get("/lots/NOWHERE")

    as_json, as_cbor, missing = talk(coap_gateway, scenario)
    assert (as_json.code, as_json.opt.content_format) == (Code.CONTENT, 50)
    body = json.loads(as_json.payload)
    assert body == {"free": 1, "occupied": 1, "unknown": 2, "total": 4, "updated_at": body["updated_at"]}
    assert body["updated_at"].endswith("+00:00")
    assert cbor2.loads(as_cbor.payload) == body
    assert (missing.code, missing.payload) == (Code.NOT_FOUND, b"unknown lot: NOWHERE")


def test_observers_are_notified_when_the_free_count_changes(coap_gateway):
    now = time.time()

    async def scenario(c):
        request = c.context.request(Message(code=Code.GET, uri=c.base + "/lots/PR-WEST", observe=0))
        first = await request.response
        notifications = request.observation.__aiter__()
        await c.post({"bay": "PRW-001", "occupied": False, "ts": now - 30})  # free 0 -> 1
        second = await asyncio.wait_for(notifications.__anext__(), 10)
        await c.post({"bay": "PRW-002", "occupied": True, "ts": now - 20})  # free stays 1: no notification
        await c.post({"bay": "PRW-003", "occupied": False, "ts": now - 10})  # free 1 -> 2
        third = await asyncio.wait_for(notifications.__anext__(), 10)
        request.observation.cancel()
        return first, second, third

    first, second, third = talk(coap_gateway, scenario)
    assert first.opt.observe is not None
    assert [json.loads(m.payload)["free"] for m in (first, second, third)] == [0, 1, 2]
    assert json.loads(third.payload)["occupied"] == 1


def test_observing_what_cannot_be_observed_is_refused_with_its_code(coap_gateway, city):
    async def scenario(c):
        return (await c.get("/lots/NOWHERE", observe=0),
                await c.context.request(Message(code=Code.PUT, uri=c.base + "/lots/GARAGE/x", observe=0)).response)

    unknown, put = talk(coap_gateway, scenario)  # the PUT was 5.00 (an AttributeError inside aiocoap)
    assert (unknown.code, unknown.payload) == (Code.NOT_FOUND, b"unknown lot: NOWHERE")
    assert put.code == Code.METHOD_NOT_ALLOWED


def test_observers_are_notified_when_a_bay_turns_stale(start_gateway, city):
    handle = start_gateway(observe_check=0.1)
    stale_after = city.config["STALE_AFTER"]

    async def scenario(c):
        request = c.context.request(Message(code=Code.GET, uri=c.base + "/lots/STREET", observe=0))
        first = await request.response
        notifications = request.observation.__aiter__()
        # Fresh for 2.5 more seconds: counted free now, unknown soon, without any new reading.
        await c.post({"bay": "STR-001", "occupied": False, "ts": time.time() - stale_after + 2.5})
        fresh = await asyncio.wait_for(notifications.__anext__(), 10)
        stale = await asyncio.wait_for(notifications.__anext__(), 10)
        request.observation.cancel()
        return first, fresh, stale

    first, fresh, stale = talk(("127.0.0.1", handle.port), scenario)
    assert [(json.loads(m.payload)["free"], json.loads(m.payload)["unknown"]) for m in (first, fresh, stale)] == [
        (0, 2), (1, 1), (0, 2)
    ]


def test_well_known_core_lists_the_resources(coap_gateway):
    response = talk(coap_gateway, lambda c: c.get("/.well-known/core"))
    assert (response.code, response.opt.content_format) == (Code.CONTENT, 40)
    links = response.payload.decode().split(",")
    assert '</occupancy>;ct="50 60 110 112";rt="parking.occupancy"' in links
    for lot in ("PR-WEST", "GARAGE", "STREET"):
        assert f'</lots/{lot}>;rt="parking.lot";ct="50 60";obs' in links


# --- storage trouble ----------------------------------------------------------------------------
def test_unreachable_database_is_503_with_max_age_and_recovers_without_restart(start_gateway, city, backend):
    handle = start_gateway(lock_timeout=0.3)
    reading = {"bay": "GAR-004", "occupied": True, "ts": TS, "seq": 1}

    async def scenario(c):
        with unreachable_database(backend, city):
            refused = await c.post(reading)
            status = probe(city)["status"]
        accepted = await c.post(reading)
        return refused, status, accepted

    refused, status, accepted = talk(("127.0.0.1", handle.port), scenario)
    assert refused.code == Code.SERVICE_UNAVAILABLE
    assert refused.payload == b"storage unavailable: retry in 5 s"
    assert refused.opt.max_age == 5
    assert status == "storage_unavailable"
    assert accepted.code == Code.CHANGED
    assert probe(city)["status"] == "ok"
    assert [(b, s) for b, _, _, s in stored()] == [("GAR-004", 1)]


def test_a_full_queue_is_503_instead_of_growing(start_gateway, city, backend):
    handle = start_gateway(lock_timeout=5.0, queue_limit=1)

    async def scenario(c):
        with locked_database(backend, city):
            # The writer waits on the lock with the first request; the second fills the queue.
            waiting = [asyncio.ensure_future(c.post({"bay": f"GAR-00{i}", "occupied": True, "ts": TS})) for i in (1, 2)]
            deadline = time.monotonic() + 4
            while probe(city)["queue"] < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            refused = await c.post({"bay": "GAR-003", "occupied": True, "ts": TS})
        return refused, await asyncio.gather(*waiting)

    refused, waited = talk(("127.0.0.1", handle.port), scenario)
    assert refused.code == Code.SERVICE_UNAVAILABLE
    assert (refused.payload, refused.opt.max_age) == (b"gateway busy: too many requests waiting", 1)
    assert [a.code for a in waited] == [Code.CHANGED, Code.CHANGED]
    assert sorted(b for b, *_ in stored()) == ["GAR-001", "GAR-002"]


# --- the aiocoap traps and the health probe -----------------------------------------------------
def test_duplicate_detection_forgets_after_its_window(start_gateway, city):
    assert DEDUP_WINDOW == 67.0  # RFC 7252's formula with MAX_LATENCY = 10 s (docs/sensors.md)
    # A window long enough that a loaded machine still probes inside it, short enough to wait out.
    handle = start_gateway(dedup_window=2.0)
    address = ("127.0.0.1", handle.port)
    data = datagram(0x0B0B, json.dumps({"bay": "PRW-004", "occupied": True, "ts": TS}).encode())
    # Taken before sending: the entry expires a window after its arrival, which is later. (After
    # the exchange would undercount: a repeat answered by an empty ACK waits out its timeout.)
    sent = time.monotonic()
    exchange(address, [data, data])
    health = probe(city)
    # Remembered until its window ran out (on a loaded machine the exchange itself may outlast it).
    assert health["dedup_entries"] == 1 or time.monotonic() - sent >= 2.0
    assert health["answered"]["2.04"] == 1  # the repeat was answered from memory, not handled again
    while probe(city)["dedup_entries"] and time.monotonic() < sent + 15:
        time.sleep(0.02)
    assert probe(city)["dedup_entries"] == 0  # memory is bounded by rate × window
    assert time.monotonic() - sent >= 2.0  # not before the window ran out
    # Past the window the same datagram is handled again, and still stored once.
    ((*_, again),) = exchange(address, [data])
    assert again.code == Code.CHANGED
    assert probe(city)["answered"]["2.04"] == 2
    assert len(stored()) == 1


class _DoneAtOnce(concurrent.futures.Executor):
    """An executor whose reads are complete when handed over: the loop learns it a step later."""

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


@pytest.mark.parametrize("steps", range(6))
def test_a_read_cancelled_as_it_completes_ends_cancelled(steps):
    """The gateway's stop cancels its observe check, whose lot read may be completing just then:
    the task must end cancelled (asyncio.wait_for on Python 3.11 returned the read's result
    instead, the check read on, and the stop waited for it until its timeout)."""

    async def scenario() -> str:
        task = asyncio.create_task(run_with_deadline(_DoneAtOnce(), lambda: "counts", deadline=5))
        for _ in range(steps):
            await asyncio.sleep(0)
        if not task.cancel():
            return "finished before the cancel"
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "cancellation dropped"

    assert asyncio.run(scenario()) in ("cancelled", "finished before the cancel")


def test_socket_receive_buffer_is_raised(coap_gateway, city):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    sock.close()
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    granted = probe(city)["receive_buffer"]
    assert granted >= min(RECEIVE_BUFFER, rmem_max) and granted > default


def test_health_probe_counts_answers(coap_gateway, city, client):
    async def scenario(c):
        await c.post({"bay": "PRW-001", "occupied": True})
        await c.post({"bay": "NOPE", "occupied": True})

    talk(coap_gateway, scenario)
    part = client.get("/healthz").get_json()["parts"]["gateway"]
    assert part["status"] == "ok" and part["queue"] == 0
    assert (part["answered"]["2.04"], part["answered"]["4.04"]) == (1, 1)


# --- libcoap's coap-client ----------------------------------------------------------------------
def coap_client(*args: str) -> subprocess.CompletedProcess:
    """Run coap-client; it prints a 2.xx payload on stdout and "<code> <diagnostic>" on stderr."""
    if COAP_CLIENT is None:
        if os.environ.get("CI"):
            pytest.fail("coap-client is required in CI (Debian: apt-get install libcoap3-bin)")
        pytest.skip("libcoap's coap-client is not installed (Debian: apt-get install libcoap3-bin)")
    done = subprocess.run([COAP_CLIENT, *args], capture_output=True, text=True, timeout=30)
    # libcoap's client exits 0 whatever the answer (a 4.04 included, on stderr): anything else is
    # the client failing (a bad option, a crash), which no check of its output would tell.
    assert done.returncode == 0, f"{COAP_CLIENT} exited {done.returncode}: {done.stderr}"
    return done


def test_coap_client_example_from_the_docs(coap_gateway):
    host, port = coap_gateway
    # docs/sensors.md's line, with the test's bay and port.
    done = coap_client("-m", "post", "-t", "50", "-e", '{"bay":"PRW-001","occupied":true}', f"coap://{host}:{port}/occupancy")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert [(b, occ) for b, _, occ, _ in stored()] == [("PRW-001", True)]


@pytest.mark.parametrize(
    "content_format, payload",
    [
        ("60", cbor2.dumps({"bay": "GAR-005", "occupied": False, "ts": TS})),
        ("110", json.dumps([{"n": "urn:dev:bay:GAR-005:presence", "vb": False, "t": -60}]).encode()),
        ("112", cbor2.dumps([{0: "urn:dev:bay:GAR-005:presence", 4: False, 6: -60}])),
    ],
    ids=["cbor", "senml-json", "senml-cbor"],
)
def test_coap_client_other_formats(coap_gateway, tmp_path, content_format, payload):
    host, port = coap_gateway
    (tmp_path / "body").write_bytes(payload)
    done = coap_client("-m", "post", "-t", content_format, "-f", str(tmp_path / "body"), f"coap://{host}:{port}/occupancy")
    assert (done.returncode, done.stderr) == (0, "")
    assert [(b, occ) for b, _, occ, _ in stored()] == [("GAR-005", False)]


@pytest.mark.parametrize(
    "size, block, answer",
    [
        (3_000, "64", ""),  # 47 blocks of 64 bytes
        (MAX_PAYLOAD - 600, "1024", ""),
        (MAX_PAYLOAD + 2_000, "1024", "4.13 request of"),
    ],
)
def test_coap_client_block_wise(coap_gateway, tmp_path, size, block, answer):
    host, port = coap_gateway
    payload = batch_of(size)
    (tmp_path / "batch.json").write_bytes(payload)
    done = coap_client("-m", "post", "-t", "50", "-b", block, "-f", str(tmp_path / "batch.json"), f"coap://{host}:{port}/occupancy")
    if answer:
        assert answer in done.stderr
    else:
        assert done.stderr == ""
    assert len(stored()) == (0 if answer else len(json.loads(payload)))


def test_coap_client_sees_diagnostics_and_discovery(coap_gateway):
    host, port = coap_gateway
    unknown = coap_client("-m", "post", "-t", "50", "-e", '{"bay":"NOPE","occupied":true}', f"coap://{host}:{port}/occupancy")
    wrong_format = coap_client("-m", "post", "-t", "0", "-e", "occupied", f"coap://{host}:{port}/occupancy")
    core = coap_client("-m", "get", f"coap://{host}:{port}/.well-known/core")
    lot = coap_client("-m", "get", f"coap://{host}:{port}/lots/GARAGE")
    assert unknown.stderr.strip() == "4.04 unknown bay: NOPE"
    assert wrong_format.stderr.startswith("4.15 Content-Format 0 not supported")
    assert "</occupancy>" in core.stdout and "</lots/GARAGE>" in core.stdout
    assert json.loads(lot.stdout)["total"] == 6


# --- datagrams that are not CoAP ----------------------------------------------------------------
NOT_COAP = [
    b"\x40\x02\x12\x34\xb1\x87",  # POST, Uri-Path that is not UTF-8 (#14: a traceback per datagram)
    b"\x40\x02\x12\x34\xbb\x6f\x63\x63\x75\x70\x61\x6e\x63\xff\xfe",  # Uri-Path cut off by junk
    b"\x40\x02\x12",  # shorter than a CoAP header
    b"\x80\x02\x12\x34",  # version 2
    b"\x40\x02\x12\x34\xbd",  # an option announced but absent
    b"\x40\x02\x12\x34\xd1",  # an extended option number announced but absent
    b"\x40\x02\x12\x34\xf0",  # a reserved option header (15)
    bytes(range(256)),
    b"\x60\x02\x12\x35\xb9occupancy",  # a request as an ACK: aiocoap warned "those don't fit" for each
    b"\x50\x00\x12\x36",  # an empty NON
    b"\x40\xe0\x12\x37",  # code 7.00
]


def test_datagrams_that_are_not_coap_are_counted_not_logged_one_by_one(coap_gateway, city, caplog):
    rounds = 250
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(rounds):
            for data in NOT_COAP:
                sock.sendto(data, coap_gateway)
            if i % 50 == 0:
                time.sleep(0.01)  # leave the loop room to read
    deadline = time.monotonic() + 20
    while probe(city)["malformed"] < rounds * len(NOT_COAP) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert probe(city)["malformed"] == rounds * len(NOT_COAP)
    # Still answering, and nothing of the junk reached a resource.
    response = talk(coap_gateway, lambda c: c.post({"bay": "PRW-001", "occupied": True, "ts": TS}))
    assert response.code == Code.CHANGED
    assert sum(probe(city)["answered"].values()) == 1
    assert [(b, occ) for b, _, occ, _ in stored()] == [("PRW-001", True)]
    # One summary line for 2,750 datagrams; no traceback, no line per datagram.
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines[:5]
    assert lines[0].startswith("ignored 1 datagram(s) that are not valid CoAP (latest from 127.0.0.1:")
    assert lines[0].endswith(": UnicodeDecodeError); 1 since start; at most one such line per 60 s")
