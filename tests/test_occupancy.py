"""Tests of parking.occupancy: a brute-force reference, the local-hour calendar, worked examples.

The reference below is deliberately naive: it paints each bay's state second by second on
integer timestamps and then walks every second of every hour. It shares no code with the
module, so the property tests compare two independent readings of contract §5.
"""

from __future__ import annotations

import datetime
from bisect import bisect_right
from itertools import accumulate, groupby
from operator import itemgetter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from .hypothesis_profiles import examples

from parking.occupancy import (
    CurrentCounts,
    HourFigures,
    Interval,
    bay_intervals,
    changes_by_bay,
    continues_run,
    coverage_pct,
    current_counts,
    floor_local_hour,
    hour_label,
    hour_starts,
    hourly_figures,
    hours_reached,
    local_midnight,
    occupancy_pct,
    percent,
    reach_hours,
    run_start,
    state_changes,
    stays,
)

# Examples as the profile says (tests/hypothesis_profiles.py: the same on every CI run).
DETERMINISTIC = settings(max_examples=examples(200), deadline=None)

BASE = 1_774_742_400  # 2026-03-29T00:00:00Z, a whole UTC hour
UTC_HOUR = 3600

# --------------------------------------------------------------------------- reference

UNKNOWN, FREE, OCCUPIED = 0, 1, 2


def paint(readings, stale_after, lo, hi) -> bytearray:
    """State of one bay at each second of [lo, hi): each reading in turn claims [t, t + stale)."""
    # A later reading's claim starts no earlier and ends no earlier than an earlier one's, so
    # painting in order leaves each second with the state of the newest reading still in reach.
    states = bytearray(hi - lo)  # all UNKNOWN
    for t, occupied in readings:
        a, b = max(t, lo), min(t + stale_after, hi)
        if b > a:
            states[a - lo : b - lo] = bytes([OCCUPIED if occupied else FREE]) * (b - a)
    return states


def reference_arrival(readings, i, stale_after) -> bool:
    """Reading i is occupied, its predecessor free and at most stale_after older."""
    if i == 0 or not readings[i][1]:
        return False
    prev_ts, prev_occupied = readings[i - 1]
    return not prev_occupied and readings[i][0] - prev_ts <= stale_after


def reference_hourly(readings_by_bay, bay_count, hours, stale_after, now) -> list[HourFigures]:
    """Every HourFigures field by walking each second of each hour."""
    bays = [r for r in readings_by_bay.values() if r]
    all_ts = [t for r in bays for t, _ in r]
    lo = min([hours[0], *all_ts])
    hi = max([hours[-1] + UTC_HOUR, *(t + stale_after for t in all_ts)])
    rows = [paint(r, stale_after, lo, hi) for r in bays]
    result = []
    for h in hours:
        end = h + UTC_HOUR if now is None else max(h, min(h + UTC_HOUR, now))
        occupied_s = known_s = peak = 0
        for at_s in zip(*(row[h - lo : end - lo] for row in rows)):  # each second: all bays
            occupied = at_s.count(OCCUPIED)
            occupied_s += occupied
            known_s += occupied + at_s.count(FREE)
            peak = max(peak, occupied)
        arrivals = sum(
            1
            for r in bays
            for i, (t, _) in enumerate(r)
            if h <= t < end and reference_arrival(r, i, stale_after)
        )
        result.append(HourFigures(h, bay_count, occupied_s, known_s, end - h, peak, arrivals))
    return result


def reference_stays(readings, stale_after) -> list[tuple[int, int]]:
    """Runs of occupied seconds with a free second just before and just after (distinct ts)."""
    if not readings:
        return []
    lo = readings[0][0] - 1  # one unknown second in front: a run starting there has no known start
    row = paint(readings, stale_after, lo, readings[-1][0] + stale_after + 1)
    result = []
    for s in range(1, len(row)):
        if row[s] == OCCUPIED and row[s - 1] == FREE:
            e = s
            while row[e] == OCCUPIED:
                e += 1
            if row[e] == FREE:
                result.append((lo + s, lo + e))
    return result


