"""The forecaster of one lot: occupied bays expected at now + h, with an 80 % band (contract §6).

Pure: no Flask, no database, no I/O beyond reading the shipped model file once at import.

How it forecasts (details and measured errors in docs/forecast.md):

- It keeps the lot's recent past on a 15-minute grid (a ring of the last two weeks; the value of
  a grid point is the last observation at or before it, carried forward at most 6 hours, so a
  data gap stays a gap) and a **weekly profile** per local day kind (Monday ... Sunday; public
  holidays count as Sundays) and 15-minute slot, an exponentially forgetting mean, so it follows
  the seasons and a lot's slow changes.
- School-holiday weekdays and bridge days do not update the weekday profile; they update a
  separate per-slot **holiday offset** (how much such a day differs from a term day at that
  time), which is added on such days. Regions' public and school holidays come from the
  `holidays` package (ISO 3166-2 subdivisions such as DE-BY; Bavaria's Assumption Day included).
- The forecast for target T = now + h is the profile at T plus how today differs from the profile
  (now, the last hour, the last four hours, the last day; yesterday at T), the day's trend (the
  last 30 and 60 minutes), how the same times 1-3 weeks ago and yesterday changed towards T, each
  weighted by a coefficient that depends on h: a difference seen now fades with the horizon. The
  coefficients and the band's quantiles are a small model fitted on real traces by
  `tools/train_forecast.py` (stored in `parking/data/forecast_model.json`); everything else is
  learned per lot.
- Per lot and horizon it keeps score of the model and of "as now" (persistence) on its own
  outcomes, and leans towards "as now" where that has lately been the better of the two (an
  event, a feed that stopped changing).
- The 80 % band scales with how much this lot, at that day kind and slot, usually strays from its
  profile (an exponentially forgetting mean absolute deviation), times per-horizon quantiles.
- An observation older than 6 hours is not "today": the forecast falls back to the profile.

Memory is fixed at construction (about 20,000 numbers), however long the lot is observed.
(Over 400 lines on purpose: the grid, the profile, the features and what learns from the lot's
outcomes are one state that every part reads; split, each module would reach into the others.)
"""
from __future__ import annotations

import datetime as dt
import json
import math
from array import array
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Sequence
from zoneinfo import ZoneInfo

STEP = 900  # seconds per grid point
DAY_POINTS = 96
RING = 23 * DAY_POINTS  # grid points kept: the same time 1-3 weeks back, for targets up to 48 h ahead
MAX_CARRY = 6 * 3600  # an observation speaks for at most this long
KINDS = 7  # Monday..Sunday; public holidays use Sunday's
MIN_DAYS = 7  # a forecast needs a week of history: every day kind seen once
DAY_HOURS = (6, 22)  # the band learns from daytime targets only: calm nights would narrow it
BAND_STEP = 0.01  # step of the band's quantile trackers (normalised residual units)
GROUP_HOURS = (9, 13, 17)  # boundaries of the time-of-day groups, local hours
STRAY_RATE = 0.001  # the lot's mean distance from its profile follows about the last 15 days
STRAY_DEFAULT = 0.08  # ... and before it is known (a typical lot of the traces)
STALE_AFTER = 900  # a last value older than the feeds' usual cadence moves the forecast to later knots
LEARN_EVERY = 4  # the band and the lean learn from forecasts made every hour (cheap; plenty of outcomes)
# Leaning towards "as now" (see LotForecaster._lean): the errors' forgetting rate per hourly
# forecast, faster for short horizons (at 1 h about the last five daytime hours, at 24 h the last
# three days); fitted on the tuning months, like the model.
ERR_RATE_1H, ERR_RATE_POWER, ERR_RATE_MAX = 0.2, 0.7, 0.3
ERR_START = 0.02  # both errors start equal: no lean until outcomes say so
LEAN_GAIN = 2.0  # lean = gain x (model's error - as now's) / model's error, within 0-1
MODEL_PATH = Path(__file__).with_name("data") / "forecast_model.json"
NAN = math.nan


class Forecast(NamedTuple):
    """Expected occupied bays at one horizon, with its 80 % interval."""

    occupied: float
    low: float
    high: float


