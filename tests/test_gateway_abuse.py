"""Hostile clients against the real gateway as its own process (#14): a flood of Block1 transfers
that are never finished keeps its memory bounded, and a short CoAP fuzz run crashes nothing and
stores nothing of what it sent that was invalid (bench/abuse.py, which `make bench` runs longer)."""
from __future__ import annotations

import asyncio
import json
import time

import aiocoap
from aiocoap import Message
from aiocoap.numbers.codes import Code

from bench.abuse import AbuseConfig, as_row, run_flood, run_fuzz, stored_rows, tracebacks
from bench.ingest import Server, free_udp_port

from .test_gateway import batch_of

BAYS = [f"PRW-00{i}" for i in range(1, 5)] + [f"GAR-00{i}" for i in range(1, 7)] + ["STR-001", "STR-002"]


def gateway(city, tmp_path) -> Server:
    """`python -m gateway.server` on the test's database, started and stopped by its pid."""
    return Server("gateway", free_udp_port(), tmp_path / "gateway.log", city.config["SQLALCHEMY_DATABASE_URI"])


def post_blockwise(port: int, payload: bytes) -> Message:
    """A POST that aiocoap sends block-wise (over 1,024 bytes)."""

    async def main():
        context = await aiocoap.Context.create_client_context()
        try:
            request = Message(code=Code.POST, uri=f"coap://127.0.0.1:{port}/occupancy", payload=payload, content_format=50)
            return await context.request(request).response
        finally:
            await context.shutdown()

    return asyncio.run(main())


def test_a_flood_of_unfinished_block1_transfers_keeps_memory_bounded(city, tmp_path):
    server = gateway(city, tmp_path)
    try:
        warm = post_blockwise(server.port, batch_of(3_000))  # every code path loaded before the baseline
        assert warm.code == Code.CHANGED
        # 3,000 datagrams of 16 KB claiming a 1 KiB block, 3,000 proper 1 KiB blocks 0: aiocoap
        # kept each for 93 s (about 60 MiB here); now each source holds a few transfers at most.
        flooded = run_flood(server.port, server.pid, AbuseConfig(flood_datagrams=6_000, flood_rate=2_500.0, sockets=4))
        assert flooded.answered >= 0.9 * flooded.sent, flooded
        assert flooded.codes.keys() <= {"2.31", "4.00"}, flooded.codes
        assert flooded.codes["4.00"] >= 0.4 * flooded.sent  # the 16 KB "blocks" of 1 KiB
        growth = flooded.rss_peak - flooded.rss_before
        assert growth < 24, f"RSS grew {growth:.1f} MiB under the flood ({flooded.rss_before:.0f} -> {flooded.rss_peak:.0f})"
        # A sensor from the same address still gets its block-wise transfer through.
        payload = batch_of(2_500)
        assert post_blockwise(server.port, payload).code == Code.CHANGED
    finally:
        server.stop()
    assert tracebacks(server.log_path) == 0
    sent = json.loads(batch_of(3_000)) + json.loads(payload)  # the second repeats part of the first
    assert stored_rows(city.config["SQLALCHEMY_DATABASE_URI"]) == {as_row(r) for r in sent}


def test_a_short_fuzz_run_crashes_nothing_and_stores_only_the_valid_readings(city, tmp_path):
    server = gateway(city, tmp_path)
    try:
        cfg = AbuseConfig(fuzz_seconds=4.0, fuzz_rate=600.0, valid_every=25, sockets=4)
        started = time.monotonic()
        fuzzed = run_fuzz(server.port, server.pid, cfg, BAYS)
        assert time.monotonic() - started < 30
        alive = server.proc.poll() is None
        after = post_blockwise(server.port, batch_of(1_500))
    finally:
        server.stop()
    assert alive, server.log_tail()
    assert after.code == Code.CHANGED
    assert fuzzed.sent >= 2_000 and fuzzed.answered > 0.3 * fuzzed.sent
    assert fuzzed.codes.get("5.00", 0) == 0, (fuzzed.codes, server.log_path.read_text()[-6000:])
    assert tracebacks(server.log_path) == 0, server.log_tail(40)
    assert fuzzed.rss_peak - fuzzed.rss_before < 24
    rows = stored_rows(city.config["SQLALCHEMY_DATABASE_URI"])
    valid = {as_row(r) for r in fuzzed.valid_sent} | {as_row(r) for r in json.loads(batch_of(1_500))}
    assert rows - valid == set(), "rows stored from invalid input"
    assert {as_row(r) for r in fuzzed.valid_acknowledged} <= rows
    assert len(fuzzed.valid_acknowledged) >= 0.9 * len(fuzzed.valid_sent)
