"""The scheduled rollup job (parking/jobs.py): it rolls up what ingest marked, a real failure is
logged and leaves the marks for the next run, and the scheduler reports itself in /healthz
(its election: tests/test_leader.py)."""
import logging
import time

from sqlalchemy import func, select, text

from parking.extensions import db
from parking.ingest import SensorReading, ingest
from parking.jobs import rollup_job, start_scheduler
from parking.models import HourlyUtilization, RollupDirty


def _marked() -> int:
    return db.session.scalar(select(func.count()).select_from(RollupDirty))


def _stored_hours() -> int:
    return db.session.scalar(select(func.count()).select_from(HourlyUtilization))


def test_rollup_job_stores_hours_and_survives_a_failing_run(city, caplog):
    caplog.set_level(logging.INFO, logger="parking.jobs")
    start = time.time() - 3 * 3600
    ingest([SensorReading("GAR-001", True, start), SensorReading("GAR-001", False, start + 3600)])
    assert _marked() >= 2

    # A real failure: the aggregates' table is not there (as after a half-applied migration).
    db.session.execute(text("ALTER TABLE hourly_utilization RENAME TO hourly_utilization_away"))
    db.session.commit()
    try:
        rollup_job(city)
    finally:
        db.session.execute(text("ALTER TABLE hourly_utilization_away RENAME TO hourly_utilization"))
        db.session.commit()
    failure = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "parking.jobs"]
    assert [r.getMessage() for r in failure] == ["rollup failed; it will run again at the next interval"]
    assert failure[0].exc_info is not None  # the cause is in the log, with its traceback
    assert _marked() >= 2 and _stored_hours() == 0  # nothing half done, nothing forgotten

    caplog.clear()
    rollup_job(city)
    db.session.rollback()  # see what the job committed in its own context
    assert _marked() == 0
    assert _stored_hours() >= 2
    assert any(r.getMessage().startswith("rollup: ") and "hours of 1 lots" in r.getMessage()
               for r in caplog.records)


def test_scheduler_is_a_part_in_health_and_stops(city, client):
    scheduler = start_scheduler(city)
    try:
        # On PostgreSQL the election takes a moment; alone on its database the process leads.
        deadline = time.monotonic() + 30
        while not scheduler.leadership.leading and time.monotonic() < deadline:
            time.sleep(0.05)
        part = client.get("/healthz").get_json()["parts"]["scheduler"]
        assert part["status"] == "ok" and part["next_rollup"] and part["leader"] is True
    finally:
        scheduler.shutdown(wait=True)
    assert client.get("/healthz").get_json()["parts"]["scheduler"]["status"] == "stopped"
