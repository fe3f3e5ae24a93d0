"""How fast the gateway answers 2.04 under load, and whether the answer stays piggy-backed.

aiocoap sends an empty ACK and a separate response when a handler takes more than 0.1 s; a sensor
then waits for a second datagram, and the gateway holds the exchange longer. This benchmark runs
the real gateway as its own process (`python -m gateway.server`) on a fresh database with a
synthetic city, sends confirmable POSTs at fixed rates from a lightweight raw-UDP client (an
aiocoap client would be the bottleneck), and prints per rate: answers/s, the share answered
piggy-backed, latency percentiles, and the gateway's resident memory before and after.

    .venv/bin/python -m bench.ack_latency                       # SQLite in a temp dir
    .venv/bin/python -m bench.ack_latency --rates 500 2000 --seconds 10
    .venv/bin/python -m bench.ack_latency --database postgresql+psycopg://…/bench   # an empty database
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACK_WINDOW = 0.1  # aiocoap's EMPTY_ACK_DELAY


def city_file(directory: Path, lots: int, bays_per_lot: int) -> Path:
    """A synthetic city of `lots` × `bays_per_lot` bays."""
    features = [
        {
            "type": "Feature",
            "id": f"L{lot:03d}",
            "geometry": {"type": "Point", "coordinates": [12.0 + lot / 1000, 49.0]},
            "properties": {
                "name": f"Lot {lot}",
                "timezone": "Europe/Berlin",
                "bays": [f"B{lot:03d}-{bay:04d}" for bay in range(bays_per_lot)],
            },
        }
        for lot in range(lots)
    ]
    path = directory / "city.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def prepare_database(url: str, lots_file: Path) -> list[str]:
    """Migrate the database, import the city, return its bay ids."""
    sys.path.insert(0, str(ROOT))
    from parking import create_app
    from parking.cli import init_db
    from parking.lots import import_lot_file

    app = create_app({"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        init_db()
        import_lot_file(lots_file, "Europe/Berlin")
    return [bay for feature in json.loads(lots_file.read_text())["features"] for bay in feature["properties"]["bays"]]


def free_udp_port() -> int:
    """A UDP port free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def encode_post(mid: int, token: bytes, payload: bytes) -> bytes:
    """A confirmable POST /occupancy with Content-Format 50, encoded by hand (RFC 7252 §3)."""
    header = bytes([0x40 | len(token), 0x02]) + struct.pack("!H", mid) + token
    options = bytes([0xB9]) + b"occupancy" + bytes([0x11, 50])  # Uri-Path, Content-Format
    return header + options + b"\xff" + payload


class LoadClient(asyncio.DatagramProtocol):
    """Sends POSTs and records, per token, when the answer came and whether it was piggy-backed."""

    def __init__(self):
        self.sent: dict[bytes, float] = {}
        self.by_mid: dict[int, bytes] = {}
        self.latency: list[float] = []
        self.piggybacked = 0
        self.separate = 0
        self.codes: dict[str, int] = {}

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        kind, tkl, code = (data[0] >> 4) & 3, data[0] & 0x0F, data[1]
        mid = struct.unpack("!H", data[2:4])[0]
        if code == 0:  # empty ACK: the answer will come separately
            return
        token = data[4 : 4 + tkl]
        if kind == 0:  # a separate CON response must be acknowledged
            self.transport.sendto(bytes([0x60, 0]) + data[2:4], addr)
        started = self.sent.pop(token, None)
        if started is None:
            return
        self.latency.append(time.perf_counter() - started)
        if kind == 2:
            self.piggybacked += 1
        else:
            self.separate += 1
        dotted = f"{code >> 5}.{code & 0x1F:02d}"
        self.codes[dotted] = self.codes.get(dotted, 0) + 1
        self.by_mid.pop(mid, None)