def as_integers(figures: list[HourFigures]) -> list[tuple]:
    """HourFigures as tuples with the float seconds rounded to whole seconds."""
    return [
        (
            f.hour_start,
            f.bays,
            round(f.occupied_seconds),
            round(f.known_seconds),
            round(f.span_seconds),
            f.peak_occupied,
            f.arrivals,
        )
        for f in figures
    ]


# --------------------------------------------------------------------------- strategies


def storage_order(arrived):
    """Readings as storage returns them: by ts, equal ts in arrival (insert) order."""
    return sorted(arrived, key=itemgetter(0))


def gap(code: int, stale_after: int, min_gap: int) -> int:
    """Seconds between two readings from one drawn integer in [0, 4 × stale_after]."""
    # One draw per gap (generating the examples dominates the run time). The low end gives
    # equal ts and same-second flips, then bursts, gaps within reach, and stale gaps
    # (stale_after itself included: the rule's boundary).
    if code < stale_after // 2:
        return min_gap + code % 3
    if code < stale_after:
        return max(min_gap, code - stale_after // 2)
    if code < 3 * stale_after:
        return max(min_gap, (code - stale_after) // 2)
    return code - 2 * stale_after


@st.composite
def bay_readings(draw, lo, hi, stale_after, min_gap=0, max_size=20):
    """One bay's readings: bursts, heartbeats, equal ts and stale gaps, arriving in any order."""
    start = draw(st.integers(lo, hi))
    size = draw(st.integers(0, max_size))  # drawn first: plain st.lists stays mostly short
    codes = draw(st.lists(st.integers(0, 4 * stale_after), min_size=size, max_size=size))
    ts = list(accumulate([start, *(gap(c, stale_after, min_gap) for c in codes)]))
    bits = draw(st.integers(0, 2 ** len(ts) - 1))  # the states, one bit per reading
    states = [bool(bits >> i & 1) for i in range(len(ts))]
    arrived = draw(st.permutations(list(zip(ts, states))))  # out-of-order delivery
    return storage_order(arrived)


@st.composite
def lots(draw):
    """(readings_by_bay, bay_count, hours, stale_after, now) for one lot."""
    stale_after = draw(st.integers(30, 1800))
    n_hours = draw(st.integers(1, 3))
    all_hours = [BASE + k * UTC_HOUR for k in range(n_hours)]
    keep = draw(st.lists(st.booleans(), min_size=n_hours, max_size=n_hours))
    hours = [h for h, k in zip(all_hours, keep) if k] or all_hours  # sometimes with holes
    bay_count = draw(st.integers(1, 5))  # a lot without bays: test_nothing_known
    reporting = bay_count - draw(st.integers(0, min(bay_count, 2)))  # some bays never report
    # First readings from before the hours (carry-in) to well inside them; the later ones run
    # on past the last hour.
    lo, hi = BASE - 2 * stale_after, BASE + (n_hours - 1) * UTC_HOUR + 1800
    readings_by_bay = {
        f"B{b}": draw(bay_readings(lo, hi, stale_after, max_size=25)) for b in range(reporting)
    }
    if reporting < bay_count and draw(st.booleans()):
        readings_by_bay["silent"] = []  # a bay the caller lists without readings
    now = draw(
        st.none()
        | st.integers(BASE, BASE + n_hours * UTC_HOUR)  # mostly inside an hour
        | st.integers(BASE - 600, BASE + n_hours * UTC_HOUR + 600)
    )
    return readings_by_bay, bay_count, hours, stale_after, now


# --------------------------------------------------------------------------- properties


@DETERMINISTIC
@given(lots())
def test_hourly_figures_match_brute_force(lot):
    readings_by_bay, bay_count, hours, stale_after, now = lot
    got = hourly_figures(readings_by_bay, bay_count, hours, stale_after, now=now)
    want = reference_hourly(readings_by_bay, bay_count, hours, stale_after, now)
    assert as_integers(got) == as_integers(want)
    for f, w in zip(got, want):
        assert 0 <= f.occupied_seconds <= f.known_seconds <= f.bays * f.span_seconds
        # The percentages: None exactly where the reference's denominator is empty.
        assert (f.occupancy_pct is None) == (w.known_seconds == 0)
        assert (f.coverage_pct is None) == (w.bays * w.span_seconds == 0)
        assert f.coverage_pct is None or f.coverage_pct <= 100.0


@DETERMINISTIC
@given(
    st.integers(30, 1800).flatmap(
        lambda stale: st.tuples(
            st.just(stale),
            bay_readings(BASE, BASE + 3 * UTC_HOUR, stale),
            st.integers(BASE - 100, BASE + 4 * UTC_HOUR),
            st.integers(0, 4 * UTC_HOUR),
        )
    )
)
def test_bay_intervals_match_painting(case):
    stale_after, readings, start, length = case
    end = start + length
    intervals = bay_intervals(readings, stale_after, start, end)
    row = bytearray(length)
    for iv in intervals:
        assert start <= iv.start < iv.end <= end
        row[iv.start - start : iv.end - start] = bytes([OCCUPIED if iv.occupied else FREE]) * (
            iv.end - iv.start
        )
    assert row == paint(readings, stale_after, start, end)
    for a, b in zip(intervals, intervals[1:]):
        assert a.end <= b.start
        assert not (a.end == b.start and a.occupied == b.occupied), "touching equal states merge"


@DETERMINISTIC
@given(
    st.integers(30, 1800).flatmap(
        lambda stale: st.tuples(st.just(stale), bay_readings(BASE, BASE, stale, min_gap=1))
    )
)
def test_stays_match_brute_force_on_distinct_ts(case):
    stale_after, readings = case
    assert stays(readings, stale_after) == reference_stays(readings, stale_after)


@settings(DETERMINISTIC, max_examples=examples(100))
@given(st.integers(30, 1800).flatmap(lambda stale: bay_readings(BASE, BASE, stale)))
def test_state_changes_are_the_first_reading_of_each_run(readings):
    runs = [next(run) for _, run in groupby(readings, key=itemgetter(1))]
    assert state_changes(readings) == runs


def reference_run_start(readings, stale_after):
    """First second of the newest reading's run: walk the painted states back from it."""
    if not readings:
        return None
    lo, newest = readings[0][0], readings[-1][0]
    row = paint(readings, stale_after, lo, newest + 1)
    s = newest - lo
    while s > 0 and row[s - 1] == row[newest - lo]:
        s -= 1
    return lo + s


def folded_since(readings, stale_after):
    """state_since kept up reading by reading, as ingest does for readings arriving in order."""
    state = last_ts = since = None
    for ts, occupied in readings:
        if not continues_run(state, last_ts, occupied, ts, stale_after):
            since = ts
        state, last_ts = occupied, ts
    return since


@DETERMINISTIC
@given(
    st.integers(30, 1800).flatmap(
        lambda stale: st.tuples(st.just(stale), bay_readings(BASE, BASE, stale, min_gap=1))
    )
)
def test_run_start_matches_painting_on_distinct_ts(case):
    """state_since: the start of the newest reading's run, whether walked back from the newest
    (run_start, after a late reading) or kept up reading by reading (continues_run)."""
    stale_after, readings = case
    want = reference_run_start(readings, stale_after)
    assert run_start(reversed(readings), stale_after) == want
    assert folded_since(readings, stale_after) == want


@DETERMINISTIC
@given(st.integers(30, 1800).flatmap(lambda stale: st.tuples(st.just(stale), bay_readings(BASE, BASE, stale))))
def test_run_start_walked_back_equals_kept_up(case):
    """With equal ts too, where a state superseded in the same second still counts as a change
    (the events CSV lists it), so the run starts at that second, not where painting says."""
    stale_after, readings = case
    assert run_start(reversed(readings), stale_after) == folded_since(readings, stale_after)


@settings(DETERMINISTIC, max_examples=examples(100))
@given(
    st.integers(30, 1800).flatmap(
        lambda stale: st.lists(bay_readings(BASE, BASE + 600, stale), min_size=1, max_size=4)
    ),
    st.integers(BASE, BASE + 4 * 1800),
)
def test_changes_by_bay_are_the_first_reading_of_each_run(bays, split):
    """The events CSV's changes over interleaved bays from `split` on, each bay's earlier
    readings deciding its first: the first reading of each run of the bay's whole history."""
    rows = sorted(((f"B{i}", t, occ) for i, r in enumerate(bays) for t, occ in r), key=itemgetter(1))
    before = {}
    for bay, t, occ in rows:
        if t < split:
            before[bay] = occ
    got = list(changes_by_bay([r for r in rows if r[1] >= split], before))
    runs = [(f"B{i}", *next(run)) for i, r in enumerate(bays) for _, run in groupby(r, key=itemgetter(1))]
    want = sorted((r for r in runs if r[1] >= split), key=itemgetter(1))
    assert sorted(got, key=itemgetter(0, 1)) == sorted(want, key=itemgetter(0, 1))
    assert [t for _, t, _ in got] == sorted(t for _, t, _ in got)


@settings(DETERMINISTIC, max_examples=examples(100))
@given(
    st.integers(30, 1800).flatmap(
        lambda stale: st.tuples(
            st.just(stale),
            st.lists(bay_readings(BASE - stale, BASE + 3 * UTC_HOUR, stale), min_size=1, max_size=3),
            st.lists(st.tuples(st.integers(0, 2), st.integers(BASE - stale, BASE + 4 * UTC_HOUR),
                               st.booleans()), min_size=1, max_size=4),
        )
    )
)
def test_hours_reached_are_the_hours_late_readings_can_change(case):
    """Every hour whose brute-force figures change when late readings arrive is among the hours
    `hours_reached` marks dirty; and those are exactly the hours overlapping [ts, ts + stale]."""
    stale_after, bays, late = case
    before = {f"B{i}": r for i, r in enumerate(bays)}
    after = {bay: list(r) for bay, r in before.items()}
    for which, t, occupied in late:
        old = after.setdefault(f"B{which}", [])
        old.insert(bisect_right([ts for ts, _ in old], t), (t, occupied))
    hours = [BASE + k * UTC_HOUR - 2 * UTC_HOUR for k in range(9)]
    stamps = [t for _, t, _ in late]
    reached = hours_reached(stamps, stale_after, "UTC")
    assert reached == {h for h in hours for t in stamps if h <= t + stale_after and t < h + UTC_HOUR}
    fig_before = reference_hourly(before, 3, hours, stale_after, None)
    fig_after = reference_hourly(after, 3, hours, stale_after, None)
    changed = {b.hour_start for b, a in zip(fig_before, fig_after) if as_integers([a]) != as_integers([b])}
    assert changed <= reached


def test_hours_reached_in_local_hours():
    """Local hours, the zone's arithmetic shared: a half-hour zone's hours start at :30 UTC."""
    t = utc(2026, 3, 29, 9, 50)  # 15:20 in Asia/Kolkata (+05:30), hour from 09:30 UTC
    assert hours_reached([t, t + 60], 3000, "Asia/Kolkata") == {utc(2026, 3, 29, 9, 30), utc(2026, 3, 29, 10, 30)}
    assert list(reach_hours(t, t + 7200, 0, "Asia/Kolkata")) == [utc(2026, 3, 29, h, 30) for h in (9, 10, 11)]
    assert hours_reached([], 1800, "UTC") == set()


def test_percent_has_no_figure_for_an_empty_denominator():
    assert (percent(1, 3), percent(0, 3), percent(0, 0), percent(5, 0)) == (33.3, 0.0, None, None)
    assert occupancy_pct(0, 0) is None and coverage_pct(0, 0, 3600) is None and coverage_pct(0, 5, 0) is None
    assert coverage_pct(1800, 1, 3600) == 50.0


@settings(DETERMINISTIC, max_examples=examples(100))
@given(
    st.integers(30, 1800).flatmap(
        lambda stale: st.tuples(
            st.just(stale),
            st.lists(bay_readings(BASE - stale, BASE + 3 * UTC_HOUR, stale), max_size=3),
            st.integers(0, 2),
            st.integers(BASE - stale, BASE + 4 * UTC_HOUR),
            st.booleans(),
        )
    )
)
def test_late_reading_changes_only_hours_within_its_reach(case):
    stale_after, bays, which, t, occupied = case
    before = {f"B{i}": r for i, r in enumerate(bays)}
    target = f"B{which}"
    after = dict(before)
    old = before.get(target, [])
    # Stored now, so among equal ts it comes last (storage order is ts, then id).
    pos = bisect_right([ts for ts, _ in old], t)
    after[target] = [*old[:pos], (t, occupied), *old[pos:]]
    hours = [BASE + k * UTC_HOUR for k in range(5)]
    fig_before = hourly_figures(before, 3, hours, stale_after)
    fig_after = hourly_figures(after, 3, hours, stale_after)
    for b, a in zip(fig_before, fig_after):
        if b.hour_start + UTC_HOUR <= t or b.hour_start > t + stale_after:
            assert a == b, f"hour {b.hour_start} is outside [{t}, {t + stale_after}]"


# --------------------------------------------------------------------------- local time

BERLIN = "Europe/Berlin"


def utc(*args) -> float:
    """Unix seconds of a UTC wall time."""
    return datetime.datetime(*args, tzinfo=datetime.timezone.utc).timestamp()


def day_hours(day: datetime.date, tz: str) -> list[float]:
    """Hour starts of one local day."""
    return hour_starts(tz, local_midnight(day, tz), local_midnight(day + datetime.timedelta(1), tz))


def test_spring_forward_day_has_23_hours():
    hours = day_hours(datetime.date(2026, 3, 29), BERLIN)
    assert len(hours) == 23
    assert hours[0] == utc(2026, 3, 28, 23)
    assert [hour_label(h, BERLIN) for h in hours] == [
        "2026-03-29T00:00:00+01:00",
        "2026-03-29T01:00:00+01:00",
        *(f"2026-03-29T{h:02d}:00:00+02:00" for h in range(3, 24)),
    ]


def test_fall_back_day_has_25_hours():
    hours = day_hours(datetime.date(2026, 10, 25), BERLIN)
    assert len(hours) == 25
    assert [hour_label(h, BERLIN) for h in hours] == [
        "2026-10-25T00:00:00+02:00",
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        *(f"2026-10-25T{h:02d}:00:00+01:00" for h in range(3, 24)),
    ]


def test_ordinary_day_has_24_hours():
    assert len(day_hours(datetime.date(2026, 6, 1), BERLIN)) == 24


@pytest.mark.parametrize(
    ("t", "floor"),
    [
        # spring forward: 01:59:59+01:00 is followed by 03:00:00+02:00 (01:00Z)
        (utc(2026, 3, 29, 0, 59, 59), utc(2026, 3, 29, 0)),
        (utc(2026, 3, 29, 1), utc(2026, 3, 29, 1)),
        (utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 1)),
        # fall back: 02:59:59+02:00 (00:59:59Z) is followed by 02:00:00+01:00 (01:00Z)
        (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 0)),
        (utc(2026, 10, 25, 0, 59, 59), utc(2026, 10, 25, 0)),
        (utc(2026, 10, 25, 1), utc(2026, 10, 25, 1)),
        (utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 1)),
        (utc(2026, 10, 25, 1, 30) + 0.25, utc(2026, 10, 25, 1)),
    ],
)
def test_floor_local_hour_around_clock_changes(t, floor):
    assert floor_local_hour(t, BERLIN) == floor


