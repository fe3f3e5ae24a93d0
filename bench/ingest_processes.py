"""Ingest with `parking-gateway --processes N`: N gateways on ONE UDP port, on PostgreSQL.

Part of the ingest benchmark (`bench.ingest.run` calls `processes_figures`), on its servers and
load generator. For each N of the configuration (1, 2 and 4 in the full run), in alternating
rounds: the parent and its N gateway processes (each with its own writer) start on the port that
the other ingest runs use, are warmed up, measured for `processes_seconds` at the same window,
and stopped. The load comes from `sensor_sockets` source ports, each bay always from the same
one (as a sensor keeps its address), so the kernel's SO_REUSEPORT hash spreads the bays over the
N processes and each bay stays with one of them, as it would behind an affine load balancer.

How evenly the hash spread them is read from each gateway process's CPU (the process and its
writer) over the measured part: the gateway keeps no per-process request count that outlives it
(its summary line comes once a minute), and CPU per request is about the same in every process.
PostgreSQL's CPU is measured too: that of the server processes of client connections to the
run's database (`pg_stat_activity`; PostgreSQL on this machine); autovacuum, the WAL writer, the
checkpointer and the other shared server processes are not included.
Every 2.04 of these runs counts in the ingest benchmark's answered-against-stored check.

By hand, only this part, on a database of its own (`<prefix>_processes`, dropped at the end, so a
full ingest run elsewhere on the same PostgreSQL is not disturbed), after one uncounted run:

    python -m bench.ingest_processes [--processes 1,2,4] [--rounds 3] [--seconds 15]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from . import datasets
from .ingest import (IngestConfig, Load, Server, _median, _one_cpu, free_udp_port, prepare_database, proc_cpu,
                     stored_readings)
from .report import Report


def children_cpu(pid: int) -> dict[int, float]:
    """{child pid: CPU seconds of that child and its descendants} for each direct child."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(child) for child in task.read_text().split()]
        except OSError:
            pass
    return {child: proc_cpu(child) for child in children}


def database_cpu(url: str) -> dict[int, float]:
    """{pid: CPU seconds} of PostgreSQL's server processes serving connections to `url`'s database."""
    with datasets._pg_admin() as conn:
        # Client backends only: an autovacuum worker comes when the table has grown enough, in
        # one run and not the next, and would make the figure jump.
        pids = [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'",
            (url.rsplit("/", 1)[1],))]
    return {pid: _one_cpu(pid) for pid in pids}


def gateway_processes(n: int, port: int, load: Load, cfg: IngestConfig, workdir: Path, url: str, label: str) -> dict:
    """One run of `parking-gateway --processes n` on `port`: start, warm up, measure, stop; with each
    gateway process's CPU (it and its writer) over the measured part."""
    server = Server("gateway", port, workdir / f"gateway-processes-{n}-{label}.log", url, processes=n)
    try:
        load.warm_up([port], cfg, url, sensor_sockets=cfg.sensor_sockets)
        db0 = database_cpu(url)
        t0, cpu0, _ = server.sample()
        each0 = children_cpu(server.pid)
        result = load.run([port], cfg.processes_seconds, cfg.window, url=url, sensor_sockets=cfg.sensor_sockets)
        t1, cpu1, _ = server.sample()
        each1 = children_cpu(server.pid)
        db1 = database_cpu(url)
    finally:
        server.stop()
    wall = t1 - t0
    # A connection opened during the run counts whole; one closed during it is missed (the
    # writers' connections live as long as the gateway).
    database = sum(cpu - db0.get(pid, 0.0) for pid, cpu in db1.items()) / wall
    # With one process the server is the gateway itself (its child is its writer): one share.
    each = [(each1[p] - each0[p]) / wall for p in sorted(each1) if p in each0] if n > 1 else [(cpu1 - cpu0) / wall]
    result.update(processes=n, cpu_cores=(cpu1 - cpu0) / wall, each_cores=each, database_cores=database,
                  cpu_us_per_request=(cpu1 - cpu0) / max(result["ok"], 1) * 1e6,
                  database_us_per_request=database * wall / max(result["ok"], 1) * 1e6,
                  busiest_share=max(each) / sum(each) if sum(each) else None)
    return result


