"""Rollup: incremental equals a full recompute; late readings recompute exactly their hours;
reports never show a stale number, rolled up or not."""
import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from .hypothesis_profiles import examples
from sqlalchemy import delete, select

from parking.extensions import db
from parking.ingest import SensorReading, ingest
from parking.models import HourlyUtilization, Lot, RollupDirty
from parking.models import StoredReading as Row
from parking.occupancy import local_midnight
from parking.rollup import compute_hours, run_rollup, utilization

DAY = dt.date(2026, 3, 28)  # the day before the spring-forward change in Europe/Berlin
START = local_midnight(DAY, "Europe/Berlin")
END = START + 3 * 86400
BAYS = ["GAR-001", "GAR-002", "GAR-003"]


def clear_history():
    for table in (Row, HourlyUtilization, RollupDirty):
        db.session.execute(delete(table))
    db.session.commit()


def stored():
    return {
        r.hour_start: (r.occupied_seconds, r.known_seconds, r.peak_occupied, r.arrivals, r.bays)
        for r in db.session.scalars(select(HourlyUtilization).where(HourlyUtilization.lot_id == "GARAGE"))
    }


def as_tuple(f):
    return (f.occupied_seconds, f.known_seconds, f.peak_occupied, f.arrivals, f.bays)


reading = st.tuples(st.sampled_from(BAYS), st.integers(0, 2 * 24 * 60), st.booleans())
batches = st.lists(
    st.tuples(st.lists(reading, min_size=1, max_size=8), st.integers(0, 3 * 24 * 60)),
    min_size=1, max_size=6,
)


@settings(max_examples=examples(25), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches)
def test_incremental_rollup_equals_full_recompute(city, batches):
    clear_history()
    for items, rollup_minute in batches:
        readings = [SensorReading(bay, occ, START + 60 * minute) for bay, minute, occ in items]
        ingest(readings, now=END)
        run_rollup(now=START + 60 * rollup_minute)  # hours ending later stay dirty
    run_rollup(now=END)
    assert db.session.scalar(select(RollupDirty.hour_start)) is None  # everything rolled up
    hours = [START + 3600 * i for i in range(3 * 24 - 1)]  # 71 hours: 29 March has 23
    full = {int(f.hour_start): as_tuple(f) for f in compute_hours("GARAGE", hours, 1800, END)}
    incremental = stored()
    only_known = {h: v for h, v in full.items() if v[1] > 0}
    assert only_known == {h: v for h, v in incremental.items() if v[1] > 0}
    assert all(full[h] == v for h, v in incremental.items())
    lot = db.session.get(Lot, "GARAGE")
    served = {int(f.hour_start): as_tuple(f) for f in utilization(lot, START, END - 3600, now=END)}
    assert served == full


def test_late_reading_is_reflected_before_and_after_rollup(city):
    noon = START + 12 * 3600
    ingest([SensorReading("GAR-001", False, noon), SensorReading("GAR-001", False, noon + 1500)], now=END)
    run_rollup(now=END)
    lot = db.session.get(Lot, "GARAGE")
    before = utilization(lot, noon, noon + 3600, now=END)[0]
    assert before.occupied_seconds == 0
    # A reading a day late: the bay was occupied from 12:10 (the next reading at 12:25 frees it).
    ingest([SensorReading("GAR-001", True, noon + 600)], now=END)
    dirty = sorted(h for (h,) in db.session.execute(select(RollupDirty.hour_start)))
    assert dirty == [noon]  # [12:10, 12:40] touches the 12:00 hour only
    assert utilization(lot, noon, noon + 3600, now=END)[0].occupied_seconds == 900  # no rollup yet
    run_rollup(now=END)
    assert stored()[noon][0] == 900
    assert db.session.scalar(select(RollupDirty.hour_start)) is None


