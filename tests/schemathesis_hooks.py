"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.schemathesis_hooks): the rules between parameters
that the OpenAPI document states only in words, applied to generated requests.

A document can say what each parameter looks like, not how two relate, so schemathesis would
call `from=2030-01-01&to=2026-01-01` valid and flag the API's 400 as rejecting valid data. Where
both values are well formed, this orders them (`from` before `to`, and a bounding box's minimum
before its maximum) and keeps a range to a week (the 400 of a range over 1,098 days is a test of
tests/test_api_errors.py; a week keeps a workbook of every lot to seconds). A value that is not
well formed is left alone: schemathesis's negative cases stay negative.
"""
from __future__ import annotations

import datetime as dt

import schemathesis

from parking.api.lots import BBOX_RE
from parking.api.ranges import INSTANT_RE, parse_instant

WEEK = dt.timedelta(days=7)


@schemathesis.hook
def map_case(context, case):
    """Order from/to and the bounding box of a generated request."""
    query = case.query
    if isinstance(query, dict):
        _order_range(query)
        _order_bbox(query)
    return case


def _order_range(query: dict) -> None:
    """A well-formed `from`/`to` pair made into a range of at most a week, `from` first."""
    start, end = query.get("from"), query.get("to")
    if not (isinstance(start, str) and isinstance(end, str)
            and INSTANT_RE.fullmatch(start) and INSTANT_RE.fullmatch(end)):
        return
    if parse_instant(start, "UTC") > parse_instant(end, "UTC"):
        start, end = end, start
    begin = _moment(start)
    if not begin < _moment(end) <= begin + WEEK:
        end = _shift(start, WEEK) if begin.year < 9998 else start
        start = start if begin.year < 9998 else _shift(start, -WEEK)
    query["from"], query["to"] = start, end


def _moment(text: str) -> dt.datetime:
    """The value as an aware datetime (a date as its UTC midnight: ordering is all this needs)."""
    if "T" not in text:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _shift(text: str, delta: dt.timedelta) -> str:
    """The same form of value, `delta` later."""
    if "T" not in text:
        return (dt.date.fromisoformat(text) + delta).isoformat()
    return (_moment(text) + delta).isoformat()


def _order_bbox(query: dict) -> None:
    """A well-formed bounding box with each minimum before its maximum."""
    bbox = query.get("bbox")
    if not (isinstance(bbox, str) and BBOX_RE.fullmatch(bbox)):
        return
    minlon, minlat, maxlon, maxlat = bbox.split(",")
    lons = sorted((minlon, maxlon), key=float)
    lats = sorted((minlat, maxlat), key=float)
    query["bbox"] = ",".join((lons[0], lats[0], lons[1], lats[1]))
