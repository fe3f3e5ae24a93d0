"""Scheduled jobs (APScheduler 3.x). Each job builds its own app context; failures are logged."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

log = logging.getLogger(__name__)


@contextmanager
def _job(app: Flask, name: str) -> Iterator[None]:
    """A job's run in its own app context: a failure is logged, not raised (the scheduler runs the
    job again at the next interval), and the session is removed either way."""
    with app.app_context():
        try:
            yield
        except Exception:
            log.warning("%s failed; it will run again at the next interval", name, exc_info=True)
        finally:
            from .extensions import db

            db.session.remove()


def rollup_job(app: Flask) -> None:
    """Bring the hourly aggregates up to date (the same as `flask rollup`)."""
    from .metrics import job_run
    from .rollup import run_rollup

    with _job(app, "rollup"):
        with job_run("rollup"):
            stats = run_rollup()
        if stats.hours:
            log.info("rollup: %d hours of %d lots in %.2f s", stats.hours, stats.lots, stats.seconds)


def forecast_job(app: Flask) -> None:
    """Bring every lot's forecaster up to date and store its forecasts (the same as `flask forecast`)."""
    from .forecasting import update_forecasts

    with _job(app, "forecast"):
        stats = update_forecasts()
        log.info("forecast: %d of %d lots forecast in %.2f s", stats.forecasting, stats.lots, stats.seconds)


def start_scheduler(app: Flask) -> BackgroundScheduler:
    """Start the one scheduler of a deployment; the caller shuts it down."""
    scheduler = BackgroundScheduler(timezone="UTC")

    def rollup_then_first_forecast(app: Flask) -> None:
        rollup_job(app)
        # The first forecast builds on the first rollup (a fresh demo's backfill): start it then.
        job = scheduler.get_job("forecast")
        if job is not None and job.next_run_time is None:
            scheduler.modify_job("forecast", next_run_time=_soon(0))

    for job_id, job, interval in (("rollup", rollup_then_first_forecast, "ROLLUP_INTERVAL"),
                                  ("forecast", forecast_job, "FORECAST_INTERVAL")):
        scheduler.add_job(
            job, "interval", seconds=app.config[interval], args=[app], id=job_id,
            max_instances=1,  # a slow run is never started twice at once
            coalesce=True, next_run_time=None,  # paused until started below
        )
    scheduler.start()
    # First run soon after start, so a fresh demo's backfill is rolled up without waiting; the
    # forecast job stays paused until that first rollup has finished and then starts at once.
    scheduler.modify_job("rollup", next_run_time=_soon())
    app.extensions.setdefault("parking_parts", {})["scheduler"] = lambda: {
        "status": "ok" if scheduler.running else "stopped",
        "next_rollup": str(scheduler.get_job("rollup").next_run_time) if scheduler.get_job("rollup") else None,
    }
    return scheduler


def _soon(seconds: float = 5):
    """A few seconds from now, as an aware datetime."""
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
