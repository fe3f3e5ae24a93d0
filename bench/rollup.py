"""Rollup: the cost of rolling up one new hour of a 10,000-bay city, early (hour 10) and late
(hour 2,000) in its history.

Two databases with the same city: one with 10 hours of history (generated fresh each run), one
with 2,000 hours (cached, and cloned so that each run starts from the same state). Then, `hours`
times: one new hour of readings at a live-like rate (every bay repeats its state every 10 minutes
and changes it every 2 hours on average, about 6.5 readings per bay and hour) is stored through
the real ingest path (`parking.ingest.ingest_bulk`: it marks the hours dirty), and
`parking.rollup.run_rollup` is timed for the end of that hour. The median is reported.
"""
from __future__ import annotations

import cProfile
import io
import pstats
import random
import statistics
import time
from dataclasses import dataclass, replace

from . import datasets
from .datasets import CitySpec
from .report import Report

HISTORY = CitySpec("rollup", 100, 100, 2000, 2 * 3600, 0)
NEW_HOUR_CHANGE_EVERY = 2 * 3600.0
NEW_HOUR_HEARTBEAT = 600.0


@dataclass
class RollupConfig:
    history: CitySpec = HISTORY
    early: int = 10
    hours: int = 3


FULL = RollupConfig()
SMOKE = RollupConfig(CitySpec("smokerollup", 2, 5, 24, 2 * 3600, 0), early=3, hours=1)


def _timed_hours(url: str, end: float, cfg: RollupConfig, log) -> list[dict]:
    from sqlalchemy import select

    from parking.extensions import db
    from parking.ingest import SensorReading, ingest_bulk
    from parking.models import Bay
    from parking.rollup import run_rollup

    app = datasets.make_app(url)
    results = []
    with app.app_context():
        states = dict(db.session.execute(select(Bay.id, Bay.state)).all())
        rng = random.Random(7)
        for k in range(cfg.hours + 1):
            profile = None
            if k == cfg.hours:  # one more hour, profiled, when the timed ones were over the target
                if statistics.median(r["seconds"] for r in results) <= 1.0:
                    break
                profile = cProfile.Profile()
            start = end + k * 3600
            readings = []
            for bay in sorted(states):
                history = datasets.bay_history(rng, start, start + 3600, NEW_HOUR_CHANGE_EVERY, NEW_HOUR_HEARTBEAT,
                                               state=states[bay], seq=(1 << 28) + k * 10_000)
                if history:
                    states[bay] = history[-1][1]
                readings += [SensorReading(bay, occ, ts, seq) for ts, occ, seq in history]
            readings.sort(key=lambda r: r.ts)
            stored = ingest_bulk(readings, received_at=None)
            db.session.remove()
            if profile is not None:
                profile.enable()
                run_rollup(now=start + 3600 + 1)
                profile.disable()
                out = io.StringIO()
                pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(12)
                log("    where one rollup spends its time (profiled, so slower):\n" + "\n".join(
                    line for line in out.getvalue().splitlines() if line.strip() and "Ordered" not in line))
                break
            started = time.perf_counter()
            stats = run_rollup(now=start + 3600 + 1)
            seconds = time.perf_counter() - started
            results.append({"seconds": seconds, "readings": stored, "hours": stats.hours, "lots": stats.lots})
            log(f"    new hour {k + 1}/{cfg.hours}: {stored:,} readings stored, rollup of {stats.hours} lot-hours "
                f"({stats.lots} lots) in {seconds:.3f} s")
        db.session.remove()
        db.engine.dispose()
    return results


def history_meta(spec: CitySpec, backend: str, use_cache: bool = True) -> dict:
    """The cached long-history data set (made when missing, ending six hours ago)."""
    cached_meta = datasets.cached(backend, spec.key()) if use_cache else None
    if cached_meta is not None:
        return cached_meta
    return datasets.ensure(spec, backend, end=(int(time.time()) // 3600 - 6) * 3600.0, use_cache=False)


def run(report: Report, backends: list[str], cfg: RollupConfig, log=print, use_cache: bool = True) -> None:
    late_spec = cfg.history
    early_spec = replace(cfg.history, hours=cfg.early)
    for backend in backends:
        medians = {}
        for label, spec in (("early", early_spec), ("late", late_spec)):
            if label == "early":
                # Small: made fresh, ending six hours ago so the new hours are in the past.
                end = (int(time.time()) // 3600 - 6) * 3600.0
                meta = datasets.ensure(spec, backend, end=end, use_cache=False, quiet=True)
                url, scratch = datasets.url_for(backend, meta["key"]), meta["key"]
            else:
                meta = history_meta(spec, backend, use_cache)
                scratch = meta["key"] + "-scratch"
                url = datasets.clone(backend, meta["key"], scratch)
            log(f"  {backend} rollup at hour {spec.hours:,}: {meta['readings']:,} readings of history")
            try:
                results = _timed_hours(url, meta["end"], cfg, log)
            finally:
                datasets.drop(backend, scratch)
                if label == "early":
                    datasets.meta_path(backend, meta["key"]).unlink(missing_ok=True)
            medians[label] = statistics.median(r["seconds"] for r in results)
            per_hour = statistics.median(r["readings"] for r in results)
            report.add(f"rollup.{backend}.hour_{spec.hours}", medians[label], "s", "<=", 1.0,
                       note=f"{cfg.history.bays:,} bays, {per_hour:,.0f} new readings, median of {len(results)}")
        report.add(f"rollup.{backend}.hour_{late_spec.hours}/hour_{early_spec.hours}",
                   medians["late"] / medians["early"], "", "<=", 1.2)
