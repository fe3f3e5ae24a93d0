"""The parking occupancy application: `create_app` wires settings, extensions, blueprints and CLI."""
from __future__ import annotations

from pathlib import Path

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from .config import DEFAULT_DATABASE_URL, PROJECT_DIR, settings_from
from .dbconnect import engine_options, sqlite_pragmas
from .startup import check_database_url
from . import extensions

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def create_app(config: dict | None = None) -> Flask:
    """Build the Flask app; `config` (e.g. a test mapping) overrides the environment."""
    app = Flask(__name__, static_folder=str(Path(__file__).resolve().parent.parent / "static"))
    app.json = extensions.JSONProvider(app)
    app.config.from_mapping(settings_from(config))
    check_database_url(app.config["SQLALCHEMY_DATABASE_URI"])
    app.config["SQLALCHEMY_DATABASE_URI"] = _absolute_sqlite_url(
        app.config["SQLALCHEMY_DATABASE_URI"], app.instance_path
    )
    # Timeouts and keepalive on PostgreSQL: a silent database is an error, not a hang (the web
    # app's engine is also the scheduler's and the gateway's reads').
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(
        app.config["SQLALCHEMY_DATABASE_URI"], app.config.get("SQLALCHEMY_ENGINE_OPTIONS")
    )

    extensions.db.init_app(app)
    extensions.migrate.init_app(app, extensions.db, directory=str(MIGRATIONS_DIR))
    # Imported as a module attribute: the `parking.api` subpackage would shadow a bare `api`.
    extensions.api.init_app(app)
    extensions.api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "description": "PARKING_ADMIN_TOKEN"}
    )

    from . import cli, errors, lot_list, metrics, pages
    from .api import credentials, datex2, forecast, health, lots, ngsi_ld, operators, reports, sensors

    errors.init_app(app)
    lot_list.init_app(app)
    for blp in (lots.blp, forecast.blp, reports.blp, sensors.blp, datex2.blp, ngsi_ld.blp, credentials.blp,
                operators.blp):
        extensions.api.register_blueprint(blp)
    app.register_blueprint(health.bp)
    app.register_blueprint(pages.bp)
    metrics.init_app(app)
    cli.init_app(app)
    return app


def _absolute_sqlite_url(url: str, instance_path: str) -> str:
    """Resolve a relative SQLite path, never against the working directory, and create its folder.

    The default (`sqlite:///instance/parking.db`) is `parking.db` in Flask's instance folder;
    another relative path is taken from the project folder (PROJECT_DIR). Flask-SQLAlchemy would
    resolve it against the instance folder, so the default would end up one level too deep; the
    working directory would give a process supervisor, started elsewhere, a new empty database.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return url
    path = Path(parsed.database)
    if url == DEFAULT_DATABASE_URL:
        path = Path(instance_path) / path.name
    elif not path.is_absolute():
        path = PROJECT_DIR / path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # the start-up check names the folder (parking/startup.py), /healthz answers 503
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):  # noqa: ARG001
    """Every SQLite connection of every engine gets parking.dbconnect's pragmas."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        sqlite_pragmas(dbapi_connection)
