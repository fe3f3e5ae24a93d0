"""Where the gateway's time goes under full load: its event loop and its writer process profiled.

The gateway runs in-process (`gateway.server.run_in_thread`) on a fresh database with the ingest
city; cProfile is switched on inside the event-loop thread, and in the writer process (which
`gateway.writer_process` does when PARKING_WRITER_PROFILE names a file; SIGUSR1 restarts it after
the warm-up); the raw-UDP load generator runs as its own process. Prints the writer's counters
(group size, time in store+commit), the CPU each process used, and each one's top functions.

    python -m bench.profile_gateway [--db sqlite|postgresql] [--seconds 10] [--window 200]

By hand only (profiling slows Python code about twofold; the shares are what count).
"""
from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import os
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import datasets
from .ingest import IngestConfig, _one_cpu, prepare_database

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


def top(profile, sort: str, n: int) -> str:
    out = io.StringIO()
    stats = profile if isinstance(profile, pstats.Stats) else pstats.Stats(profile)
    stats.stream = out
    stats.sort_stats(sort).print_stats(n)
    lines = out.getvalue().splitlines()
    return "\n".join(line for line in lines if line.strip() and not line.startswith("   Ordered") and "restriction" not in line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--oscore", action="store_true",
                        help="the deployed setting: every request OSCORE-protected with its bay's sensor key")
    parser.add_argument("--memory", action="store_true",
                        help="instead of cProfile: tracemalloc, what Python memory grows between a quarter of the run and its end")
    parser.add_argument("--rate", type=float, help="requests per second (default: as fast as answered)")
    args = parser.parse_args(argv)
    if args.memory:
        return memory(args)
    sys.path.insert(0, str(datasets.ROOT))
    import gateway.server as gs

    with tempfile.TemporaryDirectory() as tmp:
        url, bays, keys = prepare_database(args.db, IngestConfig(), Path(tmp))
        bays_file = Path(tmp) / "bays.txt"
        bays_file.write_text("\n".join(bays))
        keys_file = Path(tmp) / "sensor-keys.json"
        keys_file.write_text(json.dumps(keys))
        gs.GatewayThread._run = _profiled("event-loop thread", gs.GatewayThread._run)
        writer_profile = Path(tmp) / "writer.prof"
        os.environ["PARKING_WRITER_PROFILE"] = str(writer_profile)
        app = datasets.make_app(url, SENSOR_AUTH="oscore" if args.oscore else "none")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        handle = gs.run_in_thread(app, "127.0.0.1", port)
        try:
            base = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--bays-file", str(bays_file),
                    "--window", str(args.window), "--timeout", "5"] + (["--oscore", str(keys_file)] if args.oscore else [])
            # Warm-up: one reading per bay (the bay directory as after a day in service); then the
            # profiles and counters start from zero.
            subprocess.run(base + ["--count", str(len(bays)), "--seconds", "120", "--serial", "0"],
                           cwd=datasets.ROOT, capture_output=True, text=True, timeout=180, check=True)
            for profile in PROFILES.values():
                profile.clear()
            writer_pid = handle.gateway.writer.pid
            os.kill(writer_pid, signal.SIGUSR1)  # its profile starts afresh at its next group
            before = dataclasses.replace(handle.gateway.writer.stats)
            cmd = base + ["--count", str(int(args.seconds * 6000)), "--seconds", str(args.seconds),
                          "--serial", str(len(bays))]
            cpu0 = _one_cpu(os.getpid()), _one_cpu(writer_pid)
            started = time.perf_counter()
            out = subprocess.run(cmd, cwd=datasets.ROOT, capture_output=True, text=True,
                                 timeout=args.seconds + 60, check=True).stdout
            wall = time.perf_counter() - started
            cpu1 = _one_cpu(os.getpid()), _one_cpu(writer_pid)
            after = handle.gateway.writer.stats
            stats = dataclasses.replace(after, **{f.name: _minus(getattr(after, f.name), getattr(before, f.name))
                                                  for f in dataclasses.fields(after) if f.name != "commit_max"})
        finally:
            handle.stop()
            os.environ.pop("PARKING_WRITER_PROFILE", None)
        PROFILES["writer process"] = pstats.Stats(str(writer_profile))
    print("load:", out.strip())
    print(f"CPU over the run: gateway process {(cpu1[0] - cpu0[0]) / wall:.2f} cores (this process: the event loop,"
          f" profiled), writer process {(cpu1[1] - cpu0[1]) / wall:.2f} cores")
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

    from .ingest import _one_status

    def rss(pid: int) -> float:
        return _one_status(pid, ("VmRSS",)).get("VmRSS", float("nan"))

    sys.path.insert(0, str(datasets.ROOT))
    import gateway.server as gs

    with tempfile.TemporaryDirectory() as tmp:
        url, bays, _ = prepare_database(args.db, IngestConfig(), Path(tmp))
        bays_file = Path(tmp) / "bays.txt"
        bays_file.write_text("\n".join(bays))
        app = datasets.make_app(url, SENSOR_AUTH="none")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        tracemalloc.start(8)
        handle = gs.run_in_thread(app, "127.0.0.1", port)
        pid = os.getpid()
        try:
            rate = args.rate or 300.0
            cmd = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--bays-file", str(bays_file),
                   "--count", str(int(args.seconds * rate * 1.1)), "--seconds", str(args.seconds),
                   "--window", str(args.window), "--timeout", "5", "--rate", str(rate)]
            proc = subprocess.Popen(cmd, cwd=datasets.ROOT, stdout=subprocess.PIPE, text=True)
            writer = handle.gateway.writer.pid
            time.sleep(args.seconds / 4)
            first, rss1, traced1 = tracemalloc.take_snapshot(), rss(pid), tracemalloc.get_traced_memory()[0]
            writer1 = rss(writer)
            out, _ = proc.communicate(timeout=args.seconds + 60)
            second, rss2, traced2 = tracemalloc.take_snapshot(), rss(pid), tracemalloc.get_traced_memory()[0]
            writer2 = rss(writer)
        finally:
            handle.stop()
    print("load:", out.strip())
    print(f"from {args.seconds / 4:.0f} s to the end: gateway process RSS {rss1:.1f} → {rss2:.1f} MiB; Python-traced "
          f"{traced1 / 2**20:.1f} → {traced2 / 2**20:.1f} MiB (the gateway process only); writer process RSS "
          f"{writer1:.1f} → {writer2:.1f} MiB")
    for stat in second.compare_to(first, "traceback")[: args.top // 3 or 5]:
        print(f"\n+{stat.size_diff / 1024:.0f} KiB in {stat.count_diff:+d} blocks, allocated at:")
        print("\n".join(stat.traceback.format(limit=6)))
    return 0


def _minus(after, before):
    """A counter's growth over the measured window (a list of bucket counts element by element)."""
    if isinstance(after, list):
        return [a - b for a, b in zip(after, before)]
    return after - before


if __name__ == "__main__":
    sys.exit(main())
