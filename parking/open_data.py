"""What the open-data feeds (DATEX II Light, NGSI-LD; contract §8) share.

Both describe the lots exactly as `GET /api/lots` does at the same instant: they are built from the
lot list snapshot (`parking.lot_list`), never from a count of their own. This module gives them
that snapshot, the UTC timestamps in the `Z` form the two standards' examples use, and a JSON
encoding in which a lot name can never be read as markup.
"""
from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

from flask import current_app

from .lot_list import Snapshot, lot_list
from .opening_hours import is_open
from .timefmt import iso_utc

# Characters that could end a string early in an HTML or script context; JSON lets us escape them.
_MARKUP_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                   0x2028: "\\u2028", 0x2029: "\\u2029"}


def snapshot() -> Snapshot:
    """The lot list snapshot `GET /api/lots` answers from right now (needs an app context)."""
    return lot_list(current_app).get()


def encode(document) -> bytes:
    """Compact JSON with <, > and & escaped: the text is the same data, but never markup."""
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return text.translate(_MARKUP_ESCAPES).encode()


def utc_z(ts: float | None) -> str | None:
    """ISO 8601 UTC as `…Z` (the form DATEX II and NGSI-LD examples use), None stays None."""
    text = iso_utc(ts)
    return None if text is None else text.replace("+00:00", "Z")


def open_now(properties: dict, now: float) -> bool | None:
    """What the lot's opening hours say for `now`: True, False, or None when they don't say.

    The same rule `GET /api/lots` uses for its `closed` status (parking.lot_list.lot_closed).
    """
    local = dt.datetime.fromtimestamp(now, ZoneInfo(properties["timezone"]))
    return is_open(properties["opening_hours"], local)


def has_counts(properties: dict) -> bool:
    """Whether any bay of the lot has a fresh reading (else free and occupied say nothing)."""
    return properties["free"] + properties["occupied"] > 0