def _load_model(path: Path = MODEL_PATH) -> dict:
    """The shipped coefficients (see tools/train_forecast.py)."""
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


MODEL = _load_model()


# ---- calendar ---------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def _holiday_sets(region: str, year: int) -> tuple[frozenset, frozenset]:
    """(public holidays, school holidays) of one region and year; unknown regions have none."""
    # Imported on first use: it takes about a second, which every process that builds the app
    # (the gateway's writer among them) would otherwise pay at start.
    import holidays

    country, _, subdiv = region.partition("-")
    try:
        cats = [holidays.PUBLIC]
        cls = holidays.country_holidays(country, subdiv=subdiv or None, years=year)
        supported = getattr(cls, "supported_categories", ())
        if "catholic" in supported and country == "DE":
            cats.append("catholic")  # e.g. Assumption Day in most of Bavaria
        public = holidays.country_holidays(country, subdiv=subdiv or None, years=year, categories=cats)
        school = (
            holidays.country_holidays(country, subdiv=subdiv or None, years=year, categories=("school",))
            if "school" in supported
            else {}
        )
    except (NotImplementedError, KeyError, ValueError):
        # A region the holidays package does not know: forecast from the weekly profile alone
        # rather than refuse the lot (the lot's data still shapes its own profile).
        return frozenset(), frozenset()
    return frozenset(public), frozenset(school)


@lru_cache(maxsize=8192)
def day_info(region: str, day: dt.date) -> tuple[int, bool]:
    """(day kind 0-6 with public holidays as Sunday, whether people are off: school holiday or bridge day)."""
    public, school = _holiday_sets(region, day.year)
    if day in public:
        return 6, False
    wd = day.weekday()
    if wd >= 5:
        return wd, False
    off = day in school or (day.month == 12 and day.day in (24, 31))
    if not off:
        # A bridge day: a weekday between a public holiday and the weekend.
        prev_day, next_day = day - dt.timedelta(days=1), day + dt.timedelta(days=1)
        off = (wd == 4 and prev_day in _holiday_sets(region, prev_day.year)[0]) or (
            wd == 0 and next_day in _holiday_sets(region, next_day.year)[0]
        )
    return wd, off


