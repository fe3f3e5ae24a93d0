"""Compaction end to end, on SQLite and PostgreSQL: a backfilled month's reports are the same
before and after `flask compact --all`; the settle window keeps recent readings raw; late
readings that land in compacted history; the seq duplicate rule; the scheduler's job."""
from __future__ import annotations

import datetime
import io
import time

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select, text

from gateway.simulator.history import backfill
from parking.compaction import COMPACT_HORIZON, compact
from parking.extensions import db
from parking.ingest import SensorReading, ingest
from parking.models import BayRun, StoredReading
from parking.rollup import mark_all, run_rollup

LOTS = ("PR-WEST", "GARAGE", "STREET")
# The month ends after the night clocks went back in Berlin (2026-10-25): a 25-hour day inside it.
END = datetime.datetime(2026, 11, 5, 12, tzinfo=datetime.timezone.utc).timestamp()
FROM, TO = "2026-10-06", "2026-11-06"


def counts() -> tuple[int, int, int]:
    """(raw readings, runs, readings the runs stand for)."""
    return (db.session.scalar(select(func.count()).select_from(StoredReading)),
            db.session.scalar(select(func.count()).select_from(BayRun)),
            db.session.scalar(select(func.coalesce(func.sum(BayRun.readings), 0))))


def workbook_values(response) -> dict:
    """Every cell value of every sheet (the file's bytes carry a creation time)."""
    data = response.data
    response.close()  # a WSGI server closes the answer: that closes its temporary file
    book = load_workbook(io.BytesIO(data))
    return {sheet.title: [list(row) for row in sheet.iter_rows(values_only=True)] for sheet in book.worksheets}


def everything_a_planner_sees(client) -> dict:
    """Every figure of contract §4-§5 for the month, from the HTTP API."""
    query = f"from={FROM}&to={TO}"
    seen = {
        "csv": client.get(f"/api/reports/utilization.csv?{query}").data,
        "xlsx": workbook_values(client.get(f"/api/reports/utilization.xlsx?{query}")),
        "summary": client.get(f"/api/reports/summary?{query}").json,
    }
    for lot in LOTS:
        seen[f"utilization {lot}"] = client.get(f"/api/lots/{lot}/utilization?{query}").json
        seen[f"events {lot}"] = client.get(f"/api/lots/{lot}/events.csv?{query}").data
        # A range starting mid-month: the state before it comes from compacted history.
        seen[f"events {lot} late"] = client.get(f"/api/lots/{lot}/events.csv?from=2026-10-20&to={TO}").data
        seen[f"lot {lot}"] = [(b["id"], b["status"], b["since"]) for b in client.get(f"/api/lots/{lot}").json["properties"]["bays"]]
    for response in seen.values():
        assert response, "an empty answer proves nothing"
    return seen


@pytest.fixture
def month(city):
    """The test city with a simulated month of history, rolled up."""
    backfill(city, 30, now=END, seed=11)
    run_rollup()
    return city


def test_compacting_a_month_changes_no_figure(month, client, runner):
    before = everything_a_planner_sees(client)
    raw_before, _, _ = counts()

    result = runner.invoke(args=["compact", "--all"])
    assert result.exit_code == 0, result.output
    assert "folded" in result.output
    raw_after, runs, folded = counts()
    assert raw_after == 0  # all of it is older than the last two hours
    assert folded == raw_before  # every reading is counted in exactly one run
    assert runs < raw_before / 10

    # The stored hourly rows were computed before; recompute every hour from compacted history.
    mark_all()
    assert run_rollup().hours > 0
    assert everything_a_planner_sees(client) == before
    # And again: compacting what is compacted is a no-op.
    assert runner.invoke(args=["compact", "--all"]).exit_code == 0
    assert counts() == (0, runs, folded)


def test_the_settle_window_keeps_recent_readings_raw(city):
    now = time.time()
    backfill(city, 4, now=now, seed=4)
    city.config["RAW_RETENTION_DAYS"] = 2
    raw_before, _, _ = counts()
    result = compact(now=now)
    assert result.cutoff == pytest.approx(now - 2 * 86400)
    oldest_raw = db.session.scalar(select(func.min(StoredReading.ts)))
    newest_run = db.session.scalar(select(func.max(BayRun.last_ts)))
    assert oldest_raw >= result.cutoff > newest_run
    raw, _, folded = counts()
    assert 0 < folded < raw_before and raw + folded == raw_before


