"""Occupancy profiles and stay lengths that drive the sensor simulator.

The hourly profiles of `park_and_ride`, `centre_garage` and `surface` lots were derived from a
year of real free-space counts (Sept 2024 - Aug 2025) of 18 German car parks, 14 of which had a
usable feed: Potsdam and Cologne P+R lots, Regensburg's P+R Unterer Wöhrd, garages and
Dultplatz (``../shared/data/parking-traces/``). The counts were cleaned (sentinels, closures,
feed gaps, capacity estimated per month as the 99th percentile of free counts), turned into
occupancy, averaged per local hour and day type, and the sites of one kind averaged with equal
weight. To regenerate, run ``python docs/derive_profiles.py`` and paste its ``PROFILES`` and
``MONTH_FACTOR`` output here (``--sites`` shows each site's own profile).

Known artefacts kept as measured: the surface profile (one site, Dultplatz) and some P+R feeds
show a small bump between 02:00 and 06:00, where their counters drift at night.

Not derived from data, and therefore assumptions (the traces give counts, not stays):
- `on_street` has no trace. It is modelled on the centre-garage profile (old-town demand) with
  a floor of residents who park overnight: ``0.25 + 1.1 x centre``, capped at 0.95.
- Stay lengths (`STAYS`) are lognormal mixtures chosen from common survey figures: P+R commuters
  ~8.5 h, centre garages ~2 h, surface lots ~1.5 h, on-street ~40 min, plus employees and
  overnight parkers where they fit. The one check the traces allow agrees: on weekdays the P+R
  profile is above half its daily swing from about 08:00 to 17:00 (``derive_profiles.py``
  prints 9.3 h), which is what one morning-in, evening-out stay per car gives.

Day types: ``weekday`` (Mon-Fri), ``saturday``, ``sunday`` (Sundays and public holidays of
Bavaria, the sample city's state).
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import lru_cache

KINDS = ("park_and_ride", "centre_garage", "surface", "on_street")
DAY_TYPES = ("weekday", "saturday", "sunday")

# Mean occupancy (0..1) of local hours 0..23; output of docs/derive_profiles.py.
PROFILES: dict[str, dict[str, tuple[float, ...]]] = {
    "park_and_ride": {  # 7 sites
        "weekday": (0.07, 0.07, 0.09, 0.09, 0.10, 0.11, 0.13, 0.21, 0.30, 0.35, 0.38, 0.39, 0.39, 0.37, 0.34, 0.31, 0.25, 0.21, 0.17, 0.14, 0.13, 0.11, 0.09, 0.08),
        "saturday": (0.08, 0.07, 0.09, 0.09, 0.09, 0.08, 0.09, 0.10, 0.12, 0.14, 0.17, 0.20, 0.22, 0.23, 0.24, 0.24, 0.22, 0.20, 0.18, 0.17, 0.17, 0.15, 0.14, 0.12),
        "sunday": (0.10, 0.08, 0.09, 0.09, 0.09, 0.08, 0.09, 0.10, 0.10, 0.12, 0.14, 0.16, 0.18, 0.19, 0.19, 0.18, 0.16, 0.13, 0.11, 0.09, 0.08, 0.07, 0.07, 0.06),
    },
    "centre_garage": {  # 6 sites
        "weekday": (0.11, 0.10, 0.10, 0.10, 0.10, 0.09, 0.10, 0.12, 0.20, 0.32, 0.44, 0.50, 0.51, 0.50, 0.49, 0.49, 0.47, 0.45, 0.46, 0.49, 0.44, 0.36, 0.26, 0.18),
        "saturday": (0.24, 0.21, 0.18, 0.15, 0.13, 0.11, 0.09, 0.10, 0.12, 0.20, 0.38, 0.55, 0.66, 0.71, 0.74, 0.73, 0.69, 0.64, 0.63, 0.66, 0.63, 0.57, 0.46, 0.36),
        "sunday": (0.29, 0.26, 0.22, 0.19, 0.15, 0.12, 0.09, 0.09, 0.09, 0.11, 0.16, 0.21, 0.27, 0.30, 0.32, 0.32, 0.30, 0.28, 0.30, 0.29, 0.24, 0.18, 0.12, 0.08),
    },
    "surface": {  # 1 site
        "weekday": (0.10, 0.10, 0.16, 0.16, 0.16, 0.15, 0.11, 0.18, 0.26, 0.32, 0.37, 0.39, 0.40, 0.39, 0.38, 0.36, 0.31, 0.27, 0.28, 0.29, 0.27, 0.23, 0.17, 0.13),
        "saturday": (0.15, 0.14, 0.16, 0.16, 0.16, 0.17, 0.09, 0.14, 0.22, 0.27, 0.35, 0.41, 0.47, 0.52, 0.57, 0.58, 0.56, 0.51, 0.47, 0.49, 0.48, 0.44, 0.35, 0.29),
        "sunday": (0.22, 0.20, 0.23, 0.21, 0.21, 0.22, 0.10, 0.14, 0.18, 0.19, 0.22, 0.27, 0.29, 0.32, 0.36, 0.39, 0.35, 0.26, 0.18, 0.15, 0.13, 0.11, 0.09, 0.08),
    },
}
# Assumption (no trace): old-town demand like the garages, plus residents overnight.
PROFILES["on_street"] = {
    day: tuple(round(min(0.95, 0.25 + 1.1 * v), 2) for v in values)
    for day, values in PROFILES["centre_garage"].items()
}

# Weekday daytime level of each month (Jan..Dec) relative to the year; output of
# docs/derive_profiles.py. Centre garages peak in December (Christmas shopping) and summer
# (tourists), P+R dips in the summer holidays. Surface: May and August had no usable data
# (the Dult fair closes Dultplatz) and are set to 1.00; on-street follows the garages.
MONTH_FACTOR: dict[str, tuple[float, ...]] = {
    "park_and_ride": (0.98, 0.90, 1.02, 0.97, 1.11, 0.95, 0.87, 0.85, 1.14, 1.07, 1.13, 1.04),
    "centre_garage": (0.84, 0.81, 0.93, 1.10, 1.08, 0.99, 1.08, 1.15, 0.87, 0.94, 0.96, 1.25),
    "surface": (0.88, 0.84, 1.02, 1.19, 1.00, 0.90, 0.98, 1.00, 1.20, 0.96, 0.99, 1.06),
}
MONTH_FACTOR["on_street"] = MONTH_FACTOR["centre_garage"]


@dataclass(frozen=True, slots=True)
class Stay:
    """One group of parkers: its share, lognormal stay (median minutes, sigma), arrival hours."""

    weight: float
    median_minutes: float
    sigma: float
    from_hour: int = 0
    to_hour: int = 24


# Assumptions (see the module docstring). A group only arrives in [from_hour, to_hour).
STAYS: dict[str, dict[str, tuple[Stay, ...]]] = {
    "park_and_ride": {
        "workday": (
            Stay(0.80, 510, 0.30, 5, 11),  # commuters, ~8.5 h
            Stay(0.20, 150, 0.70),  # shoppers, visitors
            Stay(0.05, 1500, 0.50),  # away for a day or more
        ),
        "weekend": (Stay(0.85, 210, 0.60), Stay(0.10, 1500, 0.50)),
    },
    "centre_garage": {
        "workday": (
            Stay(0.65, 120, 0.70),  # shoppers, visitors, ~2 h
            Stay(0.25, 480, 0.30, 6, 10),  # employees
            Stay(0.30, 600, 0.50, 18, 24),  # evening out, residents overnight
        ),
        "weekend": (Stay(0.75, 150, 0.70), Stay(0.30, 600, 0.50, 18, 24)),
    },
    "surface": {
        "workday": (
            Stay(0.75, 90, 0.70),  # ~1.5 h
            Stay(0.20, 420, 0.40, 6, 10),
            Stay(0.20, 600, 0.50, 18, 24),
        ),
        "weekend": (Stay(0.80, 120, 0.70), Stay(0.20, 600, 0.50, 18, 24)),
    },
    "on_street": {
        "workday": (Stay(0.85, 40, 0.70), Stay(0.30, 720, 0.40, 17, 24)),  # ~40 min; residents
        "weekend": (Stay(0.85, 50, 0.70), Stay(0.30, 720, 0.40, 17, 24)),
    },
}


def kind_for(category: str | None, park_and_ride: dict | None) -> str:
    """The profile kind of a lot from its contract properties (P+R wins over category)."""
    if park_and_ride:
        return "park_and_ride"
    if category in ("parkingGarage", "underground"):
        return "centre_garage"
    if category == "onStreet":
        return "on_street"
    return "surface"


def _easter(year: int) -> dt.date:
    """Easter Sunday (Gregorian, anonymous algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    g = (b - (b + 8) // 25 + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l) // 451
    month, day = divmod(h + l - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


@lru_cache(maxsize=16)
def bavarian_holidays(year: int) -> frozenset[dt.date]:
    """Public holidays in Regensburg (Bavaria, including Assumption Day)."""
    e = _easter(year)
    fixed = [(1, 1), (1, 6), (5, 1), (8, 15), (10, 3), (11, 1), (12, 25), (12, 26)]
    moving = [-2, 1, 39, 50, 60]  # Good Friday, Easter Monday, Ascension, Whit Monday, Corpus Christi
    return frozenset([dt.date(year, m, d) for m, d in fixed] + [e + dt.timedelta(n) for n in moving])


def day_type(day: dt.date) -> str:
    """weekday, saturday, or sunday (Sundays and Bavarian public holidays)."""
    if day.weekday() == 6 or day in bavarian_holidays(day.year):
        return "sunday"
    return "saturday" if day.weekday() == 5 else "weekday"


def _month_factor(kind: str, day: dt.date) -> float:
    """The seasonal factor, interpolated between mid-months so it has no steps."""
    factors = MONTH_FACTOR[kind]
    x = day.month - 1 + (day.day - 0.5) / 31 - 0.5  # 0 = the middle of January
    lo = math.floor(x)
    frac = x - lo
    return factors[lo % 12] * (1 - frac) + factors[(lo + 1) % 12] * frac


def target_occupancy(kind: str, local_datetime: dt.datetime) -> float:
    """Expected occupancy (0..1) of a lot of `kind` at a local wall-clock time.

    Each hourly mean sits at the middle of its hour; between them the value is interpolated
    linearly, across midnight into the next day's type (Friday 23:59 leads into Saturday).
    """
    hours = local_datetime.hour + local_datetime.minute / 60 + local_datetime.second / 3600 - 0.5
    day = local_datetime.date()
    if hours < 0:
        before, after = (day - dt.timedelta(1), 23), (day, 0)
    elif hours >= 23:
        before, after = (day, 23), (day + dt.timedelta(1), 0)
    else:
        before, after = (day, int(hours)), (day, int(hours) + 1)
    frac = hours - math.floor(hours)
    profile = PROFILES[kind]
    v0 = profile[day_type(before[0])][before[1]]
    v1 = profile[day_type(after[0])][after[1]]
    value = (v0 * (1 - frac) + v1 * frac) * _month_factor(kind, day)
    return min(1.0, max(0.0, value))


def stays_at(kind: str, local_datetime: dt.datetime) -> tuple[Stay, ...]:
    """The groups that can arrive at a lot of `kind` at this local time (weights not normalised)."""
    table = STAYS[kind]["workday" if day_type(local_datetime.date()) == "weekday" else "weekend"]
    hour = local_datetime.hour
    groups = tuple(s for s in table if s.from_hour <= hour < s.to_hour)
    return groups or table


def median_stay_minutes(kind: str, workday: bool = True) -> float:
    """The median minutes of the kind's main group (for documentation and tests)."""
    return STAYS[kind]["workday" if workday else "weekend"][0].median_minutes
