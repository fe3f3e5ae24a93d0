"""The simulator's backfill: simulated history written through `parking.ingest`, then live from there.

`backfill(app, days)` writes the history from the newest stored reading (or `days` ago) up to now,
through `parking.ingest.ingest_bulk` in chronological chunks, with a progress bar, and returns the
model to go on with live. What it needs from the database it reads through
`parking.sensors.sensor_snapshot`.
"""
from __future__ import annotations

import logging
import time

import click

from parking.ingest import ingest_bulk
from parking.sensors import SensorSnapshot, sensor_snapshot

from .model import CityModel, choose_seed

log = logging.getLogger("gateway.simulator")

BACKFILL_WINDOW = 6 * 3600  # s of history generated and ingested per chunk


def model_from_db(start: float, seed: int, snapshot: SensorSnapshot | None = None) -> CityModel:
    """The model of the stored lots from `start` on; refuses when there are none (app context needed)."""
    return _with_lots(CityModel.from_snapshot(snapshot or sensor_snapshot(), start, seed))


def _with_lots(model: CityModel) -> CityModel:
    """The model, if it has lots to simulate."""
    if not model.lots:
        raise click.ClickException("no lots to simulate: import a lot file first (import-lots)")
    return model


def backfill(
    app,
    days: float,
    now: float | None = None,
    seed: int | None = None,
    model: CityModel | None = None,
) -> CityModel:
    """Write simulated history up to `now` through parking.ingest; returns the model to go on with.

    History starts at the newest stored reading or `days` before `now`, whichever is later, or
    where `model` stands when one is passed in. With `now` None it runs to the present,
    catching up on the time the backfill itself took.
    """
    seed = choose_seed(seed)
    with app.app_context():
        end = time.time() if now is None else now
        if model is None:
            snapshot = sensor_snapshot()
            start = end - days * 86400
            if snapshot.newest_ts is not None and snapshot.newest_ts > start:
                start = snapshot.newest_ts
            model = model_from_db(min(start, end), seed, snapshot)
        else:
            _with_lots(model)
        began, stored, total = time.monotonic(), 0, 0
        with click.progressbar(
            length=max(1, int(end - model.now)), label="Backfilling sensor history"
        ) as bar:
            while model.now < end:
                start = model.now
                readings = model.advance(min(end, start + BACKFILL_WINDOW))
                total += len(readings)
                stored += ingest_bulk(readings)
                bar.update(int(model.now - start))
        while now is None and time.time() - model.now > 1.0:  # the minute the backfill took
            readings = model.advance(time.time())
            total += len(readings)
            stored += ingest_bulk(readings)
    elapsed = time.monotonic() - began
    log.info(
        "backfill: %d readings generated, %d stored in %.1f s (%.0f/s), seed %d",
        total, stored, elapsed, total / elapsed if elapsed else 0, seed,
    )
    return model

