"""Flask CLI commands: init-db, import-lots, rollup, sensors, credentials.

`simulate` is the gateway's: `gateway.simulator.cli` registers it (`flask.commands` entry points).
"""
from __future__ import annotations

import json

import click
from flask import Flask, current_app
from flask_migrate import upgrade
from sqlalchemy.exc import OperationalError

from .lots import LotFileError, has_lots, import_lot_file
from .timefmt import iso_utc


def init_db() -> None:
    """Create or upgrade the schema to the newest migration, then (partitioned PostgreSQL) make the
    history partitions of today and the next week, as the scheduler's daily job keeps them."""
    from .extensions import db
    from .partitions import ensure_ahead

    upgrade(directory=current_app.extensions["migrate"].directory)
    try:
        ensure_ahead(db.session)
        db.session.commit()
    except OperationalError:
        # A busy default partition (its lock not had in time): the scheduler's job makes them.
        db.session.rollback()
        current_app.logger.warning("init-db: the partitions ahead were not made now", exc_info=True)


def ensure_lots() -> None:
    """Import PARKING_LOTS_FILE when the database has no lots yet."""
    if not has_lots():
        counts = import_lot_file(current_app.config["LOTS_FILE"], current_app.config["TIMEZONE"])
        click.echo(f"imported {current_app.config['LOTS_FILE']}: {counts}")


def init_app(app: Flask) -> None:
    """Register the commands."""

    @app.cli.command("init-db")
    def init_db_command():
        """Create or upgrade the database schema (migrations)."""
        init_db()
        click.echo("database is at the newest schema")

    @app.cli.command("import-lots")
    @click.argument("path", type=click.Path(dir_okay=False))
    def import_lots_command(path):
        """Import or update lots from a GeoJSON file (idempotent; never drops history)."""
        init_db()
        try:
            counts = import_lot_file(path, current_app.config["TIMEZONE"])
        except LotFileError as exc:
            raise click.ClickException(f"refused, nothing imported: {exc.message}") from exc
        click.echo(
            f"lots added {counts['lots_added']}, updated {counts['lots_updated']}, "
            f"bays added {counts['bays_added']}"
        )

    @app.cli.command("rollup")
    @click.option("--full", is_flag=True, help="recompute every hour with readings (after changing PARKING_STALE_AFTER)")
    def rollup_command(full):
        """Bring the hourly aggregates up to date."""
        from .rollup import mark_all, run_rollup

        if full:
            click.echo(f"marked {mark_all()} hours for recomputation")
        stats = run_rollup()
        click.echo(f"rolled up {stats.hours} hours of {stats.lots} lots in {stats.seconds:.2f} s")

    @app.cli.command("compact")
    @click.option("--all", "everything", is_flag=True,
                  help="fold everything stored so far (all but the last two hours), not only what has settled")
    def compact_command(everything):
        """Fold raw readings older than PARKING_RAW_RETENTION_DAYS into compact runs (figures unchanged)."""
        from .compaction import compact

        def progress(edge, so_far):  # a first compaction of a city's weeks takes minutes
            click.echo(f"  folded up to {iso_utc(edge)}: {so_far.readings} readings so far", err=True)

        result = compact(everything=everything, progress=progress)
        click.echo(
            f"folded {result.readings} readings of {result.bays} bays into {result.runs_written} runs "
            f"(stamped before {iso_utc(result.cutoff)}) in {result.seconds:.2f} s"
            + (f"; {result.partitions_dropped} daily partitions dropped" if result.partitions_dropped else "")
        )

    @app.cli.command("sensors")
    @click.option("--all", "show_all", is_flag=True, help="every sensor, not only those needing attention")
    def sensors_command(show_all):
        """List sensors that are silent past stale_after or low on battery."""
        from .sensors import sensor_report

        for row in sensor_report(only_problems=not show_all):
            click.echo(
                f"{row['bay']:<16} {row['lot']:<24} {row['problem'] or 'ok':<12} "
                f"last seen {row['last_seen'] or 'never'}  battery {row['battery']}"
            )

    app.cli.add_command(credentials_group)

    @app.cli.command("forecast")
    def forecast_command():
        """Bring every lot's forecast up to date now (what the scheduler does every few minutes)."""
        from .forecasting import update_forecasts

        stats = update_forecasts()
        click.echo(f"forecast {stats.forecasting} of {stats.lots} lots in {stats.seconds:.2f} s")

    @app.cli.command("forecast-backtest")
    @click.argument("trace", type=click.Path(exists=True, dir_okay=False))
    @click.option("--from", "from_date", default=None, help="score origins from this local date on (YYYY-MM-DD)")
    @click.option("--to", "to_date", default=None, help="score origins before this local date (YYYY-MM-DD)")
    @click.option("--site", "sites", multiple=True, help="only sites whose name contains this (repeatable)")
    def forecast_backtest_command(trace, from_date, to_date, sites):
        """Score the forecaster against persistence, last week, 3-week mean and Helsinki on a trace."""
        import gzip

        from .backtest import format_table, read_trace, run_backtest

        tz = current_app.config["TIMEZONE"]
        bounds = [_local_midnight(d, tz, name) for d, name in ((from_date, "--from"), (to_date, "--to"))]
        opener = gzip.open if trace.endswith(".gz") else open
        try:
            with opener(trace, "rt", encoding="utf-8") as fh:
                found = read_trace(fh)
        except (ValueError, UnicodeDecodeError, OSError) as exc:
            raise click.ClickException(f"{trace}: {exc}") from exc
        chosen = [s for s in found if not sites or any(part in s.name for part in sites)]
        if not chosen:
            raise click.ClickException(f"{trace}: no site with values" + (f" matching {', '.join(sites)}" if sites else ""))
        results = run_backtest(chosen, tz, current_app.config["REGION"], *bounds)
        for line in format_table(results):
            click.echo(line)