def hour_row(client, lot: str, hour: str) -> dict:
    """The lot's utilization row of one hour, e.g. "2026-10-01T09:00:00+00:00"."""
    start = datetime.datetime.fromisoformat(hour)
    end = (start + datetime.timedelta(hours=1)).isoformat()
    body = client.get(f"/api/lots/{lot}/utilization", query_string={"from": hour, "to": end}).json
    assert len(body["rows"]) == 1, body
    return body["rows"][0]


def test_late_readings_in_compacted_history(city, client):
    """A late reading repeating a folded run's state adds nothing; one contradicting it ends the
    run there, and the bay is unknown from the reading's reach to its next reading."""
    day = datetime.datetime(2026, 10, 1, tzinfo=datetime.timezone.utc).timestamp()
    # Bay STR-001 of STREET occupied from 06:00 to 18:00, a heartbeat every 10 minutes; STR-002 silent.
    ingest([SensorReading("STR-001", True, day + 6 * 3600 + k * 600) for k in range(73)], now=day + 86400)
    ingest([SensorReading("STR-001", False, day + 20 * 3600)], now=day + 86400)
    assert compact(everything=True).readings == 74
    assert counts() == (0, 2, 74)

    repeat = ingest([SensorReading("STR-001", True, day + 9 * 3600 + 5)])
    assert (repeat.stored, repeat.duplicates) == (0, 1)
    assert counts() == (0, 2, 74)

    nine = "2026-10-01T09:00:00+00:00"
    assert hour_row(client, "STREET", nine)["occupancy_pct"] == 100.0
    # The sensor's buffer: it saw the bay free at 10:00 (the car left and came back, say).
    contradiction = ingest([SensorReading("STR-001", False, day + 10 * 3600)])
    assert contradiction.stored == 1
    ten, noon = hour_row(client, "STREET", "2026-10-01T10:00:00+00:00"), \
        hour_row(client, "STREET", "2026-10-01T12:00:00+00:00")
    assert ten["occupancy_pct"] == 0.0 and ten["coverage_pct"] == 25.0  # free 10:00-10:30 (stale_after), STR-002 unknown
    assert noon["coverage_pct"] == 0.0  # nothing says what STR-001 was at noon any more
    events = client.get("/api/lots/STREET/events.csv?from=2026-10-01&to=2026-10-02").data.decode().splitlines()
    assert events[1:] == ["STR-001,2026-10-01T06:00:00+00:00,true", "STR-001,2026-10-01T10:00:00+00:00,false"]
    # Folding the late reading in changes none of it.
    mark_all()
    run_rollup()
    assert compact(everything=True).readings == 1
    assert counts() == (0, 3, 75)
    assert hour_row(client, "STREET", "2026-10-01T12:00:00+00:00")["coverage_pct"] == 0.0
    assert client.get("/api/lots/STREET/events.csv?from=2026-10-01&to=2026-10-02").data.decode().splitlines() == events


def test_the_seq_duplicate_rule_holds_after_compacting_everything(city):
    now = time.time()
    ingest([SensorReading("STR-001", True, now - 3 * 3600, seq=7)], now=now)
    first = ingest([SensorReading("STR-001", False, seq=8)], now=now - 60)  # ts at receipt
    assert first.stored == 1
    compact(everything=True)
    assert counts()[0] == 1  # the last COMPACT_HORIZON stays raw
    assert COMPACT_HORIZON >= 2 * 3600
    # The sensor did not hear the 2.04 and sends seq 8 again, stamped at receipt once more.
    again = ingest([SensorReading("STR-001", False, seq=8)], now=now)
    assert again.duplicates == 1


def test_the_scheduler_compacts_what_has_settled(city):
    from parking.jobs import compact_job

    backfill(city, 3, now=time.time(), seed=2)
    city.config["RAW_RETENTION_DAYS"] = 1
    compact_job(city)
    assert counts()[1] > 0


def test_on_postgresql_a_settled_day_is_folded_and_its_partition_dropped():
    """The deployed layout: raw readings in daily partitions; compaction folds each settled day
    and drops its partition whole, and a late reading for a dropped day still counts."""
    from parking import create_app

    from .conftest import empty_postgres_database

    now = time.time()
    with empty_postgres_database("compaction") as url:
        app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "STALE_AFTER": 1800,
                          "SENSOR_AUTH": "none", "LOTS_SNAPSHOT_SECONDS": 0, "RAW_RETENTION_DAYS": 2})
        with app.app_context():
            try:
                _fold_and_drop_days(app, now)
            finally:  # a failure must not leave a connection behind for another test to trip on
                db.session.remove()
                db.engine.dispose()


