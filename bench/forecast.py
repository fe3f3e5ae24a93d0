"""Forecaster cost: `predict` for the three checked horizons and for a whole 24-hour curve,
`observe`, and the state kept per lot (contract §6: predict at most a couple of ms, memory fixed)."""
from __future__ import annotations

import pickle
import random
import statistics
import time
from dataclasses import dataclass

from parking.forecast import LotForecaster

T0 = 1_740_960_000  # 2025-03-03 00:00 UTC, a Monday


@dataclass
class Config:
    days: int
    calls: int


FULL = Config(days=35, calls=2000)
SMOKE = Config(days=8, calls=20)


def _fed(days: int) -> LotForecaster:
    """A 400-bay lot observed every 5 minutes for `days`."""
    rng = random.Random(7)
    f = LotForecaster(capacity=400, timezone="Europe/Berlin", region="DE-BY")
    for i in range(days * 288):
        ts = T0 + i * 300
        hour = (ts // 3600 + 1) % 24
        level = 0.15 + 0.7 * (7 <= hour < 18) * ((ts // 86400 + 3) % 7 < 5)
        f.observe(ts, max(0.0, min(400.0, 400 * level + rng.gauss(0, 12))))
    return f


def _median_ms(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def run(report, cfg: Config, log) -> None:
    started = time.perf_counter()
    f = _fed(cfg.days)
    fed_s = time.perf_counter() - started
    now = T0 + cfg.days * 86400 + 60
    f.observe(now - 30, 200)
    curve = [900 * k + 870 for k in range(97)]
    report.add("forecast.predict_3_horizons_ms", _median_ms(lambda: f.predict(now, [3600, 10800, 86400]), cfg.calls), "ms", "<=", 2.0)
    report.add("forecast.predict_24h_curve_ms", _median_ms(lambda: f.predict(now, curve), cfg.calls // 10 or 1), "ms", "<=", 2.0,
               note="97 horizons in 15-minute steps (the scheduler's run)")
    report.add("forecast.observe_us", fed_s / (cfg.days * 288) * 1e6, "µs", note="per 5-minute observation, profile and band learning included")
    report.add("forecast.state_kib", len(pickle.dumps(f)) / 1024, "KiB", note="pickled; the same after 2 years (tests/test_forecast.py)")
    log(f"  fed {cfg.days} days in {fed_s:.1f} s")
