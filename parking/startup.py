"""Start-up mistakes a person can make, as one or two lines naming the setting to change.

This module owns `StartupError` (what is wrong and which setting fixes it), the translations
of the failures a wrong setting causes (a database that does not exist or does not answer, a
port in use, an unsupported database URL), the database's name as it may be logged (never its
password), and `guarded`, which every long-running command (`parking-run`, `parking-gateway`,
`parking-simulate`) runs its start-up under: a `StartupError` prints its line and exits 2; the
traceback only with `--debug`.
"""
from __future__ import annotations

import errno
import logging
import socket
import sys
from collections.abc import Callable

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

log = logging.getLogger("parking")

EXIT_STARTUP = 2  # the exit code of a command that could not start (as argparse uses for bad usage)


class StartupError(Exception):
    """A start-up failure a person can fix; the message names the setting to change."""


def database_label(url: str) -> str:
    """The database URL as it may be shown and logged: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


def check_database_url(url: str) -> None:
    """Refuse a URL SQLAlchemy cannot use, before it fails deep inside with a traceback."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StartupError(
            f"DATABASE_URL {url!r} is not a database URL: use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB"
        ) from None
    if parsed.drivername in ("postgres", "postgres+psycopg"):
        raise StartupError(
            "DATABASE_URL starts with postgres://, which SQLAlchemy does not know: "
            "write postgresql+psycopg:// instead (the rest stays as it is)"
        )
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StartupError(
            f"DATABASE_URL {database_label(url)}: only SQLite (sqlite:///PATH) and PostgreSQL "
            "(postgresql+psycopg://…) are supported"
        )


def database_problem(exc: SQLAlchemyError, url: str) -> StartupError:
    """What a failure to connect means for the person who set DATABASE_URL."""
    label = database_label(url)
    parsed = make_url(url)
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    reason = reason.removeprefix("connection failed: ")
    if parsed.get_backend_name() == "sqlite":
        return StartupError(
            f"cannot open the SQLite database {parsed.database} ({reason}): check that its folder "
            "is writable, or set DATABASE_URL"
        )
    if "password authentication failed" in reason or reason.count('role "') and "does not exist" in reason:
        return StartupError(f"PostgreSQL refused the login of {label}: fix the user or password in DATABASE_URL")
    if "does not exist" in reason:
        name = parsed.database or ""
        return StartupError(
            f"the PostgreSQL database {name!r} does not exist ({label}): create it "
            f"(createdb {name}) or set DATABASE_URL to an existing one"
        )
    return StartupError(
        f"PostgreSQL at {parsed.host or 'localhost'}:{parsed.port or 5432} does not answer "
        f"({reason.split(': ')[-1].rstrip('.')}): start it, or fix DATABASE_URL ({label})"
    )


def check_database(app) -> None:
    """Connect once, so a wrong DATABASE_URL ends the start with one line; log which database."""
    from sqlalchemy import text

    from .extensions import db

    url = app.config["SQLALCHEMY_DATABASE_URI"]
    with app.app_context():
        try:
            with db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise database_problem(exc, url) from exc
    log.info("database %s", database_label(url))
    retention, backlog = app.config["RAW_RETENTION_DAYS"], app.config["MAX_BACKLOG_DAYS"]
    if retention < backlog:
        # Allowed (storage may matter more), but a late reading may then land in compacted history.
        log.warning("PARKING_RAW_RETENTION_DAYS=%s is shorter than PARKING_MAX_BACKLOG_DAYS=%s: a sensor's "
                    "late reading older than %s days lands in compacted history (README, compaction)",
                    retention, backlog, retention)


def port_problem(exc: OSError, what: str, host: str, port: int, setting: str) -> StartupError | None:
    """A bind failure as the setting to change (`setting` names the port's variable); None for
    an error no setting explains."""
    host_setting = setting.replace("_PORT", "_HOST")
    if isinstance(exc, socket.gaierror):
        hint = f"{host!r} is not a host name this machine knows: fix {host_setting}"
    else:
        hint = {
            errno.EADDRINUSE: f"{host}:{port} is in use by another process: stop it, or set {setting} to a free port",
            errno.EACCES: f"{host}:{port} needs privileges to bind: set {setting} to a port above 1023",
            errno.EADDRNOTAVAIL: f"{host} is not an address of this machine: fix {host_setting}",
        }.get(exc.errno)
    return None if hint is None else StartupError(f"{what} cannot listen: {hint}")


def guarded(prog: str, debug: bool, run: Callable[[], int]) -> int:
    """Run a command; a StartupError becomes one line on standard error and exit code 2."""
    try:
        return run()
    except StartupError as exc:
        if debug:
            log.error("%s could not start", prog, exc_info=True)
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_STARTUP
