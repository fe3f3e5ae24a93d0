"""Current state: GET /api/lots on a 1,000-lot, 100,000-bay city with a year of history, and the
same city with ten times the history (ten times the reading rate over the same year); and
GET /api/lots/<id> (one lot with its 100 bays) on the one-year city.

Both databases are open side by side and the requests alternate between them, so drift in the
machine's load hits both alike. Timed through Flask's test client (the whole WSGI stack, the JSON
body produced and read); the median over `requests` requests after `warmup`.

The list is served from a snapshot refreshed in the background every `LOTS_SNAPSHOT_SECONDS`
(parking/lot_list.py), so the requests are paced (`pace` apart) over several refresh intervals:
the refreshes run during the measurement and their cost shows in the requests' latency (p95,
max). The refresh itself (counting every bay, building every feature) is timed on its own: it
bounds how old the counts can be. The lot detail is kept with the snapshot: its requests go to
lots spread over the whole city, paced the same way, each lot asked twice in a row, so the first
request of a lot after a refresh (which reads and encodes that lot's bays) and a repeat (served
from the snapshot) are timed apart.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

from . import datasets
from .datasets import CitySpec, lot_id
from .httpbench import median_ms, profile_get, timed_get
from .report import Report

# A reading every 20 days per bay (base) and every 2 days (ten times): see docs/benchmarks.md
# for why not a live-like rate (it would be billions of rows).
CITY = CitySpec("city", 1000, 100, 8760, 20 * 86400, 0)
CITY_10X = replace(CITY, name="city10x", change_every=2 * 86400)
SMOKE_CITY = CitySpec("smokecity", 4, 5, 72, 6 * 3600, 0)
SMOKE_CITY_10X = replace(SMOKE_CITY, name="smokecity10x", change_every=6 * 360)


@dataclass
class CurrentConfig:
    city: CitySpec = CITY
    city_10x: CitySpec = CITY_10X
    warmup: int = 5
    requests: int = 150
    pace: float = 0.04  # seconds between two requests to one database: 6 s, three refresh intervals
    refreshes: int = 5


FULL = CurrentConfig()
SMOKE = CurrentConfig(SMOKE_CITY, SMOKE_CITY_10X, warmup=1, requests=3, pace=0.0, refreshes=1)


def run(report: Report, backends: list[str], cfg: CurrentConfig, log=print, use_cache: bool = True) -> None:
    url = "/api/lots"
    for backend in backends:
        metas = [datasets.ensure(spec, backend, use_cache=use_cache) for spec in (cfg.city, cfg.city_10x)]
        apps = [datasets.make_app(datasets.url_for(backend, m["key"])) for m in metas]
        clients = [app.test_client() for app in apps]
        for client in clients:
            for _ in range(cfg.warmup):
                timed_get(client, url)
        samples: list[list[float]] = [[], []]
        for _ in range(cfg.requests):
            for i, client in enumerate(clients):
                samples[i].append(timed_get(client, url))
            time.sleep(cfg.pace)
        detail, again = _detail_samples(clients[0], cfg)
        refresh = [_refresh_seconds(app, cfg.refreshes) for app in apps]
        base, tenfold = median_ms(samples[0]), median_ms(samples[1])
        for meta, label in zip(metas, ("", "10x_history.")):
            log(f"  {backend} {label or 'base.'}: {meta['readings']:,} readings, {meta['hourly']:,} hourly rows, "
                f"{meta['size_bytes'] / 2**20:,.0f} MiB")
        interval = apps[0].config["LOTS_SNAPSHOT_SECONDS"]
        report.add(f"current.{backend}.median", base, "ms", "<=", 20,
                   note=f"{cfg.city.lots:,} lots, {cfg.city.bays:,} bays, {metas[0]['readings']:,} readings; "
                        f"snapshot every {interval} s")
        report.add(f"current.{backend}.p95", _quantile_ms(samples[0], 0.95), "ms")
        report.add(f"current.{backend}.max", max(samples[0]) * 1000, "ms", note="a request that found no snapshot or waited for the GIL")
        report.add(f"current.{backend}.10x_history.median", tenfold, "ms", "<=", 20,
                   note=f"{metas[1]['readings']:,} readings")
        report.add(f"current.{backend}.10x_history/base", tenfold / base, "", "<=", 1.1,
                   note="'no slower with ten times the history'")
        report.add(f"current.{backend}.detail.median", median_ms(detail), "ms", "<=", 20,
                   note=f"GET /api/lots/<id>, {cfg.city.bays_per_lot} bays, lots spread over the city")
        report.add(f"current.{backend}.detail.p95", _quantile_ms(detail, 0.95), "ms")
        report.add(f"current.{backend}.detail.again.median", median_ms(again), "ms",
                   note="the same lot once more: from the snapshot")
        report.add(f"current.{backend}.snapshot_refresh", refresh[0] * 1000, "ms",
                   note=f"counting every bay in the background; counts are at most {interval} s + this old")
        report.add(f"current.{backend}.10x_history.snapshot_refresh", refresh[1] * 1000, "ms")
        report.add(f"current.{backend}.10x_history/base.snapshot_refresh", refresh[1] / refresh[0], "", "<=", 1.1)
        if base > 20:
            log(f"  where one GET /api/lots spends its time ({backend}):\n" + profile_get(clients[0], url))
        if refresh[0] > 0.5:
            log(f"  where a snapshot refresh spends its time ({backend}):\n" + _profile_refresh(apps[0]))
        for app in apps:
            with app.app_context():
                from parking.extensions import db

                db.session.remove()
                db.engine.dispose()


def _detail_samples(client, cfg: CurrentConfig) -> tuple[list[float], list[float]]:
    """Seconds of GET /api/lots/<id> for `requests` lots spread over the city (a prime stride),
    each asked twice: (first requests, repeats)."""
    first, again = [], []
    for i in range(cfg.warmup + cfg.requests):
        url = f"/api/lots/{lot_id(i * 7919 % cfg.city.lots)}"
        samples = (timed_get(client, url), timed_get(client, url))
        if i >= cfg.warmup:
            first.append(samples[0])
            again.append(samples[1])
        time.sleep(cfg.pace)
    return first, again


def _refresh_seconds(app, times: int) -> float:
    """Median seconds of taking a snapshot (what the background refresh does)."""
    from parking.lot_list import take_snapshot

    samples = []
    with app.app_context():
        for _ in range(times):
            started = time.perf_counter()
            take_snapshot(float(app.config["STALE_AFTER"]))
            samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _profile_refresh(app) -> str:
    """cProfile of one snapshot refresh, top functions."""
    import cProfile
    import io
    import pstats

    from parking.lot_list import take_snapshot

    profile = cProfile.Profile()
    with app.app_context():
        profile.runcall(take_snapshot, float(app.config["STALE_AFTER"]))
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(12)
    return out.getvalue()


def _quantile_ms(samples: list[float], q: float) -> float:
    """The q-quantile in milliseconds (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
