"""The one write path: validation, de-duplication, ordering by ts, current state, dirty marks."""
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from .hypothesis_profiles import examples
from sqlalchemy import delete, func, select, update

import parking.ingest
from parking.extensions import db
from parking.ingest import SEQ_DUPLICATE_WINDOW, InvalidReading, SensorReading, UnknownBay, ingest, ingest_bulk
from parking.models import Bay, RollupDirty
from parking.models import StoredReading as Row


def count_readings():
    return db.session.scalar(select(func.count()).select_from(Row))


def test_ingest_stores_and_sets_current_state(city):
    now = time.time()
    result = ingest([SensorReading("PRW-001", True, now - 10, seq=1, battery=90)], now=now)
    assert result.stored == 1 and result.lots == {"PR-WEST"}
    bay = db.session.get(Bay, "PRW-001")
    assert (bay.state, bay.last_ts, bay.state_since, bay.battery) == (True, now - 10, now - 10, 90)
    assert bay.last_seen == now


def test_missing_ts_means_receipt_time(city):
    now = time.time()
    ingest([SensorReading("PRW-001", False)], now=now)
    assert db.session.get(Bay, "PRW-001").last_ts == now


@pytest.mark.parametrize(
    "second",
    [
        SensorReading("PRW-001", True, 1000.0, seq=7),  # same ts and state: a replay
        SensorReading("PRW-001", True, 1005.0, seq=7),  # same seq within the window: a retransmission
    ],
)
def test_duplicates_are_stored_once(city, second):
    now = 2000.0
    ingest([SensorReading("PRW-001", True, 1000.0, seq=7)], now=now)
    result = ingest([second], now=now)
    assert result.stored == 0 and result.duplicates == 1
    assert count_readings() == 1


def test_same_seq_long_after_is_a_new_reading(city):
    ingest([SensorReading("PRW-001", True, 1000.0, seq=0)], now=1000.0)
    ingest([SensorReading("PRW-001", False, 1000.0 + 7200, seq=0)], now=9000.0)
    assert count_readings() == 2


def test_duplicates_inside_one_batch(city):
    r = SensorReading("PRW-001", True, 1000.0, seq=3)
    assert ingest([r, r, r], now=2000.0).stored == 1


def test_future_reading_refused_and_nothing_stored(city):
    now = time.time()
    with pytest.raises(InvalidReading, match="future"):
        ingest([SensorReading("PRW-001", True, now - 5), SensorReading("PRW-002", True, now + 301)], now=now)
    assert count_readings() == 0


def test_unknown_bay_refuses_whole_batch(city):
    with pytest.raises(UnknownBay) as info:
        ingest([SensorReading("PRW-001", True, 10.0), SensorReading("NOPE-1", True, 10.0)], now=100.0)
    assert info.value.bays == ["NOPE-1"]
    assert count_readings() == 0


def test_empty_batch_refused(city):
    with pytest.raises(InvalidReading, match="empty"):
        ingest([], now=100.0)


def test_late_reading_keeps_newest_as_current_and_fixes_since(city):
    ingest([SensorReading("GAR-001", True, 1000.0)], now=5000.0)
    ingest([SensorReading("GAR-001", True, 1600.0)], now=5000.0)
    bay = db.session.get(Bay, "GAR-001")
    assert (bay.state, bay.state_since) == (True, 1000.0)
    # A late "free" between the two splits the run: occupied since 1600 now.
    ingest([SensorReading("GAR-001", False, 1300.0)], now=5000.0)
    db.session.expire_all()
    bay = db.session.get(Bay, "GAR-001")
    assert (bay.state, bay.last_ts, bay.state_since) == (True, 1600.0, 1600.0)


def test_stale_gap_restarts_since(city):
    ingest([SensorReading("GAR-002", False, 1000.0)], now=9000.0)
    ingest([SensorReading("GAR-002", False, 1000.0 + 1801)], now=9000.0)
    assert db.session.get(Bay, "GAR-002").state_since == 2801.0


def test_dirty_marks_cover_ts_to_ts_plus_stale(city):
    # 2026-03-29 00:40 local (UTC+1) = 23:40 UTC the day before; stale 1800 reaches 01:10.
    ts = 1774738800.0 + 40 * 60  # 2026-03-28T23:40:00Z
    ingest([SensorReading("STR-001", True, ts)], now=ts + 10)
    hours = sorted(h for (h,) in db.session.execute(select(RollupDirty.hour_start)))
    assert hours == [1774738800, 1774742400]


