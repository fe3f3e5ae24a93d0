"""Where the gateway's time goes under full load: both of its threads profiled, in one process.

The gateway runs in-process (`gateway.server.run_in_thread`) on a fresh database with the ingest
city; cProfile is switched on inside the event-loop thread and inside the writer thread (cProfile
sees one thread each); the raw-UDP load generator runs as its own process. Prints the writer's
own counters (group size, time in store+commit) and each thread's top functions.

    python -m bench.profile_gateway [--db sqlite|postgresql] [--seconds 10] [--window 200]

By hand only (profiling slows Python code about twofold; the shares are what count).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import datasets
from .ingest import IngestConfig, prepare_database

PROFILES: dict[str, cProfile.Profile] = {}


def _profiled(name, fn):
    def wrapper(*args, **kwargs):
        profile = PROFILES.setdefault(name, cProfile.Profile())
        profile.enable()
        try:
            return fn(*args, **kwargs)
        finally:
            profile.disable()
    return wrapper


def top(profile: cProfile.Profile, sort: str, n: int) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats(sort).print_stats(n)
    lines = out.getvalue().splitlines()
    return "\n".join(line for line in lines if line.strip() and not line.startswith("   Ordered") and "restriction" not in line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(datasets.ROOT))
    import gateway.server as gs

    with tempfile.TemporaryDirectory() as tmp:
        url, bays = prepare_database(args.db, IngestConfig(), Path(tmp))
        bays_file = Path(tmp) / "bays.txt"
        bays_file.write_text("\n".join(bays))
        gs.Writer._run = _profiled("writer thread", gs.Writer._run)
        gs.GatewayThread._run = _profiled("event-loop thread", gs.GatewayThread._run)
        app = datasets.make_app(url)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        handle = gs.run_in_thread(app, "127.0.0.1", port)
        try:
            cmd = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--bays-file", str(bays_file),
                   "--count", str(int(args.seconds * 20000)), "--seconds", str(args.seconds),
                   "--window", str(args.window), "--timeout", "5"]
            started = time.perf_counter()
            out = subprocess.run(cmd, cwd=datasets.ROOT, capture_output=True, text=True,
                                 timeout=args.seconds + 60, check=True).stdout
            wall = time.perf_counter() - started
            stats = handle.gateway.writer.stats
        finally:
            handle.stop()
    print("load:", out.strip())
    print(f"writer: {stats.requests} requests in {stats.groups} groups (mean {stats.requests / max(stats.groups, 1):.1f} "
          f"per group); store+commit {stats.commit_seconds:.2f} s of {wall:.2f} s wall "
          f"({stats.commit_seconds / wall * 100:.0f} %), {stats.commit_seconds / max(stats.requests, 1) * 1e6:.0f} µs per request, "
          f"max group {stats.commit_max * 1000:.1f} ms")
    for name, profile in PROFILES.items():
        print(f"\n=== {name}: by own time")
        print(top(profile, "tottime", args.top))
        print(f"\n=== {name}: by cumulative time")
        print(top(profile, "cumulative", args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