def test_half_hour_zone_hours_start_at_half_past_utc():
    tz = "Asia/Kolkata"
    hours = day_hours(datetime.date(2026, 3, 29), tz)
    assert len(hours) == 24
    assert hours[0] == utc(2026, 3, 28, 18, 30)
    assert all(h % 3600 == 1800 for h in hours)
    assert hour_label(hours[1], tz) == "2026-03-29T01:00:00+05:30"
    assert floor_local_hour(utc(2026, 3, 29, 12, 29, 59), tz) == utc(2026, 3, 29, 11, 30)
    with pytest.raises(ValueError):
        hour_starts(tz, utc(2026, 3, 29, 12), utc(2026, 3, 29, 14))  # a UTC hour is not local


def test_local_midnight_in_a_gap_is_the_first_instant_of_the_day():
    tz = "America/Santiago"  # clocks go from 00:00 to 01:00 on 2024-09-08
    midnight = local_midnight(datetime.date(2024, 9, 8), tz)
    assert hour_label(midnight, tz) == "2024-09-08T01:00:00-03:00"
    assert len(day_hours(datetime.date(2024, 9, 8), tz)) == 23
    # and back from 24:00 to 23:00 on 2024-04-06: the 23:00 hour happens twice
    midnight = local_midnight(datetime.date(2024, 4, 7), tz)
    assert hour_label(midnight, tz) == "2024-04-07T00:00:00-04:00"
    assert len(day_hours(datetime.date(2024, 4, 6), tz)) == 25


