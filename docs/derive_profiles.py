#!/usr/bin/env python3
"""Derive the simulator's occupancy profiles from real free-space traces (run by hand).

Reads the archived free-space counts of 18 German car parks (``../shared/data/parking-traces/``,
see its README), cleans them and prints, per kind of lot, the mean occupancy of each local hour
for weekdays, Saturdays and Sundays/holidays, a seasonal factor per month and a rough
commuter dwell estimate. ``gateway/simulator/profiles.py`` holds the printed numbers as constants;
re-run this and paste its output there to regenerate them::

    python docs/derive_profiles.py [path/to/free-spaces.csv] [--sites]

Standard library only. The cleaning, in order (each step says which quirk of a real feed it
answers):

1. An empty cell means "no new value": the last value is carried forward for at most
   ``MAX_CARRY`` seconds, or across a gap of up to ``MAX_BRIDGE`` seconds whose two ends differ by
   at most ``BRIDGE_TOLERANCE`` of capacity (a quiet night, when nothing changes for hours).
   Anything else is a gap and stays unknown (columns that stop for days). Without the bridge,
   quiet nights would drop out and only busy ones would be averaged.
2. Sentinels: values of 9000 or more, and single values far above the site's capacity
   (``> SPIKE_FACTOR`` x capacity), are dropped.
3. Capacity is never stated: it is estimated per site and calendar month as the
   ``CAPACITY_PERCENTILE`` of the free counts (one glitch must not become the capacity, so not
   the maximum). A month whose estimate is outside ``CAPACITY_BAND`` times the site's median
   month is dropped: the feed changed its scale there (Arcaden, Castra Regina) or the lot was
   closed (the Dult fair takes Dultplatz every May and the feed reports 0 free all month).
4. A lot that is closed reports 0 free: a drop to 0 from more than ``CLOSED_JUMP`` of capacity
   free within one sample is a closure, not a fill-up, and that run of zeros is dropped.
5. A site with fewer than ``MIN_VALUES`` values or ``MIN_DISTINCT`` distinct values is not a
   live count (P+R West reports 319 or 0 twice a day) and is left out.

Then occupancy = 1 - free / capacity (clipped to 0..1), averaged per site, local date and hour;
those hourly means are averaged over days of the same type, and the sites of one kind are
averaged with equal weight. Holidays are each city's public holidays (Bavaria, Brandenburg,
North Rhine-Westphalia) and count as Sundays.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CSV = REPO.parent / "shared" / "data" / "parking-traces" / "free-spaces-2024-09_2025-08.csv"
TZ = ZoneInfo("Europe/Berlin")

MAX_CARRY = 3 * 3600
MAX_BRIDGE = 12 * 3600
BRIDGE_TOLERANCE = 0.05
CAPACITY_BAND = (0.75, 1.3)
SENTINEL = 9000
SPIKE_FACTOR = 1.5
CAPACITY_PERCENTILE = 0.99
CLOSED_JUMP = 0.10
MIN_VALUES = 5000
MIN_DISTINCT = 20
MIN_DAYS = 4  # a (site, day type, hour) cell needs this many days to count
DAY_TYPES = ("weekday", "saturday", "sunday")
KINDS = ("park_and_ride", "centre_garage", "surface")


def kind_of(site: str) -> str | None:
    """The simulator's kind for a trace column, or None if it fits none."""
    if "P-R" in site or "Park-Ride" in site:
        return "park_and_ride"
    if site.startswith("regensburg-parken-Parkhaus-") or "Tiefgarage" in site:
        return "centre_garage"
    if site.startswith("regensburg-parken-Parkplatz-"):
        return "surface"
    return None


def state_of(site: str) -> str:
    """The German state whose public holidays apply to a site."""
    if site.startswith("regensburg"):
        return "BY"
    if site.startswith("mobil-potsdam"):
        return "BB"
    return "NW"


