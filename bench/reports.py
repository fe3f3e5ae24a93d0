"""Reports: the hourly utilization CSV (GET /api/reports/utilization.csv) for one lot over a year,
and for every lot of the 1,000-lot city over a month, through Flask's test client with the
streamed body read to the end. The range ends at the local midnight after the data set's newest
reading, so its last hours are unfinished or still marked dirty: computed on the fly, as in use.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from . import datasets
from .current_state import CITY, SMOKE_CITY
from .datasets import CitySpec
from .httpbench import median_ms, profile_get, timed_get
from .report import Report


@dataclass
class ReportsConfig:
    city: CitySpec = CITY
    year_runs: int = 5
    month_runs: int = 3
    year_days: int = 365
    month_days: int = 30


FULL = ReportsConfig()
SMOKE = ReportsConfig(SMOKE_CITY, year_runs=1, month_runs=1, year_days=3, month_days=2)


def run(report: Report, backends: list[str], cfg: ReportsConfig, log=print, use_cache: bool = True) -> None:
    for backend in backends:
        meta = datasets.ensure(cfg.city, backend, use_cache=use_cache)
        app = datasets.make_app(datasets.url_for(backend, meta["key"]))
        client = app.test_client()
        last_day = dt.datetime.fromtimestamp(meta["end"], ZoneInfo(datasets.TIMEZONE)).date()
        to = last_day + dt.timedelta(days=1)
        year = f"/api/reports/utilization.csv?lot={datasets.lot_id(0)}&from={to - dt.timedelta(days=cfg.year_days)}&to={to}"
        month = f"/api/reports/utilization.csv?from={to - dt.timedelta(days=cfg.month_days)}&to={to}"
        timed_get(client, year)  # warm-up
        rows = client.get(year).get_data().count(b"\n") - 1
        year_ms = median_ms([timed_get(client, year) for _ in range(cfg.year_runs)])
        report.add(f"reports.{backend}.one_lot_year_csv", year_ms / 1000, "s", "<=", 0.5,
                   note=f"{rows:,} rows, {cfg.city.bays_per_lot} bays")
        if year_ms > 500:
            log(f"  where the one-lot CSV spends its time ({backend}):\n" + profile_get(client, year))
        month_rows = client.get(month).get_data().count(b"\n") - 1
        month_ms = median_ms([timed_get(client, month) for _ in range(cfg.month_runs)])
        report.add(f"reports.{backend}.all_lots_month_csv", month_ms / 1000, "s", "<=", 2.0,
                   note=f"{month_rows:,} rows, {cfg.city.lots:,} lots")
        report.add(f"reports.{backend}.all_lots_month_csv.per_row", month_ms * 1000 / max(month_rows, 1), "µs")
        if month_ms > 2000:
            log(f"  where the all-lots CSV spends its time ({backend}):\n" + profile_get(client, month, top=15))
        with app.app_context():
            from parking.extensions import db

            db.session.remove()
            db.engine.dispose()