@DETERMINISTIC
@given(
    st.floats(utc(2000, 1, 1), utc(2040, 1, 1)),
    st.sampled_from([BERLIN, "Asia/Kolkata", "America/New_York", "America/Santiago", "UTC"]),
)
def test_floor_local_hour_is_a_local_hour_start(t, tz):
    h = floor_local_hour(t, tz)
    assert h <= t < h + 3600
    assert floor_local_hour(h, tz) == h
    assert hour_label(h, tz)[13:19] == ":00:00"


# --------------------------------------------------------------------------- worked examples


def one_hour(readings_by_bay, bays, stale_after, now=None) -> HourFigures:
    """Figures of the hour [0, 3600)."""
    [figures] = hourly_figures(readings_by_bay, bays, [0.0], stale_after, now=now)
    return figures


def test_worked_hour():
    # free [0, 600), occupied [600, 1200), free [1200, 3000), unknown [3000, 3600)
    f = one_hour({"a": [(0, False), (600, True), (1200, False)]}, 2, 1800)
    assert (f.occupied_seconds, f.known_seconds, f.span_seconds) == (600, 3000, 3600)
    assert f.occupancy_pct == 20.0  # 600 / 3000
    assert f.coverage_pct == 41.7  # 3000 / (2 × 3600)
    assert (f.arrivals, f.peak_occupied) == (1, 1)


