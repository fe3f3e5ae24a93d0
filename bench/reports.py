"""Reports: the hourly utilization CSV (GET /api/reports/utilization.csv) for one lot over a year,
and for every lot over a month, through Flask's test client with the streamed body read to the end;
the XLSX workbook (GET /api/reports/utilization.xlsx) of every lot of a city the size of the
bundled sample (13 lots) over a year, its time and how much it raised the process's peak RSS.

Measured on the 1,000-lot city of the current-state benchmark and, for scale, on the 100-lot
(10,000-bay) city of the rollup benchmark. The range ends at the local midnight after the data
set's newest reading, so its last hours are unfinished or still marked dirty and are computed on
the fly, as in use.
"""
from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from . import datasets
from .current_state import CITY, SMOKE_CITY
from .datasets import CitySpec
from .httpbench import peak_rss_growth, profile_get, timed_get_body
from .report import Report


# The bundled sample city's size (parking/data/regensburg.geojson: 13 lots, 670 bays) with a year
# of history, a change per bay and day.
SAMPLE_CITY = CitySpec("samplecity", 13, 52, 8760, 86400, 0)


@dataclass
class ReportsConfig:
    city: CitySpec = CITY
    year_runs: int = 5
    month_runs: int = 3  # after a first, cold run that is reported on its own
    year_days: int = 365
    month_days: int = 30
    workbook_city: CitySpec = SAMPLE_CITY
    workbook_runs: int = 3


FULL = ReportsConfig()
SMOKE = ReportsConfig(SMOKE_CITY, year_runs=1, month_runs=1, year_days=3, month_days=2,
                      workbook_city=SMOKE_CITY, workbook_runs=1)


def _ranges(meta: dict, cfg: ReportsConfig, lot: str) -> tuple[str, str]:
    last_day = dt.datetime.fromtimestamp(meta["end"], ZoneInfo(datasets.TIMEZONE)).date()
    to = last_day + dt.timedelta(days=1)
    year = f"/api/reports/utilization.csv?lot={lot}&from={to - dt.timedelta(days=cfg.year_days)}&to={to}"
    month = f"/api/reports/utilization.csv?from={to - dt.timedelta(days=cfg.month_days)}&to={to}"
    return year, month


def measure_city(report: Report, backend: str, meta: dict, spec: CitySpec, cfg: ReportsConfig, label: str,
                 log, one_lot: bool = True) -> None:
    app = datasets.make_app(datasets.url_for(backend, meta["key"]))
    client = app.test_client()
    year, month = _ranges(meta, cfg, datasets.lot_id(0))
    if one_lot:
        timed_get_body(client, year)  # warm-up
        runs = [timed_get_body(client, year) for _ in range(cfg.year_runs)]
        seconds = statistics.median(r[0] for r in runs)
        rows = runs[0][1].count(b"\n") - 1
        report.add(f"reports.{backend}.{label}one_lot_year_csv", seconds, "s", "<=", 0.5,
                   note=f"{rows:,} rows, {spec.bays_per_lot} bays")
        if seconds > 0.5:
            log(f"  where the one-lot CSV spends its time ({backend}):\n" + profile_get(client, year))
    else:
        timed_get_body(client, month.replace("utilization.csv?", f"utilization.csv?lot={datasets.lot_id(0)}&"))
    # The first all-lots request reads a month of every lot's aggregates from a cold database
    # cache: reported on its own; the figure with the target is the median of the runs after it.
    first = timed_get_body(client, month)[0]
    report.add(f"reports.{backend}.{label}all_lots_month_csv.first_run", first, "s",
               note="cold database cache")
    runs = [timed_get_body(client, month) for _ in range(cfg.month_runs)]
    seconds = statistics.median(r[0] for r in runs)
    rows = runs[0][1].count(b"\n") - 1
    report.add(f"reports.{backend}.{label}all_lots_month_csv", seconds, "s", "<=", 2.0,
               note=f"{rows:,} rows, {spec.lots:,} lots")
    report.add(f"reports.{backend}.{label}all_lots_month_csv.per_row", seconds * 1e6 / max(rows, 1), "µs")
    if seconds > 2.0 and not one_lot:  # the smaller city: profiling the 1,000-lot report would take minutes
        log(f"  where the all-lots CSV spends its time ({backend}, {spec.lots} lots):\n" + profile_get(client, month, top=18))
    with app.app_context():
        from parking.extensions import db

        db.session.remove()
        db.engine.dispose()


def measure_workbook(report: Report, backend: str, meta: dict, cfg: ReportsConfig) -> None:
    """The year-long workbook of every lot: median time of the runs, and the peak RSS it added."""
    app = datasets.make_app(datasets.url_for(backend, meta["key"]))
    client = app.test_client()
    last_day = dt.datetime.fromtimestamp(meta["end"], ZoneInfo(datasets.TIMEZONE)).date() + dt.timedelta(days=1)
    url = f"/api/reports/utilization.xlsx?from={last_day - dt.timedelta(days=cfg.year_days)}&to={last_day}"
    growth, (_, body) = peak_rss_growth(lambda: timed_get_body(client, url))  # the first run: memory
    runs = [timed_get_body(client, url)[0] for _ in range(cfg.workbook_runs)]
    lots = cfg.workbook_city.lots
    report.add(f"reports.{backend}.year_xlsx", statistics.median(runs), "s", "<=", 5.0,
               note=f"{lots} lots × {cfg.year_days} days, {len(body) / 2**20:.1f} MiB")
    report.add(f"reports.{backend}.year_xlsx.peak_rss_growth", growth / 2**20, "MiB", "<=", 50.0,
               note="first request, over the process's RSS before it")
    with app.app_context():
        from parking.extensions import db

        db.session.remove()
        db.engine.dispose()


def run(report: Report, backends: list[str], cfg: ReportsConfig, log=print, use_cache: bool = True,
        small_city: CitySpec | None = None) -> None:
    for backend in backends:
        meta = datasets.ensure(cfg.city, backend, use_cache=use_cache)
        measure_city(report, backend, meta, cfg.city, cfg, "", log)
        workbook_meta = meta if cfg.workbook_city == cfg.city else datasets.ensure(
            cfg.workbook_city, backend, use_cache=use_cache)
        measure_workbook(report, backend, workbook_meta, cfg)
        if small_city is not None:
            from .rollup import history_meta

            small = history_meta(small_city, backend, use_cache)
            measure_city(report, backend, small, small_city, cfg, f"{small_city.lots}_lots.", log, one_lot=False)
