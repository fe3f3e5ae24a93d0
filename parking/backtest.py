"""Backtest of the forecaster on real free-space traces (what `flask forecast-backtest` prints).

Reads the trace format of ``../shared/data/parking-traces/`` (a ``timestamp`` column in ISO 8601
UTC, then one column of free counts per site; an empty cell means "no new value"), feeds each
site to a `LotForecaster` in time order and scores it, beside four anchors, on one grid:

- 15-minute steps; the last value is carried forward for at most 6 hours, then unknown;
- values above 1.5 x capacity are dropped as sentinels (9999 free in a garage of 500);
- capacity is the 99.5th percentile of the site's free counts (never stated; one glitch must not
  become it, so not the maximum); grid values are clipped to [0, capacity];
- an origin t counts for horizon h only where the target t + h lies 06:00-22:00 local and the
  values at t, t + h and t - k weeks, t + h - k weeks (k = 1, 2, 3) all exist, so every method is
  scored on the same origins.

Anchors, in free spaces: persistence (free now); same time last week; the mean of the same time
1-3 weeks ago; the Helsinki method (free now + mean over k of free(t+h-k w) - free(t-k w),
clamped to [0, capacity]). Errors are in points of capacity (100 x |error| / capacity).
Pure: no Flask, no database.
"""
from __future__ import annotations

import csv
import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, TextIO
from zoneinfo import ZoneInfo

from .forecast import LotForecaster

STEP = 900  # the grid, seconds
MAX_CARRY = 6 * 3600  # last value carried forward at most this long
SENTINEL_FACTOR = 1.5
CAPACITY_PERCENTILE = 99.5
WEEK = 7 * 86400
HORIZONS = (3600, 10800, 86400)
TARGET_HOURS = (6, 22)  # local target times counted: [06:00, 22:00)
METHODS = ("forecast", "persistence", "last_week", "mean_3_weeks", "helsinki")
# Regions of the trace's cities, by site-name prefix (public and school holidays differ).
TRACE_REGIONS = {"koeln": "DE-NW", "mobil-potsdam": "DE-BB", "regensburg": "DE-BY"}


@dataclass
class Site:
    """One column of a trace: raw observations (ts, free) in time order, sentinels dropped."""

    name: str
    observations: list[tuple[float, float]]
    capacity: float


def read_trace(fh: TextIO) -> list[Site]:
    """Parse a trace file into sites (columns with no value at all are left out)."""
    reader = csv.reader(fh)
    header = next(reader)
    if not header or header[0] != "timestamp":
        raise ValueError("not a trace: the first column must be 'timestamp'")
    names = header[1:]
    raw: list[list[tuple[float, float]]] = [[] for _ in names]
    for line_no, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            ts = dt.datetime.fromisoformat(row[0]).timestamp()
        except ValueError as exc:
            raise ValueError(f"line {line_no}: bad timestamp {row[0]!r}") from exc
        for i, cell in enumerate(row[1 : len(names) + 1]):
            if cell:
                raw[i].append((ts, float(cell)))
    sites = []
    for name, obs in zip(names, raw):
        if not obs:
            continue
        obs.sort(key=lambda o: o[0])
        cap = percentile([v for _, v in obs], CAPACITY_PERCENTILE)
        if cap <= 0:
            continue
        kept = [(t, v) for t, v in obs if v <= SENTINEL_FACTOR * cap]
        sites.append(Site(name, kept, cap))
    return sites


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default)."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def region_of(site_name: str, default: str) -> str:
    """The holiday region of a trace site, from its city prefix."""
    for prefix, region in TRACE_REGIONS.items():
        if site_name.startswith(prefix):
            return region
    return default


def grid(site: Site) -> tuple[int, list[float | None]]:
    """The site's free counts on the 15-minute grid: (first grid slot, values or None)."""
    obs = site.observations
    start = math.ceil(obs[0][0] / STEP)
    end = math.floor(obs[-1][0] / STEP)
    values: list[float | None] = []
    i = 0
    last: tuple[float, float] | None = None
    for slot in range(start, end + 1):
        t = slot * STEP
        while i < len(obs) and obs[i][0] <= t:
            last = obs[i]
            i += 1
        if last is not None and t - last[0] <= MAX_CARRY:
            values.append(min(max(last[1], 0.0), site.capacity))
        else:
            values.append(None)
    return start, values


@dataclass
class Score:
    """Running sums of one method at one horizon."""

    abs_err: float = 0.0
    n: int = 0
    inside: int = 0

    def mae(self) -> float | None:
        return self.abs_err / self.n if self.n else None


