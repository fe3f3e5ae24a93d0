"""The pure forecaster (contract §6): no peeking, values in range, bounded memory, calendar."""
from __future__ import annotations

import datetime as dt
import math
import pickle
import random
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parking.forecast import MIN_DAYS, LotForecaster, day_info

BERLIN = ZoneInfo("Europe/Berlin")
T0 = dt.datetime(2025, 3, 3, tzinfo=BERLIN).timestamp()  # a Monday


def weekday_lot(ts: float, capacity: int, rng: random.Random) -> float:
    """A commuter lot: fills 07-09, empties 16-19, quiet weekends; some noise."""
    local = dt.datetime.fromtimestamp(ts, BERLIN)
    h = local.hour + local.minute / 60
    level = 0.1 if local.weekday() >= 5 else 0.1 + 0.8 * min(max((h - 7) / 2, 0), 1) * min(max((19 - h) / 3, 0), 1)
    return min(max(level * capacity + rng.gauss(0, 0.03 * capacity), 0), capacity)


def stream(seed: int, days: float, cadence: int, gaps: list[tuple[float, float]], capacity: int = 200):
    """Observations of a synthetic lot from T0: every `cadence` seconds, none inside the gaps (days)."""
    rng = random.Random(seed)
    out = []
    t = T0
    while t < T0 + days * 86400:
        d = (t - T0) / 86400
        if not any(a <= d < b for a, b in gaps):
            out.append((t, weekday_lot(t, capacity, rng)))
        t += cadence + rng.randint(0, cadence // 2)
    return out


def fed(obs, capacity=200, until=math.inf) -> LotForecaster:
    f = LotForecaster(capacity=capacity, timezone="Europe/Berlin", region="DE-BY")
    for ts, occ in obs:
        if ts > until:
            break
        f.observe(ts, occ)
    return f


HORIZONS = [0, 900, 3600, 3 * 3600, 6 * 3600, 86400, 2 * 86400]

gap_lists = st.lists(
    st.tuples(st.floats(0, 12), st.floats(0.05, 3)).map(lambda p: (p[0], p[0] + p[1])), max_size=3
)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cadence=st.sampled_from([120, 300, 900, 3600]),
    gaps=gap_lists,
    cut=st.floats(0.5, 11.5),
    later_seed=st.integers(0, 10_000),
)
def test_prediction_at_now_ignores_what_comes_after(seed, cadence, gaps, cut, later_seed):
    """Feeding observations after `now` (whatever they are) changes nothing predicted at `now`."""
    obs = stream(seed, 12, cadence, gaps)
    now = T0 + cut * 86400
    before = [o for o in obs if o[0] <= now]
    after_a = [o for o in obs if o[0] > now]
    rng = random.Random(later_seed)
    after_b = [(t, rng.uniform(0, 200)) for t, _ in after_a[: rng.randint(0, len(after_a))]]
    a, b = fed(before), fed(before)
    expected = a.predict(now, HORIZONS)
    got = b.predict(now, HORIZONS)
    assert got == expected
    for ts, occ in after_b:
        b.observe(ts, occ)
    # It refuses to answer for an instant it has already seen past: it can never use the future.
    if after_b:
        with pytest.raises(ValueError):
            b.predict(now, HORIZONS)
    for ts, occ in after_a:
        a.observe(ts, occ)
    assert expected == fed(before).predict(now, HORIZONS)


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(1, 2000),
    values=st.lists(st.tuples(st.integers(1, 7200), st.floats(-50, 3000, allow_nan=False)), min_size=0, max_size=400),
    horizons=st.lists(st.floats(0, 2 * 86400), min_size=1, max_size=8),
    wait=st.floats(0, 30 * 86400),
)
def test_values_within_capacity_and_band_ordered(capacity, values, horizons, wait):
    """Every value in [0, capacity] and low <= occupied <= high, whatever it was fed."""
    f = LotForecaster(capacity=capacity, timezone="Europe/Berlin", region="DE-BB")
    t = T0
    for step, occ in values:
        t += step
        f.observe(t, occ)
    for p in f.predict(t + wait, horizons):
        assert 0 <= p.low <= p.occupied <= p.high <= capacity


