"""Conversions between the Unix seconds used inside and the ISO 8601 text used at the edges."""
from __future__ import annotations

import datetime as dt


def iso_utc(ts: float | None) -> str | None:
    """ISO 8601 in UTC with its offset (second precision kept when fractional)."""
    if ts is None:
        return None
    moment = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return moment.isoformat(timespec=spec)
