"""The `from`/`to` arguments of reports and exports: their exact text form, bounds and meaning.

The accepted text is one regular expression, published as the parameters' `pattern` in the
OpenAPI document, so what the document calls valid is exactly what the API accepts: an ISO date
(`2026-03-29`, local midnight of the lot) or an ISO datetime with an offset
(`2026-03-29T08:00:00+01:00`, `…Z`). Years run from 1970 (nothing stored can be older than the
Unix epoch) to 9998: every instant of such a range, seen from any time zone, stays inside the
calendar that Python (and a spreadsheet) can label; year 9999 would not, as a `to` of
9999-12-31T23:00-12:00 is already in the year 10000 in UTC.
"""
from __future__ import annotations

import datetime as dt
import re

from marshmallow import Schema, ValidationError, fields, validates_schema

from ..occupancy import floor_local_hour, local_midnight

MAX_RANGE_DAYS = 3 * 366

_YEAR = r"(?:19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
_MONTH_DAY = (r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
              r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
              r"|02-(?:0[1-9]|1[0-9]|2[0-8]))")
# Leap years from 1972 on: divisible by 4, centuries only when divisible by 400.
_LEAP_YEAR = (r"(?:19(?:7[26]|8[048]|9[26])|[2-9][0-9](?:0[48]|[2468][048]|[13579][26])"
              r"|(?:[2468][048]|[3579][26])00)")
_DATE = rf"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_TIME = r"T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
_OFFSET = r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
INSTANT_RE = re.compile(rf"{_DATE}(?:{_TIME}{_OFFSET})?")
# ECMA-262 flavour for the OpenAPI document (`$` there never matches before a final newline).
INSTANT_PATTERN = f"^{INSTANT_RE.pattern}$"
# A datetime with offset only (no bare date): the lot list's forecast instant `at`.
DATETIME_PATTERN = f"^{_DATE}{_TIME}{_OFFSET}$"
INSTANT_HELP = ("an ISO date (2026-03-29: local midnight of the lot) or an ISO datetime with offset "
                "(2026-03-29T08:00:00+01:00), years 1970 to 9998")


def parse_instant(value: str, tz_name: str) -> float:
    """A date (local midnight in tz_name) or a datetime with offset as Unix seconds.

    Raises ValueError for text outside INSTANT_RE."""
    if not INSTANT_RE.fullmatch(value):
        raise ValueError(f"must be {INSTANT_HELP}")
    if "T" not in value:
        return local_midnight(dt.date.fromisoformat(value), tz_name)
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _check(value: str) -> None:
    """Validate a from/to value (the text form alone; the zone does not matter for that)."""
    try:
        parse_instant(value, "UTC")
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


def _instant_field(data_key: str, meaning: str) -> fields.String:
    """A required from/to query argument, documented with its exact pattern."""
    return fields.String(data_key=data_key, required=True, validate=_check,
                         metadata={"pattern": INSTANT_PATTERN, "description": f"{meaning}: {INSTANT_HELP}"})


class RangeArgsSchema(Schema):
    """`from` (inclusive) and `to` (exclusive): ISO dates mean local midnight of the lot."""

    start = _instant_field("from", "start, inclusive")
    end = _instant_field("to", f"end, exclusive; after 'from' and at most {MAX_RANGE_DAYS} days later")

    @validates_schema
    def _ordered(self, data: dict, **kwargs) -> None:
        """from must be before to, and the range not absurdly long."""
        if "start" not in data or "end" not in data:
            return
        start, end = parse_instant(data["start"], "UTC"), parse_instant(data["end"], "UTC")
        if start >= end:
            raise ValidationError("'from' must be before 'to'", "from")
        if end - start > MAX_RANGE_DAYS * 86400:
            raise ValidationError(f"the range may span at most {MAX_RANGE_DAYS} days", "to")

    def load(self, data, *args, **kwargs):
        """Keep the original text under 'from'/'to' too (for file names)."""
        loaded = super().load(data, *args, **kwargs)
        loaded["from"], loaded["to"] = loaded["start"], loaded["end"]
        return loaded


def resolve_range(args: dict, tz_name: str) -> tuple[float, float]:
    """The [from, to) of parsed arguments as Unix seconds in a lot's time zone."""
    return parse_instant(args["start"], tz_name), parse_instant(args["end"], tz_name)


def hour_range(args: dict, tz_name: str) -> tuple[float, float]:
    """The local hours a report covers: those overlapping [from, to), as (first hour start, to).

    A `from` inside an hour means that hour (as a `to` inside one already includes it)."""
    start, end = resolve_range(args, tz_name)
    return floor_local_hour(start, tz_name), end