def processes_figures(report: Report, runs: dict, port: int, load: Load, cfg: IngestConfig, workdir: Path,
                      url: str, log) -> None:
    """`parking-gateway --processes N` for each N of cfg.processes on one port, PostgreSQL: rounds
    alternating over N, medians, and each N against one process measured the same way."""
    kinds = [f"processes_{n}" for n in cfg.processes]
    for kind in kinds:
        runs[kind] = []
    for r in range(cfg.rounds):
        for n, kind in zip(cfg.processes, kinds):
            result = gateway_processes(n, port, load, cfg, workdir, url, label=str(r))
            runs[kind].append(result)
            log(f"  round {r + 1}/{cfg.rounds} --processes {n}: {result['rps']:>7.0f} req/s  p99 {result['p99_ms']} ms  "
                f"CPU {result['cpu_cores']:.2f} cores, PostgreSQL {result['database_cores']:.2f} (per process "
                f"{' / '.join(f'{c:.2f}' for c in result['each_cores'])}; load generator {result['client_cpu']:.2f}, "
                f"{result['sockets']} source ports)  codes {result['codes']}  timeouts {result['timeouts']}")
    one = _median(runs[kinds[0]], "rps") if cfg.processes[0] == 1 else None
    for n, kind in zip(cfg.processes, kinds):
        rs, name = runs[kind], f"ingest.{kind}.postgresql"
        rps = _median(rs, "rps")
        report.add(f"{name}.throughput", rps, "req/s",
                   note=f"parking-gateway --processes {n}, one port; median of {len(rs)}, window {cfg.window}, "
                        f"{cfg.sensor_sockets} source ports")
        report.add(f"{name}.p99", _median(rs, "p99_ms"), "ms")
        report.add(f"{name}.cpu_per_request", _median(rs, "cpu_us_per_request"), "µs", note="the gateway processes")
        report.add(f"{name}.database_cpu", _median(rs, "database_cores"), "cores",
                   note=f"PostgreSQL's processes of this database's connections, "
                        f"{_median(rs, 'database_us_per_request'):.0f} µs per request")
        report.add(f"{name}.server_cpu", _median(rs, "cpu_cores"), "cores",
                   note=f"parent, {n} gateway(s) and their writers; load generator {_median(rs, 'client_cpu'):.2f} cores")
        if n > 1:
            shares = " ".join("/".join(f"{c:.2f}" for c in r["each_cores"]) for r in rs)
            report.add(f"{name}.busiest_share", _median(rs, "busiest_share"), "",
                       note=f"the busiest process's share of the gateways' CPU ({1 / n:.2f} = even); "
                            f"cores per process, each round: {shares}")
            report.add(f"{name}/one", rps / one if one and rps is not None else None, "",
                       note="against --processes 1 in the same rounds")
        lost = sum(r["timeouts"] for r in rs)
        not_ok = sum(v for r in rs for k, v in r["codes"].items() if k != "2.04")
        if lost or not_ok:
            report.add(f"{name}.not_2.04", lost + not_ok, "req", note=f"timeouts {lost}, other answers {not_ok}")


def main(argv: list[str] | None = None) -> int:
    """This part of the ingest benchmark alone, on PostgreSQL: its figures and the stored check."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_processes", description=__doc__.split("\n")[0])
    parser.add_argument("--processes", default="1,2,4", help="comma-separated process counts, the first 1 for N/1")
    parser.add_argument("--rounds", type=int, default=IngestConfig.rounds)
    parser.add_argument("--seconds", type=float, default=IngestConfig.processes_seconds)
    parser.add_argument("--sensor-sockets", type=int, default=IngestConfig.sensor_sockets)
    args = parser.parse_args(argv)
    why = datasets.postgres_available()
    if why:
        parser.error(f"PostgreSQL not reachable: {why}")
    sys.path.insert(0, str(datasets.ROOT))
    cfg = IngestConfig(rounds=args.rounds, processes=tuple(int(n) for n in args.processes.split(",")),
                       processes_seconds=args.seconds, sensor_sockets=args.sensor_sockets)
    datasets.PG_PREFIX = f"{datasets.PG_PREFIX}_processes"
    report = Report(meta={})
    with tempfile.TemporaryDirectory(prefix="parking-bench-processes-") as tmp:
        workdir = Path(tmp)
        try:
            url, bays, _ = prepare_database("postgresql", cfg, workdir)
            (workdir / "bays.txt").write_text("\n".join(bays))
            load = Load(workdir / "bays.txt", cfg.timeout)
            # One run not counted: on the fresh database the first one cost PostgreSQL 0.28-0.45
            # cores against about 0.1 in the runs after (the new database's first writes; not
            # looked into further), which would hold back the first round's --processes 1 alone.
            # In the full ingest run the database has served the other runs before these.
            port = free_udp_port()
            gateway_processes(1, port, load, cfg, workdir, url, label="first")
            processes_figures(report, {}, port, load, cfg, workdir, url,
                              lambda text: print(text, flush=True))
            stored, answered = stored_readings(url), load.ok.get(url, 0)
            report.add("ingest.postgresql.answered_2.04_not_stored", max(0, answered - stored), "req", "<=", 0,
                       note=f"{answered:,} answered 2.04, {stored:,} readings stored")
        finally:
            datasets.pg_drop(datasets.PG_PREFIX)
    print()
    print(report.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