def test_unfinished_hour_is_computed_not_stored(city):
    now = START + 10 * 3600 + 1200  # 10:20
    ingest([SensorReading("GAR-002", True, START + 10 * 3600)], now=now)
    run_rollup(now=now)
    assert stored() == {}
    lot = db.session.get(Lot, "GARAGE")
    hour = utilization(lot, START + 10 * 3600, START + 11 * 3600, now=now)[0]
    assert (hour.occupied_seconds, hour.span_seconds, hour.coverage_pct) == (1200, 1200, 16.7)  # 1 of 6 bays known


def test_rollup_cli(runner, city):
    ingest([SensorReading("GAR-003", True, START + 60)], now=END)
    result = runner.invoke(args=["rollup"])
    assert result.exit_code == 0 and "rolled up 1 hours of 1 lots" in result.output
    result = runner.invoke(args=["rollup", "--full"])
    assert result.exit_code == 0, result.output
    assert "marked 1 hours" in result.output and "rolled up 1 hours" in result.output
    result = runner.invoke(args=["rollup"])
    assert result.exit_code == 0 and "rolled up 0 hours of 0 lots" in result.output
    result = runner.invoke(args=["rollup", "--ful"])
    assert result.exit_code == 2 and "--full" in result.output  # click suggests the option meant


def test_rollup_batches_give_the_same_figures(city, monkeypatch):
    """Rollup and reports in many small batches (a few lot-hours each, one lot per IN list, one
    lot-hour per readings query) store and serve exactly what one batch does."""
    import parking.rollup as rollup

    for i, bay in enumerate(["GAR-001", "GAR-002", "PRW-001", "PRW-002", "STR-001"]):
        t = START + 3600 * (3 + 7 * i) + 60 * i
        ingest([SensorReading(bay, True, t), SensorReading(bay, False, t + 2400), SensorReading(bay, True, t + 9000)], now=END)
    lots = list(db.session.scalars(select(Lot).order_by(Lot.id)))

    def figures():
        served = {lot.id: [as_tuple(f) for f in fs] for lot, fs in
                  rollup.utilization_of_lots(lots, lambda _: START, lambda _: END, now=END)}
        return served, {lot.id: {r.hour_start: (r.occupied_seconds, r.known_seconds, r.peak_occupied, r.arrivals)
                                 for r in db.session.scalars(select(HourlyUtilization).where(HourlyUtilization.lot_id == lot.id))}
                        for lot in lots}

    whole_before = figures()[0]  # all computed on the fly: nothing rolled up yet
    calls = []
    real_batches = rollup._batches
    monkeypatch.setattr(rollup, "_batches", lambda items, size: calls.append(1) or real_batches(items, size))
    monkeypatch.setattr(rollup, "BATCH_ROWS", 5)
    monkeypatch.setattr(rollup, "IN_CHUNK", 1)
    monkeypatch.setattr(rollup, "LOT_HOURS_PER_QUERY", 1)
    assert list(real_batches(range(12), lambda n: 2)) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
    stats = run_rollup(now=END)
    assert stats.lots == 3 and stats.hours > 0
    small_served, small_stored = figures()
    monkeypatch.setattr(rollup, "BATCH_ROWS", 50_000)
    monkeypatch.setattr(rollup, "IN_CHUNK", 500)
    monkeypatch.setattr(rollup, "LOT_HOURS_PER_QUERY", 1_000)
    clear_history()
    for i, bay in enumerate(["GAR-001", "GAR-002", "PRW-001", "PRW-002", "STR-001"]):
        t = START + 3600 * (3 + 7 * i) + 60 * i
        ingest([SensorReading(bay, True, t), SensorReading(bay, False, t + 2400), SensorReading(bay, True, t + 9000)], now=END)
    run_rollup(now=END)
    large_served, large_stored = figures()
    assert small_served == large_served == whole_before
    assert small_stored == large_stored and sum(len(v) for v in large_stored.values()) == stats.hours
    assert len(calls) >= 2