def test_remark_bumps_version(city):
    ingest([SensorReading("STR-001", True, 1000.0)], now=1000.0)
    ingest([SensorReading("STR-002", True, 1001.0)], now=1001.0)
    versions = {v for (v,) in db.session.execute(select(RollupDirty.version))}
    assert 2 in versions


def test_bulk_ingest_in_chunks(city):
    readings = [SensorReading("GAR-003", i % 2 == 0, 1000.0 + 60 * i, seq=i) for i in range(250)]
    assert ingest_bulk(readings, chunk=100) == 250
    assert ingest_bulk(readings, chunk=100) == 0  # idempotent
    bay = db.session.get(Bay, "GAR-003")
    assert bay.last_ts == 1000.0 + 60 * 249 and bay.last_seen == 1000.0 + 60 * 249


def reference_dedupe(readings):
    """Brute force: a reading is new unless an earlier new one of its bay has its ts and state,
    or its seq within SEQ_DUPLICATE_WINDOW seconds."""
    kept = []
    for r in readings:
        if not any(
            k.bay == r.bay and ((k.ts == r.ts and k.occupied == r.occupied)
                                or (r.seq is not None and k.seq == r.seq and abs(k.ts - r.ts) <= SEQ_DUPLICATE_WINDOW))
            for k in kept
        ):
            kept.append(r)
    return {(r.bay, r.ts, r.occupied, r.seq) for r in kept}


BASE = 1_000_000.0
readings_strategy = st.builds(
    SensorReading,
    bay=st.sampled_from(["PRW-001", "PRW-002", "GAR-001"]),
    occupied=st.booleans(),
    ts=st.sampled_from([BASE, BASE + 1, BASE + 30]) | st.integers(0, 8000).map(lambda s: BASE + s),
    seq=st.none() | st.integers(0, 3),
)


@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(readings_strategy, min_size=1, max_size=8), min_size=1, max_size=5),
       small_batch=st.sampled_from([0, 500]))
def test_dedupe_matches_brute_force(city, batches, small_batch, monkeypatch):
    """Whatever the batching and whichever look-up (whole window or named ts/seq values), the
    stored readings are the brute-force reference's."""
    db.session.execute(delete(Row))
    db.session.execute(update(Bay).values(state=None, last_ts=None, state_since=None, last_seen=None))
    db.session.commit()
    monkeypatch.setattr(parking.ingest, "SMALL_BATCH", small_batch)
    counted = sum(ingest(batch, now=BASE + 9000).stored for batch in batches)
    stored = {tuple(row) for row in db.session.execute(select(Row.bay_id, Row.ts, Row.occupied, Row.seq))}
    expected = reference_dedupe([r for batch in batches for r in batch])
    assert stored == expected
    assert counted == len(expected)  # what ingest reports (and updates bays and marks from)


@pytest.mark.parametrize("ts", [0.0, 1.0, 157766400.0, 19_999.0 * 86400])
def test_a_sensors_reading_older_than_the_backlog_is_refused(city, ts):
    now = 20_000.0 * 86400 + 0.5  # 2024-10-04
    with pytest.raises(InvalidReading, match=r"^bay PRW-001: ts \d+ is [\d.]+ days old \(limit 1 days, PARKING_MAX_BACKLOG_DAYS\)$"):
        parking.ingest.prepare(db.session, [SensorReading("PRW-001", True, ts)], now=now, backlog_days=1)
    # Just inside the window, and history an operator loads (no window), are taken.
    inside = parking.ingest.prepare(db.session, [SensorReading("PRW-001", True, now - 86400 + 1)], now=now, backlog_days=1)
    assert [r.ts for r in inside] == [now - 86400 + 1]
    assert [r.ts for r in parking.ingest.prepare(db.session, [SensorReading("PRW-001", True, ts)], now=now)] == [ts]


def test_the_simulators_backfill_is_not_bound_by_the_backlog_window(city):
    from gateway.simulator.history import backfill

    now = time.time() - 60 * 86400  # history of two months ago, twice PARKING_MAX_BACKLOG_DAYS
    backfill(city, 0.1, now=now, seed=5)
    assert count_readings() > 0
    assert db.session.scalar(select(func.max(Row.ts))) <= now