def test_stale_gap_means_no_arrival():
    # free [0, 1800), unknown [1800, 2000), occupied [2000, 3600)
    f = one_hour({"a": [(0, False), (2000, True)]}, 1, 1800)
    assert (f.occupied_seconds, f.known_seconds, f.arrivals) == (1600, 3400, 0)
    # exactly stale_after later: free was known right up to the reading
    assert one_hour({"a": [(0, False), (1800, True)]}, 1, 1800).arrivals == 1


def test_handover_at_the_same_instant_is_no_overlap():
    a = [(100, True), (1000, False)]  # occupied [100, 1000)
    b = [(0, False), (1000, True)]  # occupied [1000, 3600)
    f = one_hour({"a": a, "b": b}, 2, 3600)
    assert f.peak_occupied == 1
    assert f.arrivals == 1  # a's first reading has no known state before it
    c = [(900, True), (1100, False)]  # overlaps both
    assert one_hour({"a": a, "b": b, "c": c}, 3, 3600).peak_occupied == 2
    d = [(0, False), (1000, True), (1001, False)]  # occupied together with b for one second
    assert one_hour({"b": b, "d": d}, 2, 3600).peak_occupied == 2


def test_same_second_flip_counts_as_arrival():
    # a car leaves and the next arrives within the same second: storage order decides
    f = one_hour({"a": [(0, True), (500, False), (500, True)]}, 1, 1800)
    assert (f.arrivals, f.occupied_seconds, f.peak_occupied) == (1, 2300, 1)