@dataclass
class SiteResult:
    """Scores of every method at every horizon, in points of capacity."""

    name: str
    capacity: float
    scores: dict[tuple[str, int], Score] = field(default_factory=dict)

    def score(self, method: str, h: int) -> Score:
        return self.scores.setdefault((method, h), Score())


def backtest_site(
    site: Site,
    timezone: str,
    region: str,
    from_ts: float | None = None,
    to_ts: float | None = None,
    make_forecaster: Callable[..., LotForecaster] = LotForecaster,
) -> SiteResult:
    """Feed one site in time order and score origins in [from_ts, to_ts) against the anchors."""
    tz = ZoneInfo(timezone)
    start, values = grid(site)
    cap = site.capacity
    n = len(values)
    wk = WEEK // STEP
    f = make_forecaster(capacity=cap, timezone=timezone, region=region)
    result = SiteResult(site.name, cap)
    hsteps = [h // STEP for h in HORIZONS]
    obs = site.observations
    oi = 0
    target_ok = [False] * n
    for j in range(n):
        hour = dt.datetime.fromtimestamp((start + j) * STEP, tz).hour
        target_ok[j] = TARGET_HOURS[0] <= hour < TARGET_HOURS[1]
    for j in range(n):
        t = (start + j) * STEP
        # The forecaster sees every raw observation up to and including the origin, nothing later.
        while oi < len(obs) and obs[oi][0] <= t:
            f.observe(obs[oi][0], cap - obs[oi][1])
            oi += 1
        if (from_ts is not None and t < from_ts) or (to_ts is not None and t >= to_ts):
            continue
        now = values[j]
        if now is None or j < 3 * wk:
            continue
        due = []
        for h, hs in zip(HORIZONS, hsteps):
            k = j + hs
            if k >= n or not target_ok[k] or values[k] is None:
                continue
            past = [(values[j - m * wk], values[k - m * wk]) for m in (1, 2, 3)]
            if any(a is None or b is None for a, b in past):
                continue
            due.append((h, k, past))
        if not due:
            continue
        preds = f.predict(t, [h for h, _, _ in due])
        for (h, k, past), p in zip(due, preds):
            actual = values[k]
            anchors = {
                "forecast": cap - p.occupied,
                "persistence": now,
                "last_week": past[0][1],
                "mean_3_weeks": sum(b for _, b in past) / 3,
                "helsinki": min(max(now + sum(b - a for a, b in past) / 3, 0.0), cap),
            }
            for method, pred in anchors.items():
                s = result.score(method, h)
                s.abs_err += abs(pred - actual) * 100.0 / cap
                s.n += 1
            if cap - p.high <= actual <= cap - p.low:
                result.score("forecast", h).inside += 1
    return result


def run_backtest(
    sites: Iterable[Site],
    timezone: str,
    default_region: str,
    from_ts: float | None = None,
    to_ts: float | None = None,
    make_forecaster: Callable[..., LotForecaster] = LotForecaster,
) -> list[SiteResult]:
    """Backtest every site (each with its own forecaster)."""
    return [
        backtest_site(s, timezone, region_of(s.name, default_region), from_ts, to_ts, make_forecaster)
        for s in sites
    ]


def overall(results: list[SiteResult]) -> SiteResult:
    """All sites pooled (every origin counts once; errors are already in points of capacity)."""
    total = SiteResult("overall", 0.0)
    for r in results:
        for key, s in r.scores.items():
            t = total.score(*key)
            t.abs_err += s.abs_err
            t.n += s.n
            t.inside += s.inside
    return total


def format_table(results: list[SiteResult]) -> list[str]:
    """Lines of the report: per site and overall, MAE per method and horizon, band coverage."""
    head = f"{'site':<44} {'h':>3} {'n':>6} " + " ".join(f"{m:>12}" for m in METHODS)
    lines = [
        "MAE in points of capacity; 'ratio' = forecast / helsinki; band = share inside the 80 % band",
        head + f" {'ratio':>6} {'band':>6}",
    ]
    for r in results + [overall(results)]:
        for h in HORIZONS:
            fs = r.scores.get(("forecast", h))
            if not fs or not fs.n:
                continue
            maes = [r.scores[(m, h)].mae() for m in METHODS]
            ratio = maes[0] / maes[-1] if maes[-1] else float("nan")
            lines.append(
                f"{r.name[-44:]:<44} {h // 3600:>2}h {fs.n:>6} "
                + " ".join(f"{m:>12.2f}" for m in maes)
                + f" {ratio:>6.3f} {100.0 * fs.inside / fs.n:>5.1f}%"
            )
    return lines
