"""Current state: GET /api/lots on a 1,000-lot, 100,000-bay city with a year of history, and the
same city with ten times the history (ten times the reading rate over the same year).

Both databases are open side by side and the requests alternate between them, so drift in the
machine's load hits both alike. Timed through Flask's test client (the whole WSGI stack, the JSON
body produced and read); the median over `requests` requests after `warmup`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from . import datasets
from .datasets import CitySpec
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
    requests: int = 40


FULL = CurrentConfig()
SMOKE = CurrentConfig(SMOKE_CITY, SMOKE_CITY_10X, warmup=1, requests=3)


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
        base, tenfold = median_ms(samples[0]), median_ms(samples[1])
        for meta, label in zip(metas, ("", "10x_history.")):
            log(f"  {backend} {label or 'base.'}: {meta['readings']:,} readings, {meta['hourly']:,} hourly rows, "
                f"{meta['size_bytes'] / 2**20:,.0f} MiB")
        report.add(f"current.{backend}.median", base, "ms", "<=", 20,
                   note=f"{cfg.city.lots:,} lots, {cfg.city.bays:,} bays, {metas[0]['readings']:,} readings")
        report.add(f"current.{backend}.10x_history.median", tenfold, "ms", "<=", 20,
                   note=f"{metas[1]['readings']:,} readings")
        report.add(f"current.{backend}.10x_history/base", tenfold / base, "", "<=", 1.1,
                   note="'no slower with ten times the history'")
        if base > 20:
            log(f"  where one GET /api/lots spends its time ({backend}):\n" + profile_get(clients[0], url))
        for app in apps:
            with app.app_context():
                from parking.extensions import db

                db.session.remove()
                db.engine.dispose()