@lru_cache(maxsize=65536)
def _local_point(tzname: str, point: int) -> tuple[dt.date, int]:
    """(local date, slot of the local day 0-95) of a grid point (DST-aware)."""
    local = dt.datetime.fromtimestamp(point * STEP, ZoneInfo(tzname))
    return local.date(), min((local.hour * 60 + local.minute) // 15, DAY_POINTS - 1)


def _group(slot: int) -> int:
    """Time-of-day group of a target slot: how long a difference lasts depends on the phase of
    the day (morning fill, midday, afternoon, evening)."""
    return sum(slot >= b * 4 for b in GROUP_HOURS)


# ---- the forecaster ---------------------------------------------------------------------------

class LotForecaster:
    """Forecasts one lot's occupied bays from what it has observed (contract §6)."""

    def __init__(
        self,
        capacity: float,
        timezone: str = "Europe/Berlin",
        region: str = "DE-BY",
        model: dict | None = None,
        adapt: bool | None = None,
    ):
        if not capacity > 0:
            raise ValueError("capacity must be positive")
        ZoneInfo(timezone)  # fail early on an unknown zone
        self.capacity = float(capacity)
        self.timezone = timezone
        self.region = region
        self._m = model or MODEL
        self._alpha = float(self._m["alpha"])
        self._knots = [float(k) * 3600 for k in self._m["knots_h"]]
        self._floor = float(self._m.get("band_floor", 0.01))
        n = KINDS * DAY_POINTS
        self._ring = array("d", [NAN]) * RING  # occupancy fraction per grid point
        self._dev = array("d", [NAN]) * RING  # its difference from the profile when it was settled
        self._ring_point = array("q", [-1]) * RING
        self._prof = array("d", [0.0]) * n  # weekly profile (fraction occupied)
        self._weight = array("d", [0.0]) * n  # how many days went into it (capped by forgetting)
        self._spread = array("d", [0.0]) * n  # mean |value - profile|: the band's scale
        self._off = array("d", [0.0]) * DAY_POINTS  # holiday offset per slot
        self._off_weight = array("d", [0.0]) * DAY_POINTS
        self._last_ts: float | None = None
        self._last_y = NAN
        self._next_point: int | None = None  # first grid point not yet settled
        self._known_points = 0
        self._ready = False  # once ready, always (weights never decrease)
        self._stray = STRAY_DEFAULT
        self._n_stray = 0
        # The band adapts to this lot: each forecast made at a settled grid point is kept (bounded:
        # one per knot and origin within the longest knot) and, once its target is settled, moves
        # this lot's quantiles of the normalised residual per knot.
        self._adapt = bool(self._m.get("adapt", True)) if adapt is None else adapt
        nk = len(self._knots)
        self._knot_points = [round(k / STEP) for k in self._knots]
        self._pend_len = max(self._knot_points) + 1
        self._pend = array("d", [0.0]) * (nk * self._pend_len * 4)  # forecast, band scale, model, "as now"
        self._pend_point = array("q", [-1]) * (nk * self._pend_len)
        self._q = array("d", [b for pair in self._m["band"] for b in pair])
        # ... and the forecast leans towards "as now" where, lately, that has been closer than the
        # model: per knot, an exponentially forgetting mean absolute error of each (lot by lot, a
        # feed that has stopped changing or a fair ground during its fair is no weekly pattern).
        self._err = array("d", [ERR_START]) * (2 * nk)  # (model, as now) per knot
        self._err_rate = [min(ERR_RATE_MAX, ERR_RATE_1H * (k / 3600) ** -ERR_RATE_POWER) for k in self._knots]

    # -- feeding --

    def observe(self, ts: float, occupied: float) -> None:
        """Take the occupied count at Unix time ts (non-decreasing)."""
        if self._last_ts is not None and ts < self._last_ts:
            raise ValueError("observations must come in time order")
        y = min(max(float(occupied) / self.capacity, 0.0), 1.0)
        self._settle_before(ts)
        self._last_ts = float(ts)
        self._last_y = y

    def _settle_before(self, ts: float) -> None:
        """Settle every grid point strictly before ts: its value can no longer change."""
        last_point = math.ceil(ts / STEP) - 1
        if self._next_point is None:
            self._next_point = last_point + 1
            return
        if last_point - self._next_point >= RING:
            self._next_point = last_point - RING + 1  # a long gap: points further back are unknown anyway
        for p in range(self._next_point, last_point + 1):
            known = self._last_ts is not None and p * STEP - self._last_ts <= MAX_CARRY
            self._settle(p, self._last_y if known else NAN)
        self._next_point = last_point + 1

    def _settle(self, point: int, y: float) -> None:
        """Store one grid point's value and learn from it."""
        i = point % RING
        self._ring[i] = y
        self._ring_point[i] = point
        if y != y:
            return
        self._known_points += 1
        dev = y - self._base(point)[0]
        self._dev[i] = dev
        # How far this lot usually strays from its profile (by day): a lot that follows events
        # more than the week gets more of today and less of the profile (features below).
        if self._ready and DAY_HOURS[0] * 4 <= _local_point(self.timezone, point)[1] < DAY_HOURS[1] * 4:
            self._n_stray += 1
            self._stray += max(STRAY_RATE, 1.0 / self._n_stray) * (abs(dev) - self._stray)
        self._update_profile(point, y)
        if self._adapt:
            self._learn(point, y)

    def _update_profile(self, point: int, y: float) -> None:
        """Fold a settled value into the weekly profile or the holiday offset."""
        day, slot = _local_point(self.timezone, point)
        kind, off = day_info(self.region, day)
        j = kind * DAY_POINTS + slot
        w = self._weight[j]
        if off and w > 0:
            # A school-holiday weekday: learn how it differs, keep the term profile clean.
            dev = y - self._prof[j]
            ow = self._off_weight[slot]
            a = max(self._alpha, 1.0 / (ow + 1.0))
            self._off[slot] += a * (dev - self._off[slot])
            self._off_weight[slot] = ow + 1.0
            return
        a = max(self._alpha, 1.0 / (w + 1.0))
        if w > 0:
            self._spread[j] += a * (abs(y - self._prof[j]) - self._spread[j])
        self._prof[j] += a * (y - self._prof[j])
        self._weight[j] = w + 1.0

    def _learn(self, point: int, y: float) -> None:
        """Score the forecasts this lot made for `point` and adapt; then forecast from `point`."""
        L = self._pend_len
        learn = DAY_HOURS[0] * 4 <= _local_point(self.timezone, point)[1] < DAY_HOURS[1] * 4
        pend, pp, q = self._pend, self._pend_point, self._q
        for k, kp in enumerate(self._knot_points):
            origin = point - kp
            slot = k * L + origin % L
            if pp[slot] != origin:
                continue
            pp[slot] = -1
            if not learn:
                continue
            j = 4 * slot
            yg, scale, ym, yp = pend[j], pend[j + 1], pend[j + 2], pend[j + 3]
            if yp == yp:
                r, err = self._err_rate[k], self._err
                err[2 * k] += r * (abs(y - ym) - err[2 * k])
                err[2 * k + 1] += r * (abs(y - yp) - err[2 * k + 1])
            # Band: move this knot's quantiles of the normalised residual towards 10 % / 90 %.
            u = (y - yg) / scale
            q[2 * k] += BAND_STEP * (0.1 - (u < q[2 * k]))
            q[2 * k + 1] += BAND_STEP * (0.9 - (u < q[2 * k + 1]))
        if point % LEARN_EVERY or self.reason() is not None:
            return
        now = point * STEP
        anomalies = self._anomalies(now)
        y_now = self._last_y if anomalies[5] <= MAX_CARRY else NAN
        for k, h in enumerate(self._knots):
            x, base, spread, g = self._features(now, h, anomalies)
            c = self._m["coef"][k][g]
            j = 4 * (k * L + point % L)
            ym = min(max(base + sum(a * b for a, b in zip(c, x)), 0.0), 1.0)
            pend[j] = ym if y_now != y_now else ym + self._lean(k) * (y_now - ym)
            pend[j + 1] = spread + self._floor
            pend[j + 2] = ym
            pend[j + 3] = y_now
            pp[k * L + point % L] = point

    def _lean(self, k: int) -> float:
        """How far knot k's forecast moves from the model towards "as now" (0-1): in proportion to
        how much smaller the error of "as now" has lately been than the model's."""
        em, ep = self._err[2 * k], self._err[2 * k + 1]
        return min(max(LEAN_GAIN * (em - ep) / em, 0.0), 1.0) if em > 0 else 0.0

    # -- reading --

    @property
    def last_ts(self) -> float | None:
        """Time of the newest observation (predict refuses earlier instants)."""
        return self._last_ts

    def history_days(self) -> float:
        """Days of known history seen so far."""
        return self._known_points / DAY_POINTS

    def reason(self) -> str | None:
        """Why this forecaster cannot forecast yet, or None when it can."""
        if self._ready:
            return None
        self._ready = self.history_days() >= MIN_DAYS and min(self._weight) > 0
        if not self._ready:
            return (
                f"not enough history: {self.history_days():.1f} days of data, a forecast needs "
                f"{MIN_DAYS} days with every weekday seen"
            )
        return None

    def _dev_at(self, point: int) -> float:
        """How a settled grid point differed from the profile, NaN when unknown or out of range."""
        i = point % RING
        return self._dev[i] if self._ring_point[i] == point else NAN

    def _base(self, point: int) -> tuple[float, float]:
        """(profile value, usual spread) at a grid point, holiday offset applied."""
        day, slot = _local_point(self.timezone, point)
        kind, off = day_info(self.region, day)
        j = kind * DAY_POINTS + slot
        if self._weight[j] > 0:
            base, spread = self._prof[j], self._spread[j]
        else:
            # This kind was never seen at this slot: the mean of the kinds that were.
            seen = [k * DAY_POINTS + slot for k in range(KINDS) if self._weight[k * DAY_POINTS + slot] > 0]
            if not seen:
                return (self._last_y if self._last_y == self._last_y else 0.5), 0.25
            base = sum(self._prof[k] for k in seen) / len(seen)
            spread = max(self._spread[k] for k in seen)
        if off and self._off_weight[slot] > 0:
            base += self._off[slot]
        return base, spread

    def features(self, now: float, horizon: float) -> tuple[list[float], float, float, int]:
        """(features, profile at the target, band scale, time-of-day group) for now + horizon (training)."""
        return self._features(now, horizon, self._anomalies(now))

    def _y_at(self, point: int) -> float:
        """The settled occupancy fraction of a grid point, NaN when unknown or out of range."""
        i = point % RING
        return self._ring[i] if self._ring_point[i] == point else NAN

    def _anomalies(self, now: float) -> tuple:
        """What the features of every horizon share, from `now`: (anomaly now, mean anomaly last
        hour, last 4 hours, 15 minutes ago, profile now, age of the last observation, change over
        the last 30 and 60 minutes, anomaly at this time yesterday, mean anomaly of the last 24
        hours, the value now): how today differs from the profile and where it is heading."""
        age = now - self._last_ts if self._last_ts is not None else math.inf
        p_now = round(now / STEP)
        b0 = self._base(p_now)[0]
        # Yesterday's and the last day's differences are history, known even after a gap: a lot
        # that has been fuller than usual all week is likely to stay so.
        d_yday = self._dev_at(p_now - DAY_POINTS)
        d_yday = 0.0 if d_yday != d_yday else d_yday
        total, count = 0.0, 0
        for back in range(1, DAY_POINTS + 1):
            i = (p_now - back) % RING
            d = self._dev[i]
            if self._ring_point[i] == p_now - back and d == d:
                total += d
                count += 1
        a24 = total / count if count else 0.0
        if age > MAX_CARRY:
            return 0.0, 0.0, 0.0, 0.0, b0, age, 0.0, 0.0, d_yday, a24, b0
        y0 = self._last_y
        a0 = y0 - b0
        sums = [0.0, 0.0]
        counts = [0, 0]
        a15 = a0
        for back in range(1, 17):
            i = (p_now - back) % RING
            d = self._dev[i]
            if self._ring_point[i] != p_now - back or d != d:
                continue
            if back == 1:
                a15 = d
            if back <= 4:
                sums[0] += d
                counts[0] += 1
            sums[1] += d
            counts[1] += 1
        a1 = sums[0] / counts[0] if counts[0] else a0
        a4 = sums[1] / counts[1] if counts[1] else a1
        # The day's trend: how the lot moved over the last half hour and hour.
        y30, y60 = self._y_at(p_now - 2), self._y_at(p_now - 4)
        s30 = y0 - y30 if y30 == y30 else 0.0
        s60 = y0 - y60 if y60 == y60 else 0.0
        return a0, a1, a4, a15, b0, age, s30, s60, d_yday, a24, y0

    def _features(self, now: float, horizon: float, anomalies) -> tuple[list[float], float, float, int]:
        a0, a1, a4, a15, b0, _, s30, s60, d_yday, a24, y0 = anomalies
        target = round((now + horizon) / STEP)
        base, spread = self._base(target)
        # How the same times 1-3 weeks ago differed from the profile: at the target (a recent
        # shift the slow profile has not caught up with yet) and its change from now to the
        # target (the Helsinki method's delta, relative to the profile's).
        lw_dev = 0.0
        level = delta = 0.0
        n = 0
        p_now = round(now / STEP)
        raw_delta, n_raw = 0.0, 0
        for k in (1, 2, 3):
            y_t, y_n = self._y_at(target - 7 * k * DAY_POINTS), self._y_at(p_now - 7 * k * DAY_POINTS)
            if y_t == y_t and y_n == y_n:
                raw_delta += y_t - y_n  # the Helsinki method's own delta, in the lot's raw values
                n_raw += 1
            d_t = self._dev_at(target - 7 * k * DAY_POINTS)
            if d_t != d_t:
                continue
            if k == 1:
                lw_dev = d_t
            d_n = self._dev_at(p_now - 7 * k * DAY_POINTS)
            level += d_t
            delta += d_t - (d_n if d_n == d_n else d_t)
            n += 1
        if n:
            level /= n
            delta /= n
        # Today's difference carried as a share of occupied and of free spaces: a lot 20 % fuller
        # than usual at 07:00 is not 20 points fuller at noon when it is full by then.
        occ = min(max(a0 * base / max(b0, 0.05), -1.0), 1.0)
        free = min(max(a0 * (1.0 - base) / max(1.0 - b0, 0.05), -1.0), 1.0)
        # The profile's change from now to the target: with a weight below 1 the forecast leans
        # towards "as now" (persistence); scaled by how much this lot strays from its profile.
        change = base - b0
        stray = self._stray / STRAY_DEFAULT
        # ... and that change as far as the room left allows: a lot 95 % full cannot fill by 20 points.
        room = change * ((1.0 - y0) / max(1.0 - b0, 0.05) if change > 0 else y0 / max(b0, 0.05))
        # Yesterday and the day before: how they differed at the target time, and how yesterday
        # changed from now's time to the target's (a day-to-day pattern the weekly profile lags).
        d_t1 = self._dev_at(target - DAY_POINTS)
        d_t2 = self._dev_at(target - 2 * DAY_POINTS)
        y_t1, y_n1 = self._y_at(target - DAY_POINTS), self._y_at(p_now - DAY_POINTS)
        yday_change = y_t1 - y_n1 if y_t1 == y_t1 and y_n1 == y_n1 else 0.0
        x = [1.0, a0, a1, a4, lw_dev, a15, occ, free, level, delta, change, change * stray, a0 * stray,
             s30, s60, raw_delta / n_raw if n_raw else 0.0, 0.0 if d_t1 != d_t1 else d_t1,
             0.0 if d_t2 != d_t2 else d_t2, room, d_yday, yday_change, a24]
        return x, base, spread, _group(_local_point(self.timezone, target)[1])

    def _interpolation(self, horizon: float) -> tuple[int, float]:
        """(knot index i, weight w): a horizon lies between knots i and i + 1."""
        knots = self._knots
        if horizon <= knots[0]:
            return 0, 0.0
        if horizon >= knots[-1]:
            return len(knots) - 2, 1.0
        i = next(k for k in range(len(knots) - 1) if knots[k + 1] >= horizon)
        return i, (horizon - knots[i]) / (knots[i + 1] - knots[i])

    def predict(self, now: float, horizons: Sequence[float]) -> list[Forecast]:
        """Expected occupied bays at now + h for each h, from what was observed up to now."""
        if self._last_ts is not None and now < self._last_ts:
            raise ValueError("predict(now) must not be earlier than the latest observation")
        anomalies = self._anomalies(now)
        stale = anomalies[5]
        age = stale if stale != math.inf else 0.0
        cap = self.capacity
        coefs, q = self._m["coef"], self._q
        out = []
        for h in horizons:
            x, base, spread, g = self._features(now, h, anomalies)
            # A stale last value is as far from the target as its age adds (beyond the feeds' usual
            # cadence, which the model was fitted with: shifting by that too would blend in the
            # longer knot's weights; it cost 0.02 x Helsinki at 1 h).
            i, w = self._interpolation(h + max(0.0, min(age, MAX_CARRY) - STALE_AFTER))
            y0 = sum(c * v for c, v in zip(coefs[i][g], x))
            y1 = sum(c * v for c, v in zip(coefs[i + 1][g], x))
            y = min(max(base + y0 + w * (y1 - y0), 0.0), 1.0)
            if stale <= MAX_CARRY:
                lean = self._lean(i) + w * (self._lean(i + 1) - self._lean(i))
                y += lean * (self._last_y - y)
            q_lo = q[2 * i] + w * (q[2 * i + 2] - q[2 * i])
            q_hi = q[2 * i + 1] + w * (q[2 * i + 3] - q[2 * i + 1])
            scale = spread + self._floor
            lo = min(max(y + q_lo * scale, 0.0), y)
            hi = max(min(y + q_hi * scale, 1.0), y)
            out.append(Forecast(y * cap, lo * cap, hi * cap))
        return out

    def state_size(self) -> int:
        """Numbers held in memory (fixed at construction; what the memory test checks)."""
        held = (self._ring, self._dev, self._ring_point, self._prof, self._weight, self._spread, self._off, self._off_weight,
                self._pend, self._pend_point, self._q, self._err)
        return sum(len(a) for a in held) + 2
