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
import dataclasses
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
    parser.add_argument("--memory", action="store_true",
                        help="instead of cProfile: tracemalloc, what Python memory grows between a quarter of the run and its end")
    parser.add_argument("--rate", type=float, help="requests per second (default: as fast as answered)")
    args = parser.parse_args(argv)
    if args.memory:
        return memory(args)
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
            base = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--bays-file", str(bays_file),
                    "--window", str(args.window), "--timeout", "5"]
            # Warm-up: one reading per bay (the bay directory as after a day in service); then the
            # profiles and counters start from zero.
            subprocess.run(base + ["--count", str(len(bays)), "--seconds", "120", "--serial", "0"],
                           cwd=datasets.ROOT, capture_output=True, text=True, timeout=180, check=True)
            for profile in PROFILES.values():
                profile.clear()
            before = dataclasses.replace(handle.gateway.writer.stats)
            cmd = base + ["--count", str(int(args.seconds * 6000)), "--seconds", str(args.seconds),
                          "--serial", str(len(bays))]
            started = time.perf_counter()
            out = subprocess.run(cmd, cwd=datasets.ROOT, capture_output=True, text=True,
                                 timeout=args.seconds + 60, check=True).stdout
            wall = time.perf_counter() - started
            after = handle.gateway.writer.stats
            stats = dataclasses.replace(after, **{f.name: getattr(after, f.name) - getattr(before, f.name)
                                                  for f in dataclasses.fields(after) if f.name != "commit_max"})
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


def memory(args) -> int:
    """Where Python-allocated memory grows under a steady load (tracemalloc), next to RSS."""
    import tracemalloc

    from .ingest import proc_rss_mib

    sys.path.insert(0, str(datasets.ROOT))
    import gateway.server as gs

    with tempfile.TemporaryDirectory() as tmp:
        url, bays = prepare_database(args.db, IngestConfig(), Path(tmp))
        bays_file = Path(tmp) / "bays.txt"
        bays_file.write_text("\n".join(bays))
        app = datasets.make_app(url)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        tracemalloc.start(8)
        handle = gs.run_in_thread(app, "127.0.0.1", port)
        pid = __import__("os").getpid()
        try:
            rate = args.rate or 300.0
            cmd = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--bays-file", str(bays_file),
                   "--count", str(int(args.seconds * rate * 1.1)), "--seconds", str(args.seconds),
                   "--window", str(args.window), "--timeout", "5", "--rate", str(rate)]
            proc = subprocess.Popen(cmd, cwd=datasets.ROOT, stdout=subprocess.PIPE, text=True)
            time.sleep(args.seconds / 4)
            first, rss1, traced1 = tracemalloc.take_snapshot(), proc_rss_mib(pid), tracemalloc.get_traced_memory()[0]
            out, _ = proc.communicate(timeout=args.seconds + 60)
            second, rss2, traced2 = tracemalloc.take_snapshot(), proc_rss_mib(pid), tracemalloc.get_traced_memory()[0]
        finally:
            handle.stop()
    print("load:", out.strip())
    print(f"from {args.seconds / 4:.0f} s to the end: RSS {rss1:.1f} → {rss2:.1f} MiB; Python-traced {traced1 / 2**20:.1f} → "
          f"{traced2 / 2**20:.1f} MiB")
    for stat in second.compare_to(first, "traceback")[: args.top // 3 or 5]:
        print(f"\n+{stat.size_diff / 1024:.0f} KiB in {stat.count_diff:+d} blocks, allocated at:")
        print("\n".join(stat.traceback.format(limit=6)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