def _fold_and_drop_days(app, now: float) -> None:
    """The body of the test above, inside the app's context."""
    from parking.cli import init_db
    from parking.lots import import_lot_file
    from parking.partitions import ensure_partitions, raw_partitions_before

    from .conftest import CITY_FILE

    init_db()
    import_lot_file(CITY_FILE, "Europe/Berlin")
    ensure_partitions(db.session, now - 6 * 86400, now + 86400)
    db.session.commit()
    backfill(app, 5, now=now, seed=6)
    client = app.test_client()
    # Up to the hour before the current one: the hour under way changes as the clock moves on.
    query = {"from": time.strftime("%Y-%m-%d", time.gmtime(now - 6 * 86400)),
             "to": time.strftime("%Y-%m-%dT%H:00:00+00:00", time.gmtime(now - 3600))}

    def seen():
        return ([client.get(f"/api/lots/{lot}/events.csv", query_string=query).data for lot in LOTS],
                client.get("/api/reports/utilization.csv", query_string=query).data)

    run_rollup()
    before = seen()
    raw_before = counts()[0]
    days = raw_partitions_before(db.session, now - 2 * 86400)
    db.session.commit()
    assert len(days) >= 2
    result = compact(now=now)
    assert result.partitions_dropped == len(days)
    assert raw_partitions_before(db.session, now - 2 * 86400) == []
    raw, runs, folded = counts()
    assert raw + folded == raw_before and runs > 0
    mark_all()
    run_rollup()
    assert seen() == before

    # A late reading for a dropped day lands in the default partition and meets the runs.
    lo = days[0][1]
    late = ingest([SensorReading("STR-001", True, lo + 3600.5)], now=now)
    assert late.received == 1
    in_default = db.session.execute(
        text("SELECT count(*) FROM readings_default WHERE ts = :ts"), {"ts": lo + 3600.5}).scalar()
    assert in_default == late.stored


class StopAfter:
    """A stop event that is set once it has been looked at `n` times (a SIGTERM mid-compaction)."""

    def __init__(self, n: int):
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_a_stopping_process_ends_compaction_after_the_transaction_under_way(city):
    backfill(city, 3, now=time.time(), seed=3)
    raw_before = counts()[0]
    first = compact(everything=True, stop=StopAfter(1))
    assert first.stopped and 0 < first.readings < raw_before  # one step of 100 bays and a day
    raw, _, folded = counts()
    assert raw + folded == raw_before and folded == first.readings
    rest = compact(everything=True)
    assert not rest.stopped
    assert db.session.scalar(select(func.min(StoredReading.ts))) >= rest.cutoff  # the last two hours stay raw
    raw, _, folded = counts()
    assert raw + folded == raw_before and folded == first.readings + rest.readings


def test_the_scheduler_tells_a_running_job_to_stop_on_shutdown(city):
    from parking.jobs import Scheduling

    scheduling = Scheduling(city).start()
    assert not scheduling._stopping.is_set()
    scheduling.shutdown()
    assert scheduling._stopping.is_set()


def test_readings_of_several_bays_at_one_instant_keep_their_order_in_the_events(city, client):
    """Equal ts of two bays: the events CSV lists them in bay order, before compaction and after
    (the runs' ids are new, so an order by id alone changed it)."""
    t = datetime.datetime(2026, 10, 1, 8, tzinfo=datetime.timezone.utc).timestamp()
    ingest([SensorReading("STR-002", True, t)], now=t + 86400)  # stored first
    ingest([SensorReading("STR-001", True, t)], now=t + 86400)
    query = {"from": "2026-10-01", "to": "2026-10-02"}
    before = client.get("/api/lots/STREET/events.csv", query_string=query).data.decode().splitlines()
    assert before[1:] == ["STR-001,2026-10-01T08:00:00+00:00,true", "STR-002,2026-10-01T08:00:00+00:00,true"]
    compact(everything=True)
    assert counts()[0] == 0
    assert client.get("/api/lots/STREET/events.csv", query_string=query).data.decode().splitlines() == before
