"""The scheduler's election (parking/leader.py) in one process: on PostgreSQL exactly one
Leadership leads, the others know who; a leader whose connection is ended by the server stops at
once and another takes over; a stop gives the lock back. On SQLite the process leads alone and says
so. (tests/test_runner.py kills the leader of two real `parking-run` processes.)"""
from __future__ import annotations

import logging
import threading
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from parking.jobs import start_scheduler
from parking.leader import SCHEDULER_LOCK, Leadership, startup_lock


def _until(condition, timeout: float = 30.0) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class Events:
    """What a Leadership reported, in order."""

    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def gain(self) -> None:
        self.log.append(("gain", self.name))

    def loss(self) -> None:
        self.log.append(("loss", self.name))


def _leadership(app, name: str, log: list) -> Leadership:
    events = Events(name, log)
    leadership = Leadership(app.config["SQLALCHEMY_DATABASE_URI"], app.config["SQLALCHEMY_ENGINE_OPTIONS"],
                            on_gain=events.gain, on_loss=events.loss, retry=0.2)
    leadership.name = f"parking scheduler test {name}"  # two in one process: tell them apart
    return leadership


@pytest.mark.parametrize("backend", ["postgresql"])
def test_one_leads_and_another_takes_over_when_its_connection_ends(app):
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    events: list = []
    first = _leadership(app, "first", events).start()
    second = None
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        assert _until(lambda: first.leading)
        second = _leadership(app, "second", events).start()
        assert _until(lambda: second.leader == first.name), second.status()  # it knows who leads
        assert not second.leading and first.leading
        assert first.status() == {"leader": True, "election": "postgresql advisory lock",
                                  "leader_process": first.name, "leading_since": first.status()["leading_since"]}

        # The server ends the leader's session (a restart, an operator, a network cut): the leader
        # stops at once, the standby takes the lock, and the old leader stands by behind it.
        with admin.connect() as connection:
            ended = connection.scalar(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                           "WHERE application_name = :name"), {"name": first.name})
        assert ended == 1
        assert _until(lambda: second.leading and not first.leading), events
        assert ("loss", "first") in events and ("gain", "second") in events
        assert _until(lambda: first.leader == second.name), first.status()
        assert not first.leading
    finally:
        first.stop()
        if second is not None:
            second.stop()
    # Both stopped: the lock is free for whoever comes next.
    with admin.connect() as connection:
        assert connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": SCHEDULER_LOCK})
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEDULER_LOCK})
    admin.dispose()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_standby_scheduler_runs_no_job_until_it_leads(city, client):
    """The process's scheduler while another holds the lock: standing by in /healthz, no rollup."""
    url = city.config["SQLALCHEMY_DATABASE_URI"]
    holder = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool,
                           connect_args={"application_name": "the other process"})
    connection = holder.connect()
    assert connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": SCHEDULER_LOCK})
    scheduling = start_scheduler(city, retry=0.2)
    try:
        assert _until(lambda: client.get("/healthz").get_json()["parts"]["scheduler"]["leader_process"]
                      == "the other process")
        part = client.get("/healthz").get_json()["parts"]["scheduler"]
        assert part["status"] == "ok" and part["leader"] is False and part["next_rollup"] is None
        assert scheduling.scheduler.get_job("rollup").next_run_time is None  # nothing due here
        connection.close()  # the other process ends (its session with it): this one leads
        assert _until(lambda: client.get("/healthz").get_json()["parts"]["scheduler"]["leader"] is True)
        part = client.get("/healthz").get_json()["parts"]["scheduler"]
        assert part["next_rollup"] and part["leader_process"] == scheduling.leadership.name
    finally:
        scheduling.shutdown(wait=True)
        holder.dispose()
    part = client.get("/healthz").get_json()["parts"]["scheduler"]
    assert part["status"] == "stopped" and part["leader"] is False


@pytest.mark.parametrize("backend", ["sqlite"])
def test_on_sqlite_the_process_leads_alone_and_says_so(app, caplog):
    caplog.set_level(logging.INFO, logger="parking.leader")
    events: list = []
    leadership = _leadership(app, "only", events).start()
    try:
        assert leadership.leading and events == [("gain", "only")]
        assert leadership.status()["election"] == "none: SQLite, this process"
        assert any("SQLite database, so no election" in r.getMessage() and "--no-scheduler" in r.getMessage()
                   for r in caplog.records)
    finally:
        leadership.stop()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_starts_take_turns(app):
    """Two processes starting at once migrate one after the other (the lock is held in the block)."""
    url, options = app.config["SQLALCHEMY_DATABASE_URI"], app.config["SQLALCHEMY_ENGINE_OPTIONS"]
    inside: list[str] = []
    second_done = threading.Event()

    def second() -> None:
        with startup_lock(url, options):
            inside.append("second")
        second_done.set()

    with startup_lock(url, options):
        inside.append("first")
        thread = threading.Thread(target=second)
        thread.start()
        assert not second_done.wait(1.0)  # waiting for the first to leave the block
    thread.join(30)
    assert inside == ["first", "second"]