def test_carry_in_from_before_the_hour():
    f = one_hour({"a": [(-600, True), (-300, False), (-200, True)]}, 1, 1800)
    assert (f.occupied_seconds, f.known_seconds, f.arrivals) == (1600, 1600, 0)


def test_nothing_known():
    f = one_hour({"a": [(-5000, True)], "b": []}, 3, 1800)
    assert f.occupancy_pct is None
    assert f.coverage_pct == 0.0  # three bays, none known: 0 % of them
    empty = one_hour({}, 0, 1800)
    # No bay: nothing to cover, so no figure ("no coverage" is not 0 %).
    assert (empty.occupancy_pct, empty.coverage_pct, empty.peak_occupied) == (None, None, 0)


def test_now_inside_the_hour():
    readings = [(0, False), (600, True), (1800, False), (1900, True)]
    f = one_hour({"a": readings}, 1, 3600, now=1800)
    assert (f.span_seconds, f.occupied_seconds, f.known_seconds) == (1800, 1200, 1800)
    assert f.arrivals == 1  # the reading at 1900 is in the future
    assert f.coverage_pct == 100.0
    assert f.occupancy_pct == 66.7
    [later] = hourly_figures({"a": readings}, 1, [3600.0], 3600, now=1800)
    assert (later.span_seconds, later.known_seconds, later.coverage_pct) == (0, 0, None)  # not begun


