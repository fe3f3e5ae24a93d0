"""Scheduled jobs (APScheduler 3.x). Each job builds its own app context; failures are logged.

Every process that runs a scheduler takes part in the deployment's election (parking.leader):
only the leader's jobs run, so a deployment of many processes rolls up once, without configuration.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from .leader import Leadership, is_postgresql

log = logging.getLogger(__name__)
PARTITIONS_INTERVAL = 86400  # seconds between runs of the partitions job (it makes a week ahead)


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


def compact_job(app: Flask, stop: threading.Event | None = None) -> None:
    """Fold raw readings that have settled into compact runs (the same as `flask compact`);
    `stop` set ends it after the transaction under way (a first compaction can take minutes)."""
    from .compaction import compact

    with _job(app, "compact"):
        result = compact(stop=stop)
        if result.readings:
            log.info("compact: %d readings of %d bays folded into %d runs in %.2f s",
                     result.readings, result.bays, result.runs_written, result.seconds)


def forecast_job(app: Flask) -> None:
    """Bring every lot's forecaster up to date and store its forecasts (the same as `flask forecast`)."""
    from .forecasting import update_forecasts

    with _job(app, "forecast"):
        stats = update_forecasts()
        log.info("forecast: %d of %d lots forecast in %.2f s", stats.forecasting, stats.lots, stats.seconds)


def partitions_job(app: Flask) -> None:
    """Make the history tables' partitions of today and the next week (PostgreSQL; parking.partitions)."""
    from .extensions import db
    from .partitions import ensure_ahead

    with _job(app, "partitions"):
        made = ensure_ahead(db.session)
        db.session.commit()
        if made:
            log.info("partitions: made %s", ", ".join(made))


class Scheduling:
    """This process's scheduler and its part in the election (parking.leader): the jobs run only
    while this process leads; `shutdown` stops the jobs, then gives the leadership back."""

    def __init__(self, app: Flask, retry: float | None = None):
        self.app = app
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self._lock = threading.Lock()  # gain and loss (election thread) against shutdown
        self._stopped = False
        self._stopping = threading.Event()  # set first thing on shutdown: a long job ends early
        options = {"retry": retry} if retry is not None else {}
        self.leadership = Leadership(app.config["SQLALCHEMY_DATABASE_URI"], app.config.get("SQLALCHEMY_ENGINE_OPTIONS"),
                                     on_gain=self._gained, on_loss=self._lost, **options)

    def start(self) -> Scheduling:
        """Add the jobs (paused until this process leads), start the election, register in /healthz."""
        scheduler = self.scheduler

        def rollup_then_first_forecast(app: Flask) -> None:
            if not self.leadership.leading:
                return  # due at the instant the leadership was lost
            rollup_job(app)
            # The first forecast builds on the first rollup (a fresh demo's backfill): start it then.
            job = scheduler.get_job("forecast")
            if job is not None and job.next_run_time is None:
                scheduler.modify_job("forecast", next_run_time=_soon(0))

        def forecast_when_leading(app: Flask) -> None:
            if self.leadership.leading:
                forecast_job(app)

        def compact_when_leading(app: Flask) -> None:
            if self.leadership.leading:
                compact_job(app, self._stopping)

        for job_id, job, interval in (("rollup", rollup_then_first_forecast, "ROLLUP_INTERVAL"),
                                      ("forecast", forecast_when_leading, "FORECAST_INTERVAL"),
                                      ("compact", compact_when_leading, "COMPACT_INTERVAL")):
            scheduler.add_job(
                job, "interval", seconds=self.app.config[interval], args=[self.app], id=job_id,
                max_instances=1,  # a slow run is never started twice at once
                coalesce=True, next_run_time=None,  # paused until this process leads
            )
        if is_postgresql(self.app.config["SQLALCHEMY_DATABASE_URI"]):
            def partitions_when_leading(app: Flask) -> None:
                if self.leadership.leading:
                    partitions_job(app)

            # The history's partitions (parking.partitions): daily, and at once on leading (_gained);
            # a PostgreSQL database that is not partitioned is left alone by the job.
            scheduler.add_job(partitions_when_leading, "interval", seconds=PARTITIONS_INTERVAL, args=[self.app],
                              id="partitions", max_instances=1, coalesce=True, next_run_time=None)
        scheduler.start(paused=True)
        self.app.extensions.setdefault("parking_parts", {})["scheduler"] = self.health
        self.leadership.start()
        return self

    def _gained(self) -> None:
        """Leading: the first rollup soon (a fresh demo's backfill is rolled up without waiting);
        the forecast job stays paused until that first rollup has finished and then starts at once."""
        with self._lock:
            if self._stopped:
                return
            if self.scheduler.get_job("partitions") is not None:
                self.scheduler.modify_job("partitions", next_run_time=_soon(0))
            self.scheduler.modify_job("rollup", next_run_time=_soon())
            # Compaction soon too (after a start, history may have settled), off the rollup's instant.
            self.scheduler.modify_job("compact", next_run_time=_soon(30))
            self.scheduler.resume()

    def _lost(self) -> None:
        """No longer leading: no job starts from now on (a run under way finishes)."""
        with self._lock:
            if not self._stopped:
                self.scheduler.pause()

    def health(self) -> dict:
        """The scheduler's part of /healthz: running, leading or standing by, and who leads."""
        running = self.scheduler.running and not self._stopped
        job = self.scheduler.get_job("rollup") if running else None
        leading = self.leadership.leading and running
        return {
            "status": "ok" if running else "stopped",
            **self.leadership.status(),
            "leader": leading,
            "next_rollup": str(job.next_run_time) if leading and job is not None and job.next_run_time else None,
        }

    def shutdown(self, wait: bool = True) -> None:
        """Stop the jobs (waiting for one under way when `wait`), then give the leadership back,
        so that no other process starts a job while one of ours still runs."""
        with self._lock:
            self._stopped = True
        self._stopping.set()
        self.scheduler.shutdown(wait=wait)
        self.leadership.stop()


def start_scheduler(app: Flask, retry: float | None = None) -> Scheduling:
    """Start this process's scheduler; its jobs run while it leads the deployment (on SQLite: at
    once). The caller shuts it down."""
    return Scheduling(app, retry).start()


def _soon(seconds: float = 5):
    """A few seconds from now, as an aware datetime."""
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
