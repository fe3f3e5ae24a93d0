"""Ingest: the real gateway (durable commits) against a bare aiocoap server, side by side.

Every server runs as its own process on the same UDP port, one at a time; the load generator
(`bench.loadgen`) is a third process. One measured round per server kind, alternating, repeated
`rounds` times; the medians are reported:

  (a) the real gateway (`python -m gateway.server`) on SQLite and on PostgreSQL, each on a fresh
      database with a 10,000-bay city; every 2.04 means the reading is committed;
  (b) a bare aiocoap server answering 2.04 at once (`bench.bare_server`): the library's ceiling;
  (b') the same bare server with the gateway's own transport settings (`--tuned`).

Then: each gateway at half the ceiling's rate (latency under normal load), one long run at half
load sampling the gateway's RSS (is memory flat?), two gateway processes sharing a database (each
on its own port), and `parking-gateway --processes N` (N = 1, 2, 4) on PostgreSQL,
N gateways on one port (`bench.ingest_processes`).

Server CPU and RSS count the server's whole process tree (the gateway and its writer process, and
any other process it started): CPU from /proc/<pid>/stat (user + system, all threads) and RSS from
/proc/<pid>/status of each process, summed, at the start and the end of each measured run (a
process that ends mid-run takes its CPU with it: the gateway's writer lives as long as the gateway).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import datasets
from .report import Report

ROOT = datasets.ROOT
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class IngestConfig:
    lots: int = 100
    bays_per_lot: int = 100
    rounds: int = 3
    round_seconds: float = 15.0
    warmup_seconds: float = 2.0
    window: int = 200
    half_seconds: float = 30.0
    soak_seconds: float = 600.0
    soak_sample: float = 10.0
    two_seconds: float = 15.0
    processes: tuple[int, ...] = (1, 2, 4)  # `parking-gateway --processes N` on one port, PostgreSQL
    processes_seconds: float = 15.0
    sensor_sockets: int = 256  # source ports of those runs, one per group of bays (~39 bays each)
    timeout: float = 5.0


FULL = IngestConfig()
SMOKE = IngestConfig(lots=2, bays_per_lot=10, rounds=1, round_seconds=0.5, warmup_seconds=0.1, window=16,
                     half_seconds=0.5, soak_seconds=1.0, soak_sample=0.25, two_seconds=0.5, processes=(1, 2),
                     processes_seconds=0.5, sensor_sockets=8, timeout=2.0)


# ---------------------------------------------------------------- processes
def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_tree(pid: int) -> list[int]:
    """The process and all its descendants (from /proc/<pid>/task/*/children), parents first."""
    tree, index = [pid], 0
    while index < len(tree):
        for task in Path(f"/proc/{tree[index]}/task").glob("*/children"):
            try:
                tree += [int(child) for child in task.read_text().split()]
            except OSError:  # the thread or process ended meanwhile
                pass
        index += 1
    return tree


def _one_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _one_status(pid: int, keys: tuple[str, ...]) -> dict[str, float]:
    """Fields of /proc/<pid>/status in MiB ({} if the process has ended)."""
    values = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            values[key] = int(value.split()[0]) / 1024
    return values


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (all their threads)."""
    return sum(_one_cpu(p) for p in proc_tree(pid))



def proc_rss_parts(pid: int) -> str:
    """RSS of the process tree split into anonymous memory (heap), file mappings and shared memory,
    MiB, and per process."""
    tree = proc_tree(pid)
    parts: dict[str, float] = {}
    for p in tree:
        for key, value in _one_status(p, ("RssAnon", "RssFile", "RssShmem")).items():
            parts[key[3:].lower()] = parts.get(key[3:].lower(), 0.0) + value
    each = " + ".join(f"{_one_status(p, ('VmRSS',)).get('VmRSS', 0.0):.1f}" for p in tree)
    return ", ".join(f"{k} {v:.1f}" for k, v in parts.items()) + f"; per process {each}"


def proc_rss_mib(pid: int) -> float:
    """RSS of a process and its descendants, summed (shared library pages count once per process)."""
    tree = proc_tree(pid)
    values = [_one_status(p, ("VmRSS",)).get("VmRSS") for p in tree]
    found = [v for v in values if v is not None]
    return sum(found) if found else float("nan")


class Server:
    """A server process on 127.0.0.1:port, started and stopped by us (by its pid only)."""

    def __init__(self, kind: str, port: int, log_path: Path, url: str | None = None, processes: int | None = None):
        self.kind, self.port, self.log_path = kind, port, log_path
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PARKING_COAP_HOST": "127.0.0.1",
               "PARKING_SENSOR_AUTH": "oscore" if kind == "gateway-oscore" else "none"}
        if kind in ("gateway", "gateway-oscore"):
            env["DATABASE_URL"] = url
            cmd = [sys.executable, "-m", "gateway.server", "--port", str(port)]
            self.ready = "CoAP gateway on"
            if processes is not None:  # `parking-gateway --processes N`: a parent and N gateways
                cmd += ["--processes", str(processes)]
                if processes > 1:
                    self.ready = "gateway processes serve"
        else:
            cmd = [sys.executable, "-m", "bench.bare_server", "--port", str(port)]
            if kind == "bare-tuned":
                cmd.append("--tuned")
            self.ready = "bare CoAP server on"
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.time() + 120  # two interpreters importing Flask, SQLAlchemy, aiocoap: slow on a busy machine
        while time.time() < deadline and self.proc.poll() is None:
            if self.ready in log_path.read_text():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{kind} did not start: {log_path.read_text()[-1500:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def sample(self) -> tuple[float, float, float]:
        """(wall clock, CPU seconds, RSS MiB) of the server's process tree."""
        return time.perf_counter(), proc_cpu(self.pid), proc_rss_mib(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 5) -> str:
        text = self.log_path.read_text().splitlines()
        return "\n".join(text[-lines:])


class Load:
    """Runs bench.loadgen as a child process; numbers the requests across the whole run."""

    def __init__(self, bays_file: Path, timeout: float, keys_files: dict[str, Path] | None = None):
        self.bays_file = bays_file
        # Per database URL, a file {bay: OSCORE settings}: `protected` runs protect every request
        # with the credentials of the database the gateway checks them against.
        self.keys_files = keys_files or {}
        self.bays = len(bays_file.read_text().split())
        self.timeout = timeout
        self.serial = 0
        self.mid_base = 0  # each run's message ids go on from the last run's (bench.loadgen's doc says why)
        self.ok: dict[str, int] = {}  # 2.04 answers per database URL, warm-ups included
        self.t0 = time.time() - 3600  # every ts stays in the past, and distinct per request

    def _cmd(self, ports, count, seconds, window, rate, keys=None, sensor_sockets=None):
        cmd = [sys.executable, "-m", "bench.loadgen", "--bays-file", str(self.bays_file), "--count", str(count),
               "--seconds", str(seconds), "--window", str(window), "--timeout", str(self.timeout),
               "--serial", str(self.serial), "--t0", f"{self.t0:.4f}", "--mid-base", str(self.mid_base)]
        if keys is not None:
            cmd += ["--oscore", str(keys)]
        for port in ports:
            cmd += ["--port", str(port)]
        if rate:
            cmd += ["--rate", f"{rate:.1f}"]
        if sensor_sockets:
            cmd += ["--sensor-sockets", str(sensor_sockets)]
        self.serial += count
        return cmd

    def start(self, ports, seconds, window, rate=None, count=None, keys=None, sensor_sockets=None) -> subprocess.Popen:
        # Enough requests for the time (a Python server answers a few thousand a second; the run
        # also stops at this count), all encoded (and protected) before the clock starts.
        count = count or int(seconds * (rate * 1.05 if rate else 6_000)) + 10
        return subprocess.Popen(self._cmd(ports, count, seconds, window, rate, keys, sensor_sockets), cwd=ROOT,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})

    def finish(self, proc: subprocess.Popen, seconds: float) -> dict:
        try:
            out, err = proc.communicate(timeout=seconds + self.timeout + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed: {err[-1500:]}")
        result = json.loads(out)
        self.mid_base = result["mid_next"]
        return result

    def run(self, ports, seconds, window, rate=None, url=None, count=None, protected=False,
            sensor_sockets=None) -> dict:
        keys = self.keys_files[url] if protected else None
        proc = self.start(ports, seconds, window, rate, count, keys, sensor_sockets)
        return self.count(url, self.finish(proc, seconds))

    def warm_up(self, ports, cfg: IngestConfig, url=None, protected=False, sensor_sockets=None) -> None:
        """One reading for every bay of the city (a gateway's bay directory, and its sensor keys,
        as warm as after a day in service), then `warmup_seconds` of load."""
        if not cfg.warmup_seconds:
            return
        self.run(ports, 120, cfg.window, url=url, count=self.bays, protected=protected, sensor_sockets=sensor_sockets)
        self.run(ports, cfg.warmup_seconds, cfg.window, url=url, protected=protected, sensor_sockets=sensor_sockets)

    def count(self, url: str | None, result: dict) -> dict:
        if url is not None:
            self.ok[url] = self.ok.get(url, 0) + result["ok"]
        return result


# ---------------------------------------------------------------- the database
def prepare_database(backend: str, cfg: IngestConfig, workdir: Path) -> tuple[str, list[str], dict]:
    """A fresh database with the ingest city (lots, bays, no history) and one sensor credential
    per bay; its URL, bay ids and {bay: the sensor's OSCORE settings}."""
    from parking.cli import init_db
    from parking.credentials import add_many
    from parking.extensions import db
    from parking.lots import import_lots

    spec = datasets.CitySpec("ingest", cfg.lots, cfg.bays_per_lot, 0, 3600, 0)
    if backend == "sqlite":
        path = workdir / "ingest.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    else:
        datasets.pg_create(datasets.PG_PREFIX)
        url = datasets.pg_url(datasets.PG_PREFIX)
    app = datasets.make_app(url)
    features = datasets.city_features(spec)
    bays = [b for f in features["features"] for b in f["properties"]["bays"]]
    with app.app_context():
        init_db()
        import_lots(features, datasets.TIMEZONE)
        made = add_many({f"sensor-{bay}": [bay] for bay in bays})
        db.session.remove()
        db.engine.dispose()
    return url, bays, {bay: made[f"sensor-{bay}"]["settings"] for bay in bays}


def stored_readings(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM readings")).scalar()
    engine.dispose()
    return int(n)


# ---------------------------------------------------------------- measurements
def measure(kind: str, port: int, load: Load, cfg: IngestConfig, workdir: Path, url: str | None = None,
            rate: float | None = None, seconds: float | None = None, label: str = "") -> dict:
    """Start a server, warm it up, run one measured load, stop it; the figures of that run."""
    seconds = seconds or cfg.round_seconds
    protected = kind == "gateway-oscore"
    server = Server(kind, port, workdir / f"{kind}-{label or 'run'}.log", url)
    try:
        load.warm_up([port], cfg, url, protected)
        t0, cpu0, rss0 = server.sample()
        result = load.run([port], seconds, cfg.window, rate, url, protected=protected)
        t1, cpu1, rss1 = server.sample()
    finally:
        server.stop()
    result.update(kind=kind, cpu_cores=(cpu1 - cpu0) / (t1 - t0), rss_start=rss0, rss_end=rss1,
                  cpu_us_per_request=(cpu1 - cpu0) / max(result["ok"], 1) * 1e6)
    return result


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def run(report: Report, backends: list[str], cfg: IngestConfig, workdir: Path, log=print) -> dict:
    """Every ingest figure into `report`; returns the raw runs."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    urls, bays, keys = {}, [], {}
    for backend in backends:
        urls[backend], bays, keys[backend] = prepare_database(backend, cfg, workdir)
    bays_file = workdir / "bays.txt"
    bays_file.write_text("\n".join(bays))
    # Protected runs against each database with that database's credentials: one file per backend.
    keys_files = {}
    for backend in backends:
        path = keys_files[urls[backend]] = workdir / f"sensor-keys-{backend}.json"
        path.write_text(json.dumps(keys[backend]))
        path.chmod(0o600)
    load = Load(bays_file, cfg.timeout, keys_files)
    kinds = ([f"gateway/{b}" for b in backends] + [f"gateway-oscore/{b}" for b in backends]
             + ["bare", "bare-tuned"])
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(cfg.rounds):
        for kind in kinds:
            server_kind, _, backend = kind.partition("/")
            result = measure(server_kind, port, load, cfg, workdir, urls.get(backend), label=f"{backend or kind}-{r}")
            runs[kind].append(result)
            log(f"  round {r + 1}/{cfg.rounds} {kind:<20} {result['rps']:>7.0f} req/s  p50 {result['p50_ms']} ms  "
                f"p99 {result['p99_ms']} ms  CPU {result['cpu_cores']:.2f} cores (load generator "
                f"{result['client_cpu']:.2f})  separate answers {result['separate']}  codes {result['codes']}  "
                f"timeouts {result['timeouts']}")

    bare_rps = _median(runs["bare"], "rps")
    for kind in kinds:
        rs = runs[kind]
        name = kind.replace("/", ".")
        report.add(f"ingest.{name}.throughput", _median(rs, "rps"), "req/s", note=f"median of {len(rs)}, window {cfg.window}")
        report.add(f"ingest.{name}.p50", _median(rs, "p50_ms"), "ms")
        report.add(f"ingest.{name}.p99", _median(rs, "p99_ms"), "ms")
        report.add(f"ingest.{name}.server_cpu", _median(rs, "cpu_cores"), "cores",
                   note=f"load generator {_median(rs, 'client_cpu'):.2f} cores")
        report.add(f"ingest.{name}.cpu_per_request", _median(rs, "cpu_us_per_request"), "µs")
        report.add(f"ingest.{name}.rss_start", _median(rs, "rss_start"), "MiB")
        report.add(f"ingest.{name}.rss_end", _median(rs, "rss_end"), "MiB")
        lost = sum(r["timeouts"] for r in rs)
        not_ok = sum(v for r in rs for k, v in r["codes"].items() if k != "2.04")
        if lost or not_ok:
            report.add(f"ingest.{name}.not_2.04", lost + not_ok, "req", note=f"timeouts {lost}, other answers {not_ok}")
    for backend in backends:
        # Against the plain bare server (aiocoap's defaults, the payload parsed as JSON, 2.04): the
        # comparison issue #15's outside check made; `/bare_tuned` below is the stricter one.
        report.add(f"ingest.ratio.gateway_{backend}/bare_plain", _median(runs[f"gateway/{backend}"], "rps") / bare_rps,
                   "", ">=", 0.9, note="bare_plain: bench.bare_server without --tuned")
    for backend in backends:  # what OSCORE costs: the protected gateway against the same one unprotected
        report.add(f"ingest.ratio.gateway_oscore_{backend}/gateway_{backend}",
                   _median(runs[f"gateway-oscore/{backend}"], "rps") / _median(runs[f"gateway/{backend}"], "rps"),
                   "", ">=", 0.7, note="every request OSCORE-protected with its sensor's own key")
    report.add("ingest.ratio.bare_tuned/bare_plain", _median(runs["bare-tuned"], "rps") / bare_rps, "",
               note="the gateway's transport settings alone")
    for backend in backends:  # the stricter comparison: the library with the gateway's own settings
        report.add(f"ingest.ratio.gateway_{backend}/bare_tuned",
                   _median(runs[f"gateway/{backend}"], "rps") / _median(runs["bare-tuned"], "rps"), "",
                   note="the gateway against the bare server with the same transport settings")

    half = bare_rps / 2

    def paced(backend: str, rate: float, name: str, label: str) -> dict:
        """One gateway run paced at `rate`, logged and kept in `runs`."""
        result = measure("gateway", port, load, cfg, workdir, urls[backend], rate=rate, seconds=cfg.half_seconds,
                         label=f"{backend}-{label}")
        runs[f"{name}/{backend}"] = [result]
        log(f"  {name} {backend}: offered {rate:.0f}/s, answered {result['rps']:.0f}/s, p50 {result['p50_ms']} ms, "
            f"p99 {result['p99_ms']} ms, codes {result['codes']}, timeouts {result['timeouts']}")
        return result

    for backend in backends:
        result = paced(backend, half, "half", "half")
        report.add(f"ingest.half_load.{backend}.throughput", result["rps"], "req/s", note=f"offered {half:.0f}/s")
        report.add(f"ingest.half_load.{backend}.p50", result["p50_ms"], "ms")
        report.add(f"ingest.half_load.{backend}.p99", result["p99_ms"], "ms", "<=", 50)
        # Context: the same at half of what this gateway itself sustains (if that is less).
        own = _median(runs[f"gateway/{backend}"], "rps") / 2
        if own < half:
            result = paced(backend, own, "half_own", "half-own")
            report.add(f"ingest.half_own_max.{backend}.throughput", result["rps"], "req/s", note=f"offered {own:.0f}/s")
            report.add(f"ingest.half_own_max.{backend}.p99", result["p99_ms"], "ms",
                       note="latency at half the gateway's own maximum")

    backend = backends[0]
    soak = soak_run(port, load, cfg, workdir, urls[backend], half, log)
    runs["soak"] = [soak]
    report.add(f"ingest.soak.{backend}.duration", soak["seconds"], "s", note=f"at {half:.0f} req/s offered")
    report.add(f"ingest.soak.{backend}.throughput", soak["rps"], "req/s")
    report.add(f"ingest.soak.{backend}.p99", soak["p99_ms"], "ms", "<=", 50)
    report.add(f"ingest.soak.{backend}.rss_start", soak["rss_start"], "MiB")
    report.add(f"ingest.soak.{backend}.rss_after_warmup", soak["rss_base"], "MiB",
               note=f"at {soak['base_at']:.0f} s, after the duplicate window filled")
    report.add(f"ingest.soak.{backend}.rss_end", soak["rss_end"], "MiB")
    report.add(f"ingest.soak.{backend}.rss_growth", soak["rss_growth_pct"], "%", "<=", 5.0,
               note="RSS end vs after warm-up ('flat')")

    for backend in backends:
        two = two_gateways(port, load, cfg, workdir, urls[backend], log)
        runs[f"two/{backend}"] = [two]
        single = _median(runs[f"gateway/{backend}"], "rps")
        report.add(f"ingest.two_gateways.{backend}.throughput", two["rps"], "req/s",
                   note=f"codes {two['codes']}, timeouts {two['timeouts']}")
        report.add(f"ingest.two_gateways.{backend}.p99", two["p99_ms"], "ms")
        report.add(f"ingest.two_gateways.{backend}/one", two["rps"] / single if single else None, "")
        report.add(f"ingest.two_gateways.{backend}/bare_plain", two["rps"] / bare_rps, "")

    if "postgresql" in backends:
        from .ingest_processes import processes_figures  # it builds on this module's Server and Load

        processes_figures(report, runs, port, load, cfg, workdir, urls["postgresql"], log)

    for backend in backends:
        # Every 2.04 is a committed reading: stored ≥ answered (a request whose answer was lost
        # or came after the timeout may be stored too).
        stored, answered = stored_readings(urls[backend]), load.ok.get(urls[backend], 0)
        report.add(f"ingest.{backend}.answered_2.04_not_stored", max(0, answered - stored), "req", "<=", 0,
                   note=f"{answered:,} answered 2.04, {stored:,} readings stored")
    return runs


def soak_run(port: int, load: Load, cfg: IngestConfig, workdir: Path, url: str, rate: float, log) -> dict:
    """The gateway at `rate` for soak_seconds; its RSS sampled every soak_sample seconds."""
    server = Server("gateway", port, workdir / "gateway-soak.log", url)
    samples = []
    try:
        t0, cpu0, rss0 = server.sample()
        proc = load.start([port], cfg.soak_seconds, cfg.window, rate)
        next_sample = time.perf_counter()
        while proc.poll() is None:
            now = time.perf_counter()
            if now >= next_sample:
                samples.append((now - t0, proc_rss_mib(server.pid)))
                if len(samples) % max(1, int(60 / cfg.soak_sample)) == 0:
                    log(f"  soak: {now - t0:.0f} s, RSS {samples[-1][1]:.1f} MiB ({proc_rss_parts(server.pid)})")
                next_sample += cfg.soak_sample
            time.sleep(min(0.2, cfg.soak_sample))
        result = load.count(url, load.finish(proc, cfg.soak_seconds))
        t1, cpu1, rss1 = server.sample()
    finally:
        server.stop()
    # Baseline once aiocoap's duplicate cache (67 s in the gateway) is full: a fifth of the run.
    base_at = cfg.soak_seconds / 5
    base = next((rss for t, rss in samples if t >= base_at), samples[0][1] if samples else rss0)
    result.update(rss_start=rss0, rss_base=base, base_at=base_at, rss_end=rss1,
                  rss_growth_pct=(rss1 - base) / base * 100, samples=samples, cpu_cores=(cpu1 - cpu0) / (t1 - t0))
    log(f"  soak: {result['rps']:.0f} req/s, p99 {result['p99_ms']} ms, RSS {rss0:.1f} → {base:.1f} (at {base_at:.0f} s) "
        f"→ {rss1:.1f} MiB")
    return result


def two_gateways(port: int, load: Load, cfg: IngestConfig, workdir: Path, url: str, log) -> dict:
    """Two gateway processes on one database, the load split over both."""
    port2 = free_udp_port()
    servers = [Server("gateway", port, workdir / "gateway-two-a.log", url),
               Server("gateway", port2, workdir / "gateway-two-b.log", url)]
    try:
        load.warm_up([port, port2], cfg, url)
        starts = [s.sample() for s in servers]
        result = load.run([port, port2], cfg.two_seconds, cfg.window, url=url)
        ends = [s.sample() for s in servers]
    finally:
        for s in servers:
            s.stop()
    result["cpu_cores"] = sum((e[1] - s[1]) / (e[0] - s[0]) for s, e in zip(starts, ends))
    log(f"  two gateways ({url.split(':')[0]}): {result['rps']:.0f} req/s, p99 {result['p99_ms']} ms, "
        f"CPU {result['cpu_cores']:.2f} cores, codes {result['codes']}, timeouts {result['timeouts']}")
    return result