def test_late_reading_changes_exactly_the_hours_it_reaches():
    heartbeats = [(t, False) for t in range(0, 11200, 1400)]  # free, every 1400 s
    hours = [0.0, 3600.0, 7200.0, 10800.0]
    before = hourly_figures({"a": heartbeats}, 1, hours, 1800)
    late = sorted([*heartbeats, (3300, True)], key=itemgetter(0))  # occupied [3300, 4200)
    after = hourly_figures({"a": late}, 1, hours, 1800)
    # [3300, 3300 + 1800] reaches hours 0 and 1
    assert [b != a for b, a in zip(before, after)] == [True, True, False, False]
    assert (after[0].occupied_seconds, after[0].arrivals) == (300, 1)
    assert (after[1].occupied_seconds, after[1].arrivals) == (600, 0)


def test_hours_must_not_overlap_and_bays_must_fit():
    with pytest.raises(ValueError):
        hourly_figures({}, 1, [0.0, 1800.0], 1800)
    with pytest.raises(ValueError):
        hourly_figures({"a": [(0, True)], "b": [(0, True)]}, 1, [0.0], 1800)


def test_bay_intervals_worked():
    readings = [(0, False), (600, False), (600, True), (1000, True), (5000, False)]
    assert bay_intervals(readings, 1800) == [
        Interval(0, 600, False),
        Interval(600, 2800, True),
        Interval(5000, 6800, False),
    ]
    assert bay_intervals(readings, 1800, start=700, end=5500) == [
        Interval(700, 2800, True),
        Interval(5000, 5500, False),
    ]


def test_stays_worked():
    readings = [
        (0, False),
        (100, True),  # arrival
        (1000, True),  # heartbeat
        (1500, False),  # departure: stay (100, 1500)
        (1600, True),  # arrival
        (5000, True),  # after a stale gap: the stay is lost
        (5100, False),
        (5100, True),  # same-second handover: arrival
        (5400, False),  # stay (5100, 5400)
        (9000, True),  # after a gap: no arrival
        (9100, False),
    ]
    assert stays(readings, 1800) == [(100, 1500), (5100, 5400)]
    assert stays([], 1800) == []


def test_state_changes_skip_heartbeats():
    readings = [(0, False), (60, False), (120, True), (180, True), (240, False)]
    assert state_changes(readings) == [(0, False), (120, True), (240, False)]
    assert state_changes(readings, before=False) == [(120, True), (240, False)]
    assert state_changes([]) == []


def test_run_start_worked():
    newest_first = [(5000, True), (4000, True), (3000, False), (2900, False)]
    assert run_start(newest_first, 1800) == 4000
    assert run_start([(5000, True), (3000, True)], 1800) == 5000  # a stale gap restarts the run
    assert run_start([], 1800) is None
    assert run_start([(1, False), (1, True), (0, False)], 1800) == 1  # a same-second flip and back
    assert not continues_run(None, None, True, 0, 1800)  # a bay's first reading starts a run


def test_current_counts():
    now, stale = 10_000.0, 1800.0
    latest = [
        (now, True),  # just reported
        (now - 1799, False),
        (now - 1800, True),  # exactly stale: unknown
        (now + 5, False),  # sensor clock a little ahead: the newest news, counts
        (None, None),  # never reported
    ]
    assert current_counts(latest, 7, now, stale) == CurrentCounts(
        free=2, occupied=1, unknown=4, total=7
    )
    assert current_counts([], 0, now, stale) == CurrentCounts(0, 0, 0, 0)
    with pytest.raises(ValueError):
        current_counts([(now, True), (now, False)], 1, now, stale)
