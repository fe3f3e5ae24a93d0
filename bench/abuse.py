"""Abuse: what hostile clients cost the real gateway process (#14), measured from outside.

Two runs against `python -m gateway.server` on a fresh database with a small city, from a raw-UDP
client in this process that paces its datagrams, reads every answer and acknowledges separate
ones:

  (a) the Block1 flood: block 0 (More set) of a transfer that is never finished, under a new
      Uri-Query each time, half of them proper 1 KiB blocks and half 16 KB datagrams that claim a
      1 KiB block size (the issue's attack, which grew the gateway from 165 MB to 1.16 GB in 16 s);
  (b) the fuzz run: datagrams that are not CoAP, CoAP with junk or cut options (a Uri-Path that is
      not UTF-8, random Block1 values), Block1 misuse, other methods and paths, and POSTs with
      invalid readings (a byte string as bay id, ts from 1970, unknown keys, bad JSON and CBOR),
      with a valid reading every `valid_every` datagrams. Every invalid input is built so that no
      single-byte change makes it valid (its ts is decades old), so any stored row beyond the
      valid readings is an invalid input taken.

Figures: datagrams sent and answered, answers by code, the gateway's RSS (its process tree) before
the run, at its peak and after; crashes (the process gone, a 5.00 answer, a traceback in its
log); rows stored from invalid input; valid readings answered 2.04 and stored. `run_flood` and
`run_fuzz` are what tests/test_gateway_abuse.py runs, briefly, in `make test`.
"""
from __future__ import annotations

import json
import random
import select
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cbor2

from .ingest import Server, free_udp_port, proc_rss_mib
from .report import Report

POST, GET, PUT, DELETE = 2, 1, 3, 4
CON, NON, ACK, RST = 0, 1, 2, 3


@dataclass
class AbuseConfig:
    flood_datagrams: int = 55_000  # the figure
    flood_rate: float = 3_500.0  # datagrams/s: the 55,000 in 16 s
    fuzz_seconds: float = 120.0
    fuzz_rate: float = 2_000.0
    valid_every: int = 50
    sockets: int = 8
    seed: int = 14


FULL = AbuseConfig()
SMOKE = AbuseConfig(flood_datagrams=400, fuzz_seconds=0.5, fuzz_rate=800.0, valid_every=20, sockets=2)


# ---------------------------------------------------------------- encoding
def _option(delta: int, value: bytes) -> bytes:
    """One option header (RFC 7252 §3.1) with its value; delta and length up to 268 + 65,535."""
    def nibble(n: int) -> tuple[int, bytes]:
        if n < 13:
            return n, b""
        if n < 269:
            return 13, bytes([n - 13])
        return 14, struct.pack("!H", n - 269)

    d, dx = nibble(delta)
    n, nx = nibble(len(value))
    return bytes([(d << 4) | n]) + dx + nx + value