def _local_midnight(day: str | None, timezone: str, option: str) -> float | None:
    """Unix time of local midnight of an ISO date, or None; a bad date is one clear line."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    if day is None:
        return None
    try:
        date = dt.date.fromisoformat(day)
    except ValueError:
        raise click.BadParameter(f"{day!r} is not a date like 2025-03-01", param_hint=option) from None
    return dt.datetime.combine(date, dt.time(), ZoneInfo(timezone)).timestamp()


@click.group("credentials")
def credentials_group():
    """Sensors' OSCORE credentials (contract §7; docs/sensors.md)."""


@credentials_group.command("add")
@click.argument("sensor_id")
@click.option("--bay", "bays", multiple=True, required=True, help="a bay the sensor reports (repeat for more)")
@click.option("--replace", is_flag=True, help="revoke the sensor's current credential and make a new one")
def credentials_add(sensor_id, bays, replace):
    """Create a sensor's credential; print its side as aiocoap's settings.json (once: keep it safe)."""
    from .credentials import CredentialError, add

    init_db()
    try:
        made = add(sensor_id, list(bays), replace=replace)
    except CredentialError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(json.dumps(made["settings"]))


@credentials_group.command("revoke")
@click.argument("sensor_id")
def credentials_revoke(sensor_id):
    """Revoke a sensor's credential: the gateway refuses its key from now on (4.01)."""
    from .credentials import CredentialError, revoke

    init_db()
    try:
        revoke(sensor_id)
    except CredentialError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"revoked the credential of sensor {sensor_id}", err=True)


@credentials_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="revoked credentials too")
def credentials_list(show_all):
    """Sensors with credentials, their key ids and bays (never a secret)."""
    from .credentials import listing

    init_db()
    for row in listing(include_revoked=show_all):
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else f"since {row['created_at']}"
        click.echo(f"{row['sensor_id']:<20} key {row['key_id']}  {state}  bays {' '.join(row['bays'])}")