def easter(year: int) -> dt.date:
    """Easter Sunday (Gregorian, anonymous algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l) // 451
    month = (h + l - 7 * m + 114) // 31
    day = (h + l - 7 * m + 114) % 31 + 1
    return dt.date(year, month, day)


def holidays(year: int, state: str) -> set[dt.date]:
    """Public holidays of a German state (the ones that close offices and shops)."""
    e = easter(year)
    days = {
        dt.date(year, 1, 1), e - dt.timedelta(2), e + dt.timedelta(1), dt.date(year, 5, 1),
        e + dt.timedelta(39), e + dt.timedelta(50), dt.date(year, 10, 3),
        dt.date(year, 12, 25), dt.date(year, 12, 26),
    }
    if state == "BY":
        days |= {dt.date(year, 1, 6), e + dt.timedelta(60), dt.date(year, 8, 15), dt.date(year, 11, 1)}
    elif state == "NW":
        days |= {e + dt.timedelta(60), dt.date(year, 11, 1)}
    elif state == "BB":
        days |= {e, e + dt.timedelta(49), dt.date(year, 10, 31)}
    return days


def day_type(day: dt.date, state: str) -> str:
    """weekday (Mon-Fri), saturday, or sunday (Sundays and public holidays)."""
    if day.weekday() == 6 or day in holidays(day.year, state):
        return "sunday"
    return "saturday" if day.weekday() == 5 else "weekday"


def read_columns(path: Path) -> tuple[list[float], dict[str, list[int | None]]]:
    """Row instants (Unix s) and each column's raw values (None where the cell is empty)."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        times: list[float] = []
        columns: dict[str, list[int | None]] = {name: [] for name in header[1:]}
        names = header[1:]
        for row in reader:
            times.append(dt.datetime.fromisoformat(row[0]).timestamp())
            for name, cell in zip(names, row[1:]):
                columns[name].append(int(float(cell)) if cell else None)
    return times, columns


def month_key(ts: float) -> str:
    """Local calendar month of an instant, e.g. '2025-03'."""
    return dt.datetime.fromtimestamp(ts, TZ).strftime("%Y-%m")


def percentile(values: list[int], q: float) -> float:
    """The q-quantile of values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def capacities(times: list[float], values: list[int | None]) -> dict[str, float]:
    """Estimated capacity per local month; months that look closed are left out."""
    by_month: dict[str, list[int]] = defaultdict(list)
    for ts, v in zip(times, values):
        if v is not None and v < SENTINEL:
            by_month[month_key(ts)].append(v)
    caps = {m: percentile(v, CAPACITY_PERCENTILE) for m, v in by_month.items() if len(v) >= 100}
    if not caps:
        return {}
    typical = statistics.median(caps.values())
    low, high = CAPACITY_BAND
    return {m: c for m, c in caps.items() if low * typical <= c <= high * typical and c > 0}


def clean_points(
    times: list[float], values: list[int | None], caps: dict[str, float]
) -> list[tuple[float, int | None]]:
    """(instant, free count) of every value that survives cleaning; None marks a closure."""
    points: list[tuple[float, int | None]] = []
    last_value = None
    closed = False
    for ts, v in zip(times, values):
        cap = caps.get(month_key(ts))
        if v is None or not cap or v >= SENTINEL or v > SPIKE_FACTOR * cap:
            continue  # empty, a month we do not trust, or a sentinel
        if v == 0 and (closed or (last_value is not None and last_value > CLOSED_JUMP * cap)):
            closed = True
            points.append((ts, None))
            continue
        closed = False
        last_value = v
        points.append((ts, v))
    return points


def occupancy_samples(times: list[float], values: list[int | None]) -> list[tuple[float, float]]:
    """(instant, occupancy 0..1) at every row where the site's count is known after cleaning."""
    caps = capacities(times, values)
    points = clean_points(times, values, caps)
    samples = []
    k = -1  # index of the newest point at or before ts
    for ts in times:
        while k + 1 < len(points) and points[k + 1][0] <= ts:
            k += 1
        cap = caps.get(month_key(ts))
        if k < 0 or not cap or points[k][1] is None:
            continue
        since, free = points[k]
        if ts - since > MAX_CARRY:
            nxt = points[k + 1] if k + 1 < len(points) else None
            quiet = (
                nxt is not None
                and nxt[1] is not None
                and nxt[0] - since <= MAX_BRIDGE
                and abs(nxt[1] - free) <= BRIDGE_TOLERANCE * cap
            )
            if not quiet:
                continue
        samples.append((ts, min(1.0, max(0.0, 1.0 - free / cap))))
    return samples


def hourly_means(samples: list[tuple[float, float]], state: str) -> dict[tuple[str, int, dt.date], float]:
    """Mean occupancy per (day type, local hour, local date)."""
    sums: dict[tuple[str, int, dt.date], list[float]] = defaultdict(lambda: [0.0, 0])
    for ts, occ in samples:
        local = dt.datetime.fromtimestamp(ts, TZ)
        cell = sums[(day_type(local.date(), state), local.hour, local.date())]
        cell[0] += occ
        cell[1] += 1
    return {key: s / n for key, (s, n) in sums.items()}


def site_profile(hourly: dict[tuple[str, int, dt.date], float]) -> dict[str, list[float | None]]:
    """Per day type, the 24 hourly means averaged over days (None where too few days)."""
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)
    for (dtype, hour, _), occ in hourly.items():
        cells[(dtype, hour)].append(occ)
    return {
        dtype: [
            statistics.fmean(cells[(dtype, h)]) if len(cells[(dtype, h)]) >= MIN_DAYS else None
            for h in range(24)
        ]
        for dtype in DAY_TYPES
    }