def _uint(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""


def encode(code: int, mid: int, token: bytes, options: list[tuple[int, bytes]], payload: bytes = b"",
           mtype: int = CON) -> bytes:
    """A CoAP datagram from (option number, value) pairs in any order."""
    out = bytes([0x40 | (mtype << 4) | len(token), code]) + struct.pack("!H", mid & 0xFFFF) + token
    last = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        out += _option(number - last, value)
        last = number
    return out + (b"\xff" + payload if payload else b"")


def block1(number: int, more: bool, szx: int) -> bytes:
    return _uint((number << 4) | (int(more) << 3) | szx)


URI_PATH, CONTENT_FORMAT, URI_QUERY, BLOCK1, SIZE1, OBSERVE, ACCEPT = 11, 12, 15, 27, 60, 6, 17
OCCUPANCY = [(URI_PATH, b"occupancy")]


def post(mid: int, token: bytes, payload: bytes, content_format: int = 50, extra=()) -> bytes:
    return encode(POST, mid, token, OCCUPANCY + [(CONTENT_FORMAT, _uint(content_format))] + list(extra), payload)


# ---------------------------------------------------------------- the attacks
def flood(count: int, seed: int):
    """Block 0 with More set of transfers never finished, each under its own Uri-Query."""
    rng = random.Random(seed)
    for i in range(count):
        size = 1024 if i % 2 else 16_000  # a proper 1 KiB block, or 16 KB claiming a 1 KiB block
        payload = b"[" + bytes(rng.choices(b"0123456789 ,", k=size - 1))
        yield post(i, struct.pack("!I", i), payload, extra=[(URI_QUERY, f"t={i}".encode()), (BLOCK1, block1(0, True, 6))]), None


def _ancient_reading(rng: random.Random, bays: list[str]) -> dict:
    """A reading no single-byte change makes valid: ts is decades old."""
    reading = {"bay": rng.choice(bays), "occupied": rng.random() < 0.5, "ts": rng.randrange(0, 10_000)}
    if rng.random() < 0.5:
        reading["seq"] = rng.randrange(0, 2**32)
    return reading


def _invalid_payload(rng: random.Random, bays: list[str]) -> tuple[bytes, int]:
    """A POST body (and its Content-Format) that must be refused."""
    kind = rng.randrange(10)
    ancient = _ancient_reading(rng, bays)
    if kind == 0:
        return json.dumps(ancient).encode(), 50
    if kind == 1:
        return cbor2.dumps([ancient, _ancient_reading(rng, bays)]), 60
    if kind == 2:  # a byte string as bay id, with an ancient ts so that no bit flip makes it valid
        return cbor2.dumps({**ancient, "bay": ancient["bay"].encode()}), 60
    if kind == 3:
        return json.dumps({**ancient, rng.choice(["colour", "n", "vb", ""]): 1}).encode(), 50
    if kind == 4:
        return b"[" * rng.randrange(1, 5000), rng.choice([50, 110])
    if kind == 5:
        return bytes(rng.randbytes(rng.randrange(0, 200))), rng.choice([50, 60, 110, 112, 0, 41])
    if kind == 6:
        # vb as text and an absolute ts from 1978: wrong twice over, so one changed byte cannot fix it
        return json.dumps([{"n": f"urn:dev:bay:{ancient['bay']}:presence", "vb": "true", "bt": ancient["ts"] + 2**28}]).encode(), 110
    if kind == 7:
        return json.dumps({**ancient, "ts": rng.choice([1e308, -1.0, 2**64])}).encode(), 50
    if kind == 8:
        return json.dumps({"bay": "NOPE-" + str(rng.randrange(999)), "occupied": True}).encode(), 50
    return cbor2.dumps({**ancient, "occupied": rng.choice([1, "true", None])}), 60


def _junk_options(rng: random.Random) -> list[tuple[int, bytes]]:
    options = []
    for _ in range(rng.randrange(0, 5)):
        number = rng.choice([URI_PATH, URI_QUERY, CONTENT_FORMAT, BLOCK1, SIZE1, OBSERVE, ACCEPT, 1, 3, 7, 8, 23, 28,
                             35, 39, 258, 2048, rng.randrange(0, 65_000)])
        options.append((number, rng.randbytes(rng.choice([0, 1, 2, 3, 4, 8, 40]))))
    return options


def fuzz(seed: int, bays: list[str], valid_every: int, base_ts: float):
    """Endless (datagram, valid reading or None); a valid reading every `valid_every` datagrams."""
    rng = random.Random(seed)
    i = 0
    while True:
        i += 1
        mid, token = i & 0xFFFF, struct.pack("!I", i)
        if i % valid_every == 0:
            reading = {"bay": rng.choice(bays), "occupied": rng.random() < 0.5, "ts": round(base_ts + i * 0.001, 3),
                       "seq": i}
            yield post(mid, token, json.dumps(reading).encode()), reading
            continue
        kind = rng.randrange(8)
        if kind == 0:  # not CoAP at all, or cut short
            data = rng.randbytes(rng.randrange(0, 64))
        elif kind == 1:  # an invalid POST with one byte changed
            payload, fmt = _invalid_payload(rng, bays)
            data = bytearray(post(mid, token, payload, fmt))
            spot = rng.randrange(len(data))
            data[spot] = rng.randrange(256)
            data = bytes(data[: rng.randrange(spot, len(data) + 1)])
        elif kind == 2:  # a Uri-Path or Uri-Query that is not UTF-8, and other junk options
            data = encode(POST, mid, token, [(URI_PATH, rng.randbytes(rng.randrange(1, 8)) + b"\xff")] + _junk_options(rng),
                          _invalid_payload(rng, bays)[0])
        elif kind == 3:  # Block1 misuse: any block number, size and More
            # Blocks of one socket may join into one body: bytes no JSON or CBOR body can hold
            # (0xff is CBOR's "break" and never UTF-8), so no such body is a valid reading.
            number, szx = rng.choice([0, 0, 1, 2, 5, 1000, 2**19]), rng.randrange(8)
            size = 2 ** (szx + 4)
            chunk = b"\xff" * rng.choice([size, size, size // 2, 3 * size, 16_000])
            fmt = rng.choice([50, 60, 110, 112])
            data = post(mid, token, chunk, fmt, [(BLOCK1, block1(number, rng.random() < 0.7, szx))]
                        + ([(SIZE1, _uint(rng.randrange(0, 70_000)))] if rng.random() < 0.3 else []))
        elif kind == 4:  # other methods and paths, observe flags, types
            method = rng.choice([GET, PUT, DELETE, POST, 5, 7, 31])
            path = rng.choice([b"occupancy", b"lots", b".well-known", b"x" * 300])
            options = [(URI_PATH, path)] + ([(URI_PATH, rng.choice([b"PR-WEST", b"../..", b"", b"core"]))]
                                            if rng.random() < 0.5 else []) + _junk_options(rng)
            data = encode(method, mid, token, options, rng.randbytes(rng.randrange(0, 20)),
                          mtype=rng.choice([CON, NON, ACK, RST]))
        elif kind == 5:  # responses and empty messages nobody asked for
            data = encode(rng.choice([0, 65, 68, 132, 160]), mid, token[: rng.randrange(0, 5)], _junk_options(rng),
                          mtype=rng.choice([CON, NON, ACK, RST]))
        elif kind == 6:  # token length 9-15 (reserved), or a header claiming a longer token
            data = bytes([0x40 | rng.randrange(9, 16), POST]) + struct.pack("!H", mid) + rng.randbytes(rng.randrange(0, 20))
        else:  # a well-formed POST whose readings must be refused
            payload, fmt = _invalid_payload(rng, bays)
            data = post(mid, token, payload, fmt)
        yield data, None


# ---------------------------------------------------------------- the client
@dataclass
class AttackResult:
    sent: int = 0
    answered: int = 0
    codes: Counter = field(default_factory=Counter)
    valid_sent: list = field(default_factory=list)
    valid_acknowledged: list = field(default_factory=list)
    rss_before: float = 0.0
    rss_peak: float = 0.0
    rss_after: float = 0.0
    seconds: float = 0.0


def attack(port: int, pid: int, datagrams, *, rate: float, sockets: int, seconds: float | None = None,
           count: int | None = None) -> AttackResult:
    """Send `datagrams` ((bytes, valid reading or None)) at `rate`/s from `sockets` ports, for
    `seconds` or `count` datagrams; read every answer, acknowledge separate ones, sample the RSS."""
    result = AttackResult(rss_before=proc_rss_mib(pid))
    result.rss_peak = result.rss_before
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sockets)]
    for sock in socks:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    target = ("127.0.0.1", port)
    pending: dict[tuple[int, bytes], dict] = {}  # (socket index, token) -> valid reading
    started = time.monotonic()
    next_sample = started
    stream = iter(datagrams)
    try:
        while True:
            now = time.monotonic()
            if (seconds is not None and now - started >= seconds) or (count is not None and result.sent >= count):
                break
            due = int((now - started) * rate) + 1 - result.sent
            if count is not None:
                due = min(due, count - result.sent)
            for _ in range(max(0, min(due, 200))):
                data, reading = next(stream)
                index = result.sent % sockets
                try:
                    socks[index].sendto(data, target)
                except (BlockingIOError, OSError):
                    pass
                result.sent += 1
                if reading is not None:
                    result.valid_sent.append(reading)
                    pending[(index, data[4:8])] = reading
            _drain(socks, target, result, pending, wait=0.002)
            if now >= next_sample:
                result.rss_peak = max(result.rss_peak, proc_rss_mib(pid))
                next_sample = now + 0.2
        end = time.monotonic() + 3.0  # the answers still on their way
        while time.monotonic() < end:
            if not _drain(socks, target, result, pending, wait=0.1) and time.monotonic() > end - 2.0:
                break
        result.seconds = time.monotonic() - started
        result.rss_after = proc_rss_mib(pid)
        result.rss_peak = max(result.rss_peak, result.rss_after)
    finally:
        for sock in socks:
            sock.close()
    return result


def _drain(socks, target, result: AttackResult, pending: dict, wait: float) -> int:
    """Read what has arrived; ACK separate answers; record codes and acknowledged valid readings."""
    got = 0
    ready, _, _ = select.select(socks, [], [], wait)
    for sock in ready:
        index = socks.index(sock)
        while True:
            try:
                raw = sock.recv(65_536)
            except BlockingIOError:
                break
            if len(raw) < 4:
                continue
            mtype, code, token = (raw[0] >> 4) & 3, raw[1], raw[4:4 + (raw[0] & 0x0F)]
            if mtype == CON:  # a separate answer: acknowledge it, or the gateway resends it
                sock.sendto(bytes([0x60, 0]) + raw[2:4], target)
            if code == 0:
                continue  # an empty ACK; the answer follows
            got += 1
            result.answered += 1
            result.codes[f"{code >> 5}.{code & 31:02d}"] += 1
            reading = pending.pop((index, token), None)
            if reading is not None and code == 68:  # 2.04
                result.valid_acknowledged.append(reading)
    return got


# ---------------------------------------------------------------- checks over a run
def stored_rows(url: str) -> set[tuple]:
    """Every stored (bay, ts, occupied, seq)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {(b, round(ts, 3), bool(occ), seq) for b, ts, occ, seq in
                    conn.execute(text("SELECT bay_id, ts, occupied, seq FROM readings"))}
    finally:
        engine.dispose()


def as_row(reading: dict) -> tuple:
    return reading["bay"], round(reading["ts"], 3), reading["occupied"], reading.get("seq")


def tracebacks(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count("Traceback")


def run_flood(port: int, pid: int, cfg: AbuseConfig) -> AttackResult:
    """The Block1 flood (a) against a gateway already running."""
    return attack(port, pid, flood(cfg.flood_datagrams, cfg.seed), rate=cfg.flood_rate, sockets=cfg.sockets,
                  count=cfg.flood_datagrams)


def run_fuzz(port: int, pid: int, cfg: AbuseConfig, bays: list[str]) -> AttackResult:
    """The fuzz run (b) against a gateway already running."""
    datagrams = fuzz(cfg.seed, bays, cfg.valid_every, base_ts=time.time() - 600)
    return attack(port, pid, datagrams, rate=cfg.fuzz_rate, sockets=cfg.sockets, seconds=cfg.fuzz_seconds)


# ---------------------------------------------------------------- the benchmark
def run(report: Report, backends: list[str], cfg: AbuseConfig, workdir: Path, log=print) -> None:
    """Both runs against a fresh gateway per database; figures into `report`."""
    from .ingest import IngestConfig, prepare_database

    workdir.mkdir(parents=True, exist_ok=True)
    for backend in backends:
        url, bays, _ = prepare_database(backend, IngestConfig(lots=10, bays_per_lot=20), workdir)
        port = free_udp_port()
        server = Server("gateway", port, workdir / f"abuse-{backend}.log", url)
        try:
            idle = proc_rss_mib(server.pid)
            flooded = run_flood(port, server.pid, cfg)
            log(f"  {backend} Block1 flood: {flooded.sent} datagrams in {flooded.seconds:.1f} s, answers "
                f"{dict(flooded.codes)}; RSS {flooded.rss_before:.0f} -> peak {flooded.rss_peak:.0f} MiB")
            fuzzed = run_fuzz(port, server.pid, cfg, bays)
            alive = server.proc.poll() is None
            log(f"  {backend} fuzz: {fuzzed.sent} datagrams in {fuzzed.seconds:.1f} s, answers {dict(fuzzed.codes)}; "
                f"RSS {fuzzed.rss_before:.0f} -> peak {fuzzed.rss_peak:.0f} MiB; alive {alive}")
        finally:
            server.stop()
        rows = stored_rows(url)
        valid = {as_row(r) for r in fuzzed.valid_sent}
        name = f"abuse.{backend}"
        report.add(f"{name}.flood_datagrams", flooded.sent, "datagrams", note=f"{flooded.sent / flooded.seconds:.0f}/s, "
                   f"answered {flooded.answered}")
        report.add(f"{name}.flood_rss_growth", flooded.rss_peak - idle, "MiB", "<=", FLOOD_RSS_GROWTH_MIB,
                   note=f"idle {idle:.0f} MiB, peak {flooded.rss_peak:.0f} MiB (process tree)")
        report.add(f"{name}.fuzz_datagrams", fuzzed.sent, "datagrams", note=f"{fuzzed.sent / fuzzed.seconds:.0f}/s, "
                   f"answered {fuzzed.answered}")
        report.add(f"{name}.fuzz_rss_growth", fuzzed.rss_peak - idle, "MiB", "<=", FLOOD_RSS_GROWTH_MIB)
        crashes = int(not alive) + fuzzed.codes.get("5.00", 0) + flooded.codes.get("5.00", 0) + tracebacks(server.log_path)
        report.add(f"{name}.crashes", crashes, "", "<=", 0, note="process gone, 5.00 answers, tracebacks in its log")
        report.add(f"{name}.rows_from_invalid_input", len(rows - valid), "rows", "<=", 0)
        acknowledged = {as_row(r) for r in fuzzed.valid_acknowledged}
        report.add(f"{name}.valid_acknowledged_not_stored", len(acknowledged - rows), "readings", "<=", 0,
                   note=f"{len(acknowledged)} of {len(valid)} valid readings answered 2.04")


# The gateway's memory under the flood may grow by at most this much over its idle size (stated in
# docs/sensors.md): the partial transfers it holds are bounded (gateway/blockwise.py), the rest is
# the duplicate-detection window filling (67 s × the datagram rate).
FLOOD_RSS_GROWTH_MIB = 64.0
