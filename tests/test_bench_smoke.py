"""The benchmarks' smoke run (`python -m bench --smoke`): every benchmark at tiny sizes, so that
bench/ does not rot. It asserts that every figure is printed, never what the timings are."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PER_BACKEND = [
    "ingest.gateway.{b}.throughput", "ingest.gateway.{b}.p50", "ingest.gateway.{b}.p99",
    "ingest.gateway.{b}.server_cpu", "ingest.gateway.{b}.cpu_per_request",
    "ingest.gateway.{b}.rss_start", "ingest.gateway.{b}.rss_end",
    "ingest.ratio.gateway_{b}/bare_plain", "ingest.ratio.gateway_{b}/bare_tuned",
    "ingest.gateway-oscore.{b}.throughput", "ingest.gateway-oscore.{b}.p99", "ingest.gateway-oscore.{b}.cpu_per_request",
    "ingest.ratio.gateway_oscore_{b}/gateway_{b}",
    "ingest.half_load.{b}.throughput", "ingest.half_load.{b}.p50", "ingest.half_load.{b}.p99",
    "ingest.two_gateways.{b}.throughput", "ingest.two_gateways.{b}.p99", "ingest.two_gateways.{b}/one",
    "ingest.two_gateways.{b}/bare_plain", "ingest.{b}.answered_2.04_not_stored",
    "current.{b}.median", "current.{b}.10x_history.median", "current.{b}.10x_history/base",
    "current.{b}.snapshot_refresh", "current.{b}.10x_history/base.snapshot_refresh",
    "current.{b}.detail.median",
    "reports.{b}.one_lot_year_csv", "reports.{b}.all_lots_month_csv", "reports.{b}.all_lots_month_csv.first_run",
    "reports.{b}.year_xlsx", "reports.{b}.year_xlsx.peak_rss_growth",
    "rollup.{b}.hour_3", "rollup.{b}.hour_24", "rollup.{b}.hour_24/hour_3",
    "datasets.{b}.consistency_differences",
    "compaction.{b}.bytes_per_bay_day.before", "compaction.{b}.bytes_per_bay_day.after",
    "compaction.{b}.bytes_per_bay_day.after/before", "compaction.{b}.readings_per_second",
    "compaction.{b}.report_differences", "compaction.{b}.month_csv.after/before",
    "compaction.{b}.month_xlsx.after/before", "compaction.{b}.rollup_recompute.after/before",
]
ONCE = [
    "ingest.bare.throughput", "ingest.bare.p50", "ingest.bare.p99", "ingest.bare.server_cpu",
    "ingest.bare.rss_start", "ingest.bare.rss_end", "ingest.bare-tuned.throughput", "ingest.ratio.bare_tuned/bare_plain",
    # the soak runs on the first database of the run
    "ingest.soak.{first}.p99", "ingest.soak.{first}.rss_start", "ingest.soak.{first}.rss_end",
    "ingest.soak.{first}.rss_growth",
]
# `parking-gateway --processes N` on one port: PostgreSQL only (SQLite takes one writer at a time);
# the smoke run measures N = 1 and 2.
POSTGRESQL_ONLY = [
    "ingest.processes_1.postgresql.throughput", "ingest.processes_1.postgresql.p99",
    "ingest.processes_1.postgresql.server_cpu", "ingest.processes_1.postgresql.cpu_per_request",
    "ingest.processes_1.postgresql.database_cpu", "ingest.processes_2.postgresql.throughput",
    "ingest.processes_2.postgresql.p99", "ingest.processes_2.postgresql.server_cpu",
    "ingest.processes_2.postgresql.busiest_share", "ingest.processes_2.postgresql/one",
]
LINE = re.compile(r"^(\S+)\s+(-?[\d,.]+|-|nan)\s.*\b(PASS|MISS|info|n/a)\b")


# One smoke run per group, so that pytest-xdist spreads them (each run is its own process with its
# own data directory and database names): (benchmarks, --db). "datasets" figures come with the
# current-state run.
GROUPS = {
    "ingest-sqlite": (["ingest"], "sqlite"), "ingest-postgresql": (["ingest"], "postgresql"),
    "current": (["current"], "both"), "reports+rollup": (["reports", "rollup"], "both"),
    "abuse+forecast": (["abuse", "forecast"], "both"), "compaction": (["compaction"], "both"),
}
FIGURE_OWNER = {"datasets": "current"}


def test_the_groups_cover_every_benchmark_on_both_databases():
    from bench.__main__ import BENCHMARKS

    covered = {(b, db) for only, choice in GROUPS.values() for b in only
               for db in (("sqlite", "postgresql") if choice == "both" else (choice,))}
    assert covered == {(b, db) for b in BENCHMARKS for db in ("sqlite", "postgresql")}


@pytest.mark.parametrize("group", GROUPS)
def test_smoke_run_prints_every_figure(group):
    only, choice = GROUPS[group]
    run = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--only", ",".join(only), "--db", choice],
                         cwd=ROOT, capture_output=True, text=True,
                         timeout=1500)  # server processes start one after the other: slow when busy
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    backends = re.search(r"databases: ([\w, ]+);", out).group(1).split(", ")  # SQLite only without PostgreSQL
    table = out[out.rindex("\nfigure "):]  # the final table, after the lines printed as measured
    printed = {m.group(1) for m in map(LINE.match, table.splitlines()) if m}
    every = [name.format(first=backends[0]) for name in ONCE] + [
        name.format(b=b) for b in backends for name in PER_BACKEND] + (
        POSTGRESQL_ONLY if "postgresql" in backends else [])
    expected = [name for name in every if FIGURE_OWNER.get(name.split(".")[0], name.split(".")[0]) in only]
    missing = [name for name in expected if name not in printed]
    assert not missing, f"figures not printed: {missing}\n{table}"
    assert printed, table
    for line in table.splitlines():
        if LINE.match(line) and (" <= " in line or " >= " in line):  # a figure with a target has a verdict
            assert re.search(r"\b(PASS|MISS)\b", line), line
    assert re.search(r"\d+ PASS, \d+ MISS", table)


def test_sensor_sockets_keep_each_bay_on_one_socket_with_distinct_message_ids():
    """The load generator's `--sensor-sockets`: a bay's readings always leave from one socket (as a
    sensor keeps its source port), and no message id repeats on a socket; ids go on from
    `--mid-base` (a later run on a reused port repeats none of an earlier run's)."""
    import json
    import struct

    from bench.loadgen import build

    bays = [f"B{i:03d}" for i in range(50)]
    sockets_of: dict[str, set[int]] = {}
    mids_of: dict[int, list[int]] = {}
    for sock, _, datagram in build(1_000, bays, serial=7, t0=0.0, sockets=8, by_bay=True, mid_base=65_500):
        bay = json.loads(datagram.rsplit(b"\xff", 1)[1])["bay"]
        sockets_of.setdefault(bay, set()).add(sock)
        mids_of.setdefault(sock, []).append(struct.unpack_from("!H", datagram, 2)[0])
    assert all(len(s) == 1 for s in sockets_of.values()) and len(sockets_of) == 50
    assert len(mids_of) == 8
    assert all(len(set(mids)) == len(mids) for mids in mids_of.values())
    assert all(mids[0] == 65_500 and mids[-1] == (65_500 + len(mids) - 1) & 0xFFFF for mids in mids_of.values())
