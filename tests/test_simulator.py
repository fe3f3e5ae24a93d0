"""The simulator: profiles, the bay model's patterns and sensor behaviour, backfill, live CoAP."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from gateway.simulator import model as simulator, profiles
from gateway.simulator.history import backfill, model_from_db
from gateway.simulator.model import CityModel, LotSpec
from gateway.simulator.sender import LiveSender, parse_hostport
from parking.extensions import db
from parking.lots import validate_collection
from parking.models import Bay
from parking.models import StoredReading as Row

from .conftest import free_port

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY = dt.datetime(2025, 3, 10, tzinfo=BERLIN)  # a week without holidays
ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CITY = ROOT / "parking" / "data" / "regensburg.geojson"


def lot(lot_id: str, kind: str, size: int) -> LotSpec:
    """A lot of `size` bays named <lot_id>-001…"""
    return LotSpec(lot_id, kind, "Europe/Berlin", tuple(f"{lot_id}-{i:03d}" for i in range(1, size + 1)))


def at(day: int, hour: int) -> float:
    """Unix time of local `hour` on MONDAY + `day` days."""
    return (MONDAY + dt.timedelta(days=day, hours=hour)).timestamp()


@pytest.fixture(scope="module")
def week():
    """Six simulated days (Mon 00:00 to Sun 00:00) of a P+R lot, a garage and a street."""
    model = CityModel(
        [lot("PR", "park_and_ride", 80), lot("GA", "centre_garage", 80), lot("ST", "on_street", 20)],
        start=at(0, 0),
        seed=11,
    )
    occupancy, readings = {}, []
    for hour in range(1, 6 * 24 + 1):
        readings += model.advance(at(0, hour))
        for lot_id in model.lots:
            occupancy[(lot_id, hour // 24, hour % 24)] = model.occupancy(lot_id)
    return occupancy, readings


def by_bay(readings):
    """Readings grouped per bay, in the order sent."""
    grouped = defaultdict(list)
    for r in readings:
        grouped[r.bay].append(r)
    return grouped


# Profiles


@pytest.mark.parametrize("kind", profiles.KINDS)
def test_every_profile_has_24_fractions_per_day_type(kind):
    for day_type in profiles.DAY_TYPES:
        values = profiles.PROFILES[kind][day_type]
        assert len(values) == 24 and all(0 <= v <= 1 for v in values)
    assert len(profiles.MONTH_FACTOR[kind]) == 12
    assert profiles.STAYS[kind]["workday"] and profiles.STAYS[kind]["weekend"]


@pytest.mark.parametrize(
    "kind, busy, quiet",
    [("park_and_ride", (1, 8), (1, 3)), ("centre_garage", (1, 12), (1, 4)), ("on_street", (1, 12), (1, 4))],
)
def test_profile_targets_follow_the_day(kind, busy, quiet):
    assert profiles.target_occupancy(kind, MONDAY + dt.timedelta(days=busy[0], hours=busy[1])) > (
        profiles.target_occupancy(kind, MONDAY + dt.timedelta(days=quiet[0], hours=quiet[1])) + 0.1
    )


def test_park_and_ride_is_quieter_at_weekends():
    def daytime(day):
        return sum(profiles.target_occupancy("park_and_ride", MONDAY + dt.timedelta(days=day, hours=h))
                   for h in range(8, 18))

    assert daytime(5) < 0.8 * daytime(1) and daytime(6) < 0.8 * daytime(1)


def test_holidays_count_as_sundays():
    assert profiles.day_type(dt.date(2025, 8, 15)) == "sunday"  # Assumption Day, a Friday
    assert profiles.day_type(dt.date(2025, 6, 19)) == "sunday"  # Corpus Christi
    assert profiles.day_type(dt.date(2025, 8, 14)) == "weekday"


def test_target_interpolates_between_hour_centres():
    mid_month = dt.datetime(2025, 3, 12, 8, 30)
    factor = profiles._month_factor("centre_garage", mid_month.date())
    expected = profiles.PROFILES["centre_garage"]["weekday"][8] * factor
    assert profiles.target_occupancy("centre_garage", mid_month) == pytest.approx(expected)
    nine = profiles.target_occupancy("centre_garage", mid_month.replace(hour=9))
    nine_thirty = profiles.target_occupancy("centre_garage", mid_month.replace(hour=9, minute=30))
    assert min(expected, nine_thirty) <= nine <= max(expected, nine_thirty)


@pytest.mark.parametrize(
    "category, park_and_ride, kind",
    [
        ("parkingLot", {"stops": []}, "park_and_ride"),
        ("parkingGarage", None, "centre_garage"),
        ("underground", None, "centre_garage"),
        ("parkingLot", None, "surface"),
        ("onStreet", None, "on_street"),
        (None, None, "surface"),
    ],
)
def test_kind_follows_category_and_park_and_ride(category, park_and_ride, kind):
    assert profiles.kind_for(category, park_and_ride) == kind


# The model's patterns


def test_park_and_ride_fills_early_on_a_tuesday(week):
    occupancy, _ = week
    assert occupancy[("PR", 1, 8)] > occupancy[("PR", 1, 3)] + 0.1


def test_centre_garage_peaks_around_midday(week):
    occupancy, _ = week
    assert occupancy[("GA", 1, 12)] > occupancy[("GA", 1, 4)] + 0.2


def test_park_and_ride_is_emptier_on_saturday_than_on_weekdays(week):
    occupancy, _ = week
    weekday = sum(occupancy[("PR", d, h)] for d in range(5) for h in range(8, 18)) / 50
    saturday = sum(occupancy[("PR", 5, h)] for h in range(8, 18)) / 10
    assert saturday < weekday - 0.05


def test_occupancy_tracks_the_target(week):
    occupancy, _ = week
    model = CityModel([lot("GA", "centre_garage", 80)], start=at(0, 0), seed=11)
    garage = model.lots["GA"]
    errors = [
        abs(occ - garage.target(at(d, h))) for (lot_id, d, h), occ in occupancy.items() if lot_id == "GA"
    ]
    assert sum(errors) / len(errors) < 0.08


def test_every_sensor_sends_heartbeats(week):
    _, readings = week
    hours = 6 * 24
    for bay, sent in by_bay(readings).items():
        assert len(sent) >= hours * 3600 / (simulator.HEARTBEAT + simulator.HEARTBEAT_JITTER) * 0.8, bay
        gaps = [b.ts - a.ts for a, b in zip(sent, sent[1:])]
        quiet = sum(1 for g in gaps if g <= simulator.HEARTBEAT + simulator.HEARTBEAT_JITTER)
        assert quiet >= 0.95 * len(gaps), bay


def test_seq_counts_messages(week):
    _, readings = week
    steps = defaultdict(int)
    for sent in by_bay(readings).values():
        for a, b in zip(sent, sent[1:]):
            if b.seq == (a.seq + 1) % 2**32:
                steps["next"] += 1
            elif b.seq == a.seq and b.ts == a.ts:
                steps["retransmission"] += 1
            elif b.seq == 0:
                steps["reboot"] += 1
            else:
                pytest.fail(f"{a} then {b}")
    assert steps["next"] > 0.98 * sum(steps.values())


def test_readings_are_well_formed_and_in_order(week):
    _, readings = week
    assert all(a.ts <= b.ts for a, b in zip(readings, readings[1:]))
    assert all(isinstance(r.occupied, bool) and 1 <= r.battery <= 100 for r in readings)
    assert all(at(0, 0) <= r.ts < at(6, 0) for r in readings)


def test_faults_silence_retransmit_reboot(monkeypatch):
    monkeypatch.setattr(simulator, "MEAN_BETWEEN_SILENCES", 86400)
    monkeypatch.setattr(simulator, "MEAN_BETWEEN_REBOOTS", 86400)
    monkeypatch.setattr(simulator, "RETRANSMIT_PROBABILITY", 0.05)
    model = CityModel([lot("GA", "centre_garage", 30)], start=at(0, 0), seed=5)
    grouped = by_bay(model.advance(at(2, 0)))
    pairs = [(a, b) for sent in grouped.values() for a, b in zip(sent, sent[1:])]
    assert any(b.ts - a.ts > 1800 for a, b in pairs)  # silent for a while
    assert any(a == b for a, b in pairs)  # a retransmission: same seq, same ts
    assert any(b.seq == 0 and a.seq != 0 for a, b in pairs)  # a reboot


def test_same_seed_same_readings_whatever_the_chunking():
    def run(seed, step_hours):
        model = CityModel([lot("PR", "park_and_ride", 20), lot("ST", "on_street", 10)], at(0, 0), seed)
        out = []
        for hour in range(step_hours, 25, step_hours):
            out += model.advance(at(0, hour))
        return out

    assert run(3, 1) == run(3, 6)
    assert run(3, 6) != run(4, 6)


# The bundled sample city


def test_sample_city_is_a_valid_mixed_city():
    doc = json.loads(SAMPLE_CITY.read_text(encoding="utf-8"))
    assert "sample data" in doc["description"].lower()
    features = validate_collection(doc, "Europe/Berlin")
    bays = [b for f in features for b in f["properties"]["bays"]]
    assert len(features) >= 10 and 650 <= len(bays) <= 750 and len(set(bays)) == len(bays)
    kinds = [profiles.kind_for(f["properties"]["category"], f["properties"]["park_and_ride"])
             for f in features]
    assert kinds.count("park_and_ride") >= 3 and set(kinds) == set(profiles.KINDS)
    for f in features:
        pr = f["properties"]["park_and_ride"]
        if pr:
            assert pr["stops"] and pr["url"].startswith("https://")
            assert all(s["lines"] and s["url"].startswith("https://") for s in pr["stops"])
        geometry = f["geometry"]
        lon, lat = geometry["coordinates"] if geometry["type"] == "Point" else geometry["coordinates"][0][0]
        assert 48.95 < lat < 49.06 and 12.03 < lon < 12.15, f["id"]


# Backfill into the database


def test_backfill_writes_history_through_ingest(city):
    now = float(int(time.time()) - 7200)
    model = backfill(city, 2, now=now, seed=3)
    assert model.now == now
    count, first, last = db.session.execute(select(func.count(), func.min(Row.ts), func.max(Row.ts))).one()
    assert now - 2 * 86400 <= first and last < now
    assert count >= 12 * 2 * 86400 / (simulator.HEARTBEAT + simulator.HEARTBEAT_JITTER) * 0.8
    rows = db.session.execute(select(Row.bay_id, Row.seq).order_by(Row.bay_id, Row.ts, Row.id)).all()
    steps = [b.seq == a.seq + 1 for a, b in zip(rows, rows[1:]) if a.bay_id == b.bay_id]
    assert sum(steps) > 0.98 * len(steps)
    assert db.session.scalar(select(func.count()).select_from(Bay).where(Bay.state.is_(None))) <= 1


def test_backfill_continues_from_the_newest_reading(city):
    now = float(int(time.time()) - 7200)
    backfill(city, 1, now=now - 3600, seed=3)
    before = db.session.scalar(select(func.count()).select_from(Row))
    model = backfill(city, 1, now=now, seed=3)
    # Only the last hour was added: about one heartbeat per bay per 10 minutes, plus changes.
    total = db.session.scalar(select(func.count()).select_from(Row))
    assert 12 * 4 <= total - before <= 12 * 12
    assert model.now == now


def test_flask_simulate_command_is_registered_from_the_gateway(city):
    """`flask --app app simulate` comes from the flask.commands entry point, not from parking.cli."""
    from click.testing import CliRunner
    from flask.cli import FlaskGroup

    assert "simulate" not in city.cli.commands  # the core does not register it itself
    cli = FlaskGroup(create_app=lambda: city)
    result = CliRunner().invoke(cli, ["simulate", "--backfill-days", "1", "--no-live", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert db.session.scalar(select(func.count()).select_from(Row)) >= 12 * 86400 / 630 * 0.8


def test_model_from_db_starts_where_the_history_stops(city):
    now = float(int(time.time()) - 600)
    backfill(city, 0.5, now=now, seed=8)
    stored = dict(db.session.execute(select(Bay.id, Bay.state)).all())
    model = model_from_db(now, seed=9)
    states = {s.bay: s.state for s in model.sensors}
    assert {b: v for b, v in stored.items() if v is not None} == {
        b: states[b] for b, v in stored.items() if v is not None
    }
    newest_seq = db.session.scalar(
        select(Row.seq).where(Row.bay_id == "GAR-001").order_by(Row.ts.desc()).limit(1)
    )
    sensor = next(s for s in model.sensors if s.bay == "GAR-001")
    assert sensor.seq == newest_seq  # its next message says newest_seq + 1


# Live mode over real CoAP


@pytest.mark.parametrize(
    "text, expected",
    [("127.0.0.1:5683", ("127.0.0.1", 5683)), ("[::1]:5700", ("::1", 5700)), ("gateway", ("gateway", 5683))],
)
def test_parse_hostport(text, expected):
    assert parse_hostport(text) == expected


def _send_live(model: CityModel, port: int, seconds: float, during=None) -> "Stats":
    """Run a LiveSender against 127.0.0.1:port for `seconds`; `during(sender)` is awaited alongside."""

    async def scenario():
        sender = LiveSender(model, "127.0.0.1", port, speed=1200)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        try:
            await sender.start()
            await asyncio.gather(sender.run(stop), during(sender) if during else asyncio.sleep(0))
        finally:
            await sender.shutdown()
        return sender.totals

    return asyncio.run(scenario())


def _stored_readings() -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Row))


@pytest.fixture
def no_retransmissions(monkeypatch):
    """Sensors that never repeat a message: a retransmission is acknowledged but stored once (as
    tests/test_gateway.py checks), so only then is every reading acknowledged a reading stored."""
    monkeypatch.setattr(simulator, "RETRANSMIT_PROBABILITY", 0.0)


@pytest.mark.parametrize("backend", ["sqlite"])  # a locked SQLite file is storage that cannot write
def test_live_sender_retries_after_503_from_the_real_gateway(city, no_retransmissions):
    """The database locked by another writer: the real gateway answers 5.03 with Max-Age; the
    sender waits that long and sends again, and once the lock is gone every reading is stored."""
    from gateway.server import run_in_thread

    port = free_port(socket.SOCK_DGRAM)
    gateway = run_in_thread(city, "127.0.0.1", port, lock_timeout=0.3)
    path = make_url(city.config["SQLALCHEMY_DATABASE_URI"]).database
    locker = sqlite3.connect(path, isolation_level=None, timeout=30)
    locker.execute("BEGIN EXCLUSIVE")
    model = model_from_db(time.time(), seed=2)

    async def unlock_after_a_503(sender):
        while sender.totals.retried == 0:
            await asyncio.sleep(0.05)
        locker.execute("ROLLBACK")

    try:
        totals = _send_live(model, port, 8.0, unlock_after_a_503)
    finally:
        locker.close()
        gateway.stop()
    assert totals.retried >= 1 and totals.errors == 0
    assert set(totals.codes) == {"2.04"}, totals.codes  # every retried reading got in
    assert _stored_readings() == totals.codes["2.04"]


def test_live_mode_readings_reach_the_database(coap_gateway, no_retransmissions):
    host, port = coap_gateway
    totals = _send_live(model_from_db(time.time(), seed=4), port, 2.0)
    assert totals.errors == 0 and set(totals.codes) == {"2.04"}
    assert totals.codes["2.04"] > 20
    assert _stored_readings() == totals.codes["2.04"]  # stored equals acknowledged, not just "some"


def _simulate_process(url: str, coap_port: int) -> subprocess.Popen:
    """`python -m gateway.simulator` with the settings in the environment only (no --coap)."""
    env = {**os.environ, "DATABASE_URL": url, "PARKING_COAP_HOST": "127.0.0.1",
           "PARKING_COAP_PORT": str(coap_port), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "gateway.simulator", "--speed", "600", "--seed", "3"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("backend", ["sqlite"])  # the settings it reads, not the database, are under test
def test_parking_simulate_sends_to_the_configured_gateway(coap_gateway):
    """PARKING_COAP_HOST/PORT, as every command reads them (it was hard-wired to 127.0.0.1:5683)."""
    _, port = coap_gateway
    process = _simulate_process(current_app.config["SQLALCHEMY_DATABASE_URI"], port)
    try:
        deadline = time.monotonic() + 60
        while _stored_readings() == 0 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert f"sending to coap://127.0.0.1:{port}/occupancy" in output
    assert _stored_readings() > 0, output


@pytest.mark.parametrize("backend", ["sqlite"])
def test_parking_simulate_without_a_gateway_says_so_in_one_line(city):
    port = free_port(socket.SOCK_DGRAM)  # nothing listens there
    process = _simulate_process(city.config["SQLALCHEMY_DATABASE_URI"], port)
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 2, output
    assert "Traceback" not in output and "errors" not in output
    errors = [line for line in output.splitlines() if line.startswith("parking-simulate: error: ")]
    assert errors == [
        f"parking-simulate: error: no CoAP gateway answers at coap://127.0.0.1:{port} (connection refused): "
        "start one (parking-gateway or parking-run), or set PARKING_COAP_HOST and PARKING_COAP_PORT (or --coap) "
        "to where it listens"
    ], output


def test_live_mode_speaks_oscore_with_a_key_per_sensor(city):
    """The deployed setting: the simulator provisions a credential per bay and protects every request."""
    from gateway.server import run_in_thread
    from gateway.simulator.keys import provision
    from parking.models import SensorCredential

    city.config["SENSOR_AUTH"] = "oscore"
    handle = run_in_thread(city, "127.0.0.1", 0)
    try:
        model = model_from_db(time.time(), seed=4)
        keys = provision(city, [sensor.bay for sensor in model.sensors])
        assert len(keys) == 12 and len({k.sender_id for k in keys.values()}) == 12

        async def scenario():
            sender = LiveSender(model, "127.0.0.1", handle.port, speed=1200, keys=keys)
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(2.0, stop.set)
            await sender.start()
            try:
                await sender.run(stop)
            finally:
                await sender.shutdown()
            return sender.totals

        totals = asyncio.run(scenario())
        health = handle.gateway.health()
    finally:
        handle.stop()
    assert totals.sent > 0 and totals.errors == 0 and set(totals.codes) == {"2.04"}
    assert health["refused"]["unprotected"] == 0 and health["answered"]["2.04"] == totals.sent
    db.session.expire_all()
    assert 0 < db.session.scalar(select(func.count()).select_from(Row)) <= totals.sent
    # A second start replaces the simulator's own credentials: fresh keys, sequence numbers from 0.
    again = provision(city, [sensor.bay for sensor in model.sensors])
    assert {k.sender_id for k in again.values()}.isdisjoint({k.sender_id for k in keys.values()})
    assert db.session.scalar(select(func.count()).select_from(SensorCredential)
                             .where(SensorCredential.revoked_at.is_(None))) == 12