async def run_rate(port: int, bays: list[str], rate: int, seconds: float, sockets: int, serial: int) -> dict:
    """Send at `rate` POST/s for `seconds`, spread over `sockets` source ports; collect answers."""
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(sockets):
        _, client = await loop.create_datagram_endpoint(LoadClient, remote_addr=("127.0.0.1", port))
        clients.append(client)
    tick = 0.005  # send what is due, then yield so that answers are timed when they arrive
    total = int(rate * seconds)
    now = time.time()
    start = time.perf_counter()
    i = 0
    while i < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        for i in range(i, due):
            client = clients[i % sockets]
            reading = {"bay": bays[(serial + i) % len(bays)], "occupied": bool(i & 1),
                       "ts": round(now - 3000 + (serial + i) * 0.0001, 4), "seq": serial + i}
            token = struct.pack("!I", serial + i)
            client.sent[token] = time.perf_counter()
            client.transport.sendto(encode_post((serial + i) & 0xFFFF, token, json.dumps(reading).encode()))
        i = due
        await asyncio.sleep(tick)
    sending = time.perf_counter() - start
    deadline = time.perf_counter() + 10
    while any(c.sent for c in clients) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    latency = sorted(x for c in clients for x in c.latency)
    codes: dict[str, int] = {}
    for c in clients:
        for k, v in c.codes.items():
            codes[k] = codes.get(k, 0) + v
        c.transport.close()
    answered = len(latency)

    def pct(p: float) -> float:
        return latency[min(len(latency) - 1, int(p * len(latency)))] * 1000 if latency else float("nan")

    return {
        "rate": rate,
        "sent": total,
        "answered": answered,
        "per_s": answered / max(sending, 1e-9),
        "piggybacked": sum(c.piggybacked for c in clients) / max(answered, 1),
        "within_window": sum(1 for x in latency if x <= ACK_WINDOW) / max(answered, 1),
        "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": latency[-1] * 1000 if latency else float("nan"),
        "codes": codes,
    }


def start_gateway(url: str, port: int, log_path: Path) -> subprocess.Popen:
    """The gateway as its own process, once its start line is logged (to a file: a pipe could fill)."""
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT), "PARKING_SENSOR_AUTH": "none"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.server", "--port", str(port)], env=env,
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 20
    while time.time() < deadline and proc.poll() is None:
        if "CoAP gateway on" in log_path.read_text():
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"gateway did not start: {log_path.read_text()[-2000:]}")


def report_rss(proc: subprocess.Popen, every: float) -> None:
    """Print the gateway's resident memory every `every` seconds while it runs."""
    started = time.monotonic()
    while proc.poll() is None:
        time.sleep(every)
        print(f"  t={time.monotonic() - started:5.0f} s  RSS {rss_kib(proc.pid) / 1024:6.1f} MiB", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one line per rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[200, 500, 1000, 2000])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sockets", type=int, default=50, help="source ports (sensors share them)")
    parser.add_argument("--database", help="an empty database URL (default: SQLite in a temp dir)")
    parser.add_argument("--lots", type=int, default=20)
    parser.add_argument("--bays-per-lot", type=int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{tmp}/bench.db"
        bays = prepare_database(url, city_file(Path(tmp), args.lots, args.bays_per_lot))
        port = free_udp_port()
        proc = start_gateway(url, port, Path(tmp) / "gateway.log")
        try:
            print(f"database {url.split('://')[0]}, {len(bays)} bays, gateway pid {proc.pid}, RSS {rss_kib(proc.pid) // 1024} MiB")
            print(f"{'rate/s':>7} {'sent':>7} {'answered':>8} {'ans/s':>7} {'piggy%':>6} {'≤0.1s%':>6} "
                  f"{'p50ms':>6} {'p95ms':>6} {'p99ms':>6} {'maxms':>6} {'RSS MiB':>7}  codes")
            serial = 0
            if args.seconds >= 30:  # long runs: show that memory levels off (duplicate window 67 s)
                threading.Thread(target=report_rss, args=(proc, 10.0), daemon=True).start()
            for rate in args.rates:
                r = asyncio.run(run_rate(port, bays, rate, args.seconds, args.sockets, serial))
                serial += r["sent"]
                print(f"{rate:>7} {r['sent']:>7} {r['answered']:>8} {r['per_s']:>7.0f} {r['piggybacked'] * 100:>6.1f} "
                      f"{r['within_window'] * 100:>6.1f} {r['p50']:>6.1f} {r['p95']:>6.1f} {r['p99']:>6.1f} "
                      f"{r['max']:>6.1f} {rss_kib(proc.pid) / 1024:>7.0f}  {r['codes']}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            summary = [line for line in (Path(tmp) / "gateway.log").read_text().splitlines() if "WARNING" in line or "ERROR" in line]
            print("\n".join(summary[-10:]))


if __name__ == "__main__":
    main()
