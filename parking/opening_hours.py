"""Whether a lot is open now, from the common subset of OSM `opening_hours` syntax.

Understood: `24/7`; rules separated by `;`, each `<days> <times>` or `<days> off`, where days are
`Mo-Fr`, `Sa,Su`, `PH` (ignored: no holiday calendar here) and times are `07:00-20:00`
(several with `,`; `22:00-02:00` runs past midnight). A later rule overrides earlier ones for the
days it names, as in OSM. Anything else yields None: "don't know", and the lot is never shown as
closed on a guess.
"""
from __future__ import annotations

import datetime as dt
import functools
import re

DAYS = ["Mo", "Tu", "We", "Th", "Fr", "Sa", "Su"]
_TIME_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


def is_open(spec: str | None, local: dt.datetime) -> bool | None:
    """True/False when `spec` says so for the local time, None when unknown or unparsable."""
    if not spec:
        return None
    spec = spec.strip()
    if spec == "24/7":
        return True
    try:
        schedule = _parse(spec)
    except ValueError:
        return None
    minute = local.hour * 60 + local.minute
    today, yesterday = local.weekday(), (local.weekday() - 1) % 7
    for start, end in schedule.get(today, []):
        if start <= minute < min(end, 24 * 60):
            return True
    # A range past midnight yesterday (22:00-02:00) covers the early hours of today.
    for start, end in schedule.get(yesterday, []):
        if end > 24 * 60 and minute < end - 24 * 60:
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _parse(spec: str) -> dict[int, list[tuple[int, int]]]:
    """Weekday → list of (start minute, end minute), end may exceed 1440 (cached: lots share specs,
    and the lot list asks for every lot on every request). Callers must not mutate the result."""
    schedule: dict[int, list[tuple[int, int]]] = {}
    for rule in filter(None, (r.strip() for r in spec.split(";"))):
        days_part, _, times_part = rule.partition(" ")
        days = _days(days_part)
        if days is None:
            continue  # PH and the like: no calendar to apply them against
        times = times_part.strip()
        ranges = [] if times == "off" else [_minutes(t) for t in times.split(",")]
        for day in days:
            schedule[day] = ranges  # later rules override earlier ones for their days
    if not schedule:
        raise ValueError("no usable rule")
    return schedule


def _days(text: str) -> list[int] | None:
    """Mo-Fr,Su → [0..4, 6]; None for holiday selectors."""
    if text in ("PH", "SH"):
        return None
    days: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"unknown day selector {part!r}")
        a = DAYS.index(first)
        b = DAYS.index(last) if last else a
        days.extend(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return days


def _minutes(text: str) -> tuple[int, int]:
    """07:00-20:00 → (420, 1200); 22:00-02:00 → (1320, 1560)."""
    match = _TIME_RANGE.match(text.strip())
    if not match:
        raise ValueError(f"unknown time range {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end <= start:
        end += 24 * 60
    return start, end