def monthly_level(hourly: dict[tuple[str, int, dt.date], float]) -> dict[int, float]:
    """Mean weekday daytime (08-18 h) occupancy per calendar month."""
    cells: dict[int, list[float]] = defaultdict(list)
    for (dtype, hour, day), occ in hourly.items():
        if dtype == "weekday" and 8 <= hour < 18:
            cells[day.month].append(occ)
    return {m: statistics.fmean(v) for m, v in cells.items() if len(v) >= 50}


def combine(profiles: list[dict[str, list[float | None]]]) -> dict[str, list[float]]:
    """Equal-weight mean of sites' profiles, hour by hour."""
    out = {}
    for dtype in DAY_TYPES:
        row = []
        for h in range(24):
            vals = [p[dtype][h] for p in profiles if p[dtype][h] is not None]
            row.append(statistics.fmean(vals) if vals else float("nan"))
        out[dtype] = row
    return out


def commuter_dwell_hours(weekday: list[float]) -> float:
    """Half-rise to half-fall time of a weekday profile above its night floor.

    For a lot used by commuters (one arrival in the morning, one departure in the evening) this
    approximates the typical stay; for garages with turnover it means nothing.
    """
    floor = min(weekday)
    half = floor + (max(weekday) - floor) / 2
    centres = [h + 0.5 for h in range(24)]
    rise = fall = None
    for (h0, v0), (h1, v1) in zip(zip(centres, weekday), zip(centres[1:], weekday[1:])):
        if rise is None and v0 < half <= v1:
            rise = h0 + (half - v0) / (v1 - v0)
        if rise is not None and v0 >= half > v1:
            fall = h0 + (v0 - half) / (v0 - v1)
    return (fall - rise) if rise is not None and fall is not None else float("nan")


def main(argv: list[str] | None = None) -> int:
    """Print per-kind profiles (and per-site ones with --sites)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--sites", action="store_true", help="also print each site's profile")
    args = parser.parse_args(argv)

    times, columns = read_columns(args.csv)
    by_kind: dict[str, list[dict[str, list[float | None]]]] = defaultdict(list)
    levels: dict[str, list[dict[int, float]]] = defaultdict(list)
    print(f"# source: {args.csv.name}, {len(times)} rows")
    for site, values in columns.items():
        kind = kind_of(site)
        present = [v for v in values if v is not None]
        if kind is None or len(present) < MIN_VALUES or len(set(present)) < MIN_DISTINCT:
            print(f"# skipped {site}: {len(present)} values, {len(set(present))} distinct")
            continue
        caps = capacities(times, values)
        hourly = hourly_means(occupancy_samples(times, values), state_of(site))
        profile = site_profile(hourly)
        by_kind[kind].append(profile)
        levels[kind].append(monthly_level(hourly))
        cap_text = ", ".join(f"{m[2:]}:{c:.0f}" for m, c in sorted(caps.items()))
        print(f"# {kind:14} {site}  capacity/month {cap_text}")
        if args.sites:
            for dtype in DAY_TYPES:
                row = " ".join("  - " if v is None else f"{v:.2f}" for v in profile[dtype])
                print(f"#    {dtype:8} {row}")

    print("\nPROFILES = {")
    for kind in KINDS:
        combined = combine(by_kind[kind])
        print(f'    "{kind}": {{  # {len(by_kind[kind])} sites')
        for dtype in DAY_TYPES:
            row = ", ".join(f"{v:.2f}" for v in combined[dtype])
            print(f'        "{dtype}": ({row}),')
        print("    },")
    print("}")

    print("\nMONTH_FACTOR = {  # weekday 08-18 h level of each month / mean over months")
    for kind in KINDS:
        factors = defaultdict(list)
        for site_levels in levels[kind]:
            if len(site_levels) < 10:
                continue
            mean = statistics.fmean(site_levels.values())
            for month, level in site_levels.items():
                factors[month].append(level / mean)
        row = ", ".join(
            f"{statistics.fmean(factors[m]):.2f}" if factors[m] else "nan" for m in range(1, 13)
        )
        print(f'    "{kind}": ({row}),')
    print("}")

    # Only meaningful where one stay per car spans the day (commuters); garages turn over.
    hours = commuter_dwell_hours(combine(by_kind["park_and_ride"])["weekday"])
    print(f"\n# park_and_ride weekday half-rise to half-fall (~ commuter stay): {hours:.1f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
