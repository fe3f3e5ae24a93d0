"""`python -m bench`: every benchmark, one line per figure with its target, ratio and PASS/MISS.

    python -m bench                      # the full run (minutes; data sets cached in bench/data/)
    python -m bench --smoke              # every benchmark at tiny sizes, in seconds (make test runs it)
    python -m bench --only ingest,rollup --db postgresql
    python -m bench --markdown out.md    # also write the table as Markdown

The full run's results are also written to bench/results/ (JSON and Markdown, not in git).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from . import datasets
from .report import Report

BENCHMARKS = ("ingest", "current", "reports", "rollup", "abuse", "forecast", "compaction")


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    info = {
        "cpus": os.cpu_count(), "cpu_model": cpu, "ram_gib": round(mem / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    for package in ("aiocoap", "SQLAlchemy", "Flask", "psycopg", "waitress"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = None
    try:
        with datasets._pg_admin() as conn:
            info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    except Exception:  # noqa: BLE001
        info["postgresql"] = None
    return info


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks of the parking system.")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: keeps the code from rotting")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated: " + ",".join(BENCHMARKS))
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--no-cache", action="store_true", help="regenerate the data sets")
    parser.add_argument("--markdown", help="write the table as Markdown to this file")
    parser.add_argument("--soak-seconds", type=float, help="length of the half-load memory run (default 600)")
    args = parser.parse_args(argv)
    args.only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(args.only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sys.path.insert(0, str(datasets.ROOT))
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    backends = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    if "postgresql" in backends:
        why = datasets.postgres_available()
        if why:
            print(f"PostgreSQL not reachable ({why}): SQLite only", flush=True)
            backends = ["sqlite"]

    scratch = None
    if args.smoke:
        # Own data directory and database names: the smoke run never touches the cached data sets.
        scratch = tempfile.TemporaryDirectory(prefix="parking-bench-smoke-")
        datasets.DATA_DIR = Path(scratch.name)
        datasets.PG_PREFIX = f"parking_bench_smoke_{os.getpid()}"
    workdir = datasets.DATA_DIR / "ingest-run"

    from . import abuse, compaction, current_state, forecast, ingest, reports, rollup

    report = Report(meta={"machine": machine(), "smoke": args.smoke, "backends": backends,
                          "started": time.strftime("%Y-%m-%d %H:%M:%S %z")})
    m = report.meta["machine"]
    print(f"machine: {m['cpus']} × {m['cpu_model']}, {m['ram_gib']} GiB RAM, load {m['load_average']}")
    print(f"versions: Python {m['python']}, SQLite {m['sqlite']}, PostgreSQL {m['postgresql']}, "
          f"aiocoap {m['aiocoap']}, SQLAlchemy {m['SQLAlchemy']}, Flask {m['Flask']}, psycopg {m['psycopg']}")
    print(f"mode: {'smoke (tiny sizes, timings meaningless)' if args.smoke else 'full'}; "
          f"databases: {', '.join(backends)}; benchmarks: {', '.join(args.only)}")
    print(Report.header(), flush=True)
    use_cache = not args.no_cache
    started = time.perf_counter()

    def log(text: str) -> None:
        print(text, flush=True)

    try:
        if "ingest" in args.only:
            log("# ingest: gateway vs bare aiocoap, raw-UDP load generator in its own process")
            cfg = ingest.SMOKE if args.smoke else ingest.FULL
            if args.soak_seconds:
                cfg.soak_seconds = args.soak_seconds
            ingest.run(report, backends, cfg, workdir, log)
        if "current" in args.only:
            cfg = current_state.SMOKE if args.smoke else current_state.FULL
            log(f"# current state: GET /api/lots; {datasets.describe(cfg.city)}; ten times: {datasets.describe(cfg.city_10x)}")
            current_state.run(report, backends, cfg, log, use_cache)
        if "reports" in args.only:
            cfg = reports.SMOKE if args.smoke else reports.FULL
            log(f"# reports: hourly CSV; {datasets.describe(cfg.city)}")
            small = rollup.SMOKE.history if args.smoke else rollup.FULL.history
            log(f"  and for scale the rollup benchmark's city: {datasets.describe(small)}")
            reports.run(report, backends, cfg, log, use_cache, small_city=small)
        if "rollup" in args.only:
            cfg = rollup.SMOKE if args.smoke else rollup.FULL
            log(f"# rollup: one new hour; history {datasets.describe(cfg.history)}")
            rollup.run(report, backends, cfg, log, use_cache)
        if "abuse" in args.only:
            cfg = abuse.SMOKE if args.smoke else abuse.FULL
            log(f"# abuse: the gateway under a Block1 flood ({cfg.flood_datagrams} datagrams) and a "
                f"{cfg.fuzz_seconds:.0f} s CoAP fuzz run")
            abuse.run(report, backends, cfg, datasets.DATA_DIR / "abuse-run", log)
        if "forecast" in args.only:
            cfg = forecast.SMOKE if args.smoke else forecast.FULL
            log(f"# forecast: one lot's forecaster after {cfg.days} days of 5-minute observations")
            forecast.run(report, cfg, log)
        if "compaction" in args.only:
            cfg = compaction.SMOKE if args.smoke else compaction.FULL
            log(f"# compaction: bytes per bay-day and report/rollup times before and after; {compaction.describe(cfg)}")
            compaction.run(report, backends, cfg, log)
        if args.smoke and "current" in args.only:
            log("# data sets: generated aggregates and bay states equal the real rollup's")
            spec = current_state.SMOKE.city
            for backend in backends:
                compared, differ = datasets.check_consistency(datasets.url_for(backend, spec.key()))
                report.add(f"datasets.{backend}.consistency_differences", differ, "rows", "<=", 0,
                           note=f"{compared} hours compared")
    finally:
        if args.smoke and "postgresql" in backends:
            datasets.pg_drop_prefix(datasets.PG_PREFIX)  # every database this smoke run made
        if scratch is not None:
            scratch.cleanup()

    elapsed = time.perf_counter() - started
    report.meta["seconds"] = round(elapsed, 1)
    report.meta["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(report.table())
    print(f"took {elapsed:.0f} s; load average at the end {report.meta['load_average_end']}")
    if args.markdown:
        Path(args.markdown).write_text(report.markdown() + "\n")
    if not args.smoke:
        results = datasets.ROOT / "bench" / "results"
        results.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (results / f"{stamp}.json").write_text(report.to_json())
        (results / f"{stamp}.md").write_text(report.markdown() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