def test_memory_bounded_over_two_years():
    """Two years of observations keep no more than two months did."""
    rng = random.Random(3)
    f = LotForecaster(capacity=300, timezone="Europe/Berlin", region="DE-BY")
    size_at = {}
    t = T0
    for day in range(730):
        # Four readings an hour on one day in four (the rest a gap): two years of calendar, quickly.
        if day % 4 == 0:
            for i in range(96):
                ts = t + day * 86400 + i * 900
                f.observe(ts, weekday_lot(ts, 300, rng))
        if day in (60, 729):
            size_at[day] = (f.state_size(), len(pickle.dumps(f)))
    assert size_at[729] == size_at[60]
    assert f.predict(T0 + 730 * 86400, [3600])[0].occupied >= 0


def test_not_enough_history_says_so():
    """A lot seen for three days has a reason and no forecast is claimed; a week and a day is enough."""
    obs = stream(1, 3, 300, [])
    f = fed(obs)
    assert f.reason() and "not enough history" in f.reason()
    f = fed(stream(1, MIN_DAYS + 1, 300, []))
    assert f.reason() is None


def test_learns_the_weekly_pattern():
    """After three weeks of a commuter lot, Tuesday 10:00 is forecast full-ish and Sunday empty-ish."""
    obs = stream(2, 21, 300, [])
    f = fed(obs)
    now = obs[-1][0]  # Sunday evening
    tue_10 = dt.datetime(2025, 3, 25, 10, tzinfo=BERLIN).timestamp()
    sun_10 = dt.datetime(2025, 3, 30, 10, tzinfo=BERLIN).timestamp()
    tue, sun = f.predict(now, [tue_10 - now, sun_10 - now])
    assert tue.occupied > 0.75 * 200 and sun.occupied < 0.25 * 200
    assert tue.low < tue.occupied < tue.high


@pytest.mark.parametrize(
    "region, day, expected",
    [
        ("DE-BY", dt.date(2025, 8, 15), (6, False)),  # Assumption Day: a holiday in Bavaria
        ("DE-BB", dt.date(2025, 8, 15), (4, True)),  # a Friday in Brandenburg's summer break
        ("DE-BY", dt.date(2025, 5, 30), (4, True)),  # Friday after Ascension: a bridge day
        ("DE-NW", dt.date(2025, 6, 19), (6, False)),  # Corpus Christi in North Rhine-Westphalia
        ("DE-BB", dt.date(2025, 6, 19), (3, False)),  # ... but not in Brandenburg
        ("DE-BY", dt.date(2025, 11, 18), (1, False)),  # an ordinary Tuesday in term
        ("XX-YY", dt.date(2025, 11, 18), (1, False)),  # an unknown region: plain weekdays
    ],
)
def test_day_info(region, day, expected):
    assert day_info(region, day) == expected


def test_a_feed_that_stops_changing_is_forecast_as_it_is():
    """Two weeks of a commuter lot, then the count sticks at 50 (a frozen feed, a closed barrier):
    a day later the forecast for the morning fill follows what the lot now does, not its profile."""
    obs = stream(4, 14, 300, [])
    t = obs[-1][0]
    while t < T0 + 15.3 * 86400:  # Tuesday 07:12 of the third week
        t += 300
        obs.append((t, 50.0))
    f, plain = fed(obs), LotForecaster(capacity=200, timezone="Europe/Berlin", region="DE-BY", adapt=False)
    for ts, occ in obs:
        plain.observe(ts, occ)
    (leaning,), (profile,) = f.predict(t, [3 * 3600]), plain.predict(t, [3 * 3600])
    assert abs(leaning.occupied - 50) < 10 < abs(profile.occupied - 50)
