"""Shared fixtures: an app per test on a fresh database (SQLite, and PostgreSQL when reachable),
its HTTP client and CLI runner, the small test city, and real servers over loopback."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from parking import create_app
from parking.extensions import db

from . import hypothesis_profiles

hypothesis_profiles.register()

DATA = Path(__file__).parent / "data"
CITY_FILE = DATA / "city.geojson"
ADMIN_TOKEN = "test-admin-token"
POSTGRES_URL = os.environ.get(
    "PARKING_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)


def _postgres_reachable() -> str | None:
    """None when PostgreSQL answers, else the reason to skip."""
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}"


def require_postgres() -> None:
    """Skip the calling test, with the reason, when the test PostgreSQL does not answer."""
    skip = _postgres_reachable()
    if skip:
        pytest.skip(skip)


@contextlib.contextmanager
def empty_postgres_database(prefix: str):
    """A database of its own on the test PostgreSQL, empty (no schema), dropped afterwards;
    yields its URL (the calling test is skipped when PostgreSQL does not answer)."""
    require_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def _template_dbs(tmp_path_factory):
    """Migrated empty databases to copy or truncate: one SQLite file, one PostgreSQL database."""
    made = {}
    sqlite_path = tmp_path_factory.mktemp("template") / "template.db"
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{sqlite_path}"})
    with app.app_context():
        from parking.cli import init_db

        init_db()
        db.engine.dispose()
    made["sqlite"] = sqlite_path
    skip = _postgres_reachable()
    if skip is None:
        name = f"parking_test_{uuid.uuid4().hex[:8]}"
        admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
        app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url})
        with app.app_context():
            from parking.cli import init_db

            init_db()
            db.engine.dispose()
        made["postgresql"] = url
    else:
        made["postgresql_skip"] = skip
    yield made
    if "postgresql" in made:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def database_url(backend: str, templates: dict, tmp_path: Path) -> str:
    """A fresh, migrated, empty database of the backend for one test."""
    if backend == "sqlite":
        path = tmp_path / "parking.db"
        shutil.copy(templates["sqlite"], path)
        return f"sqlite:///{path}"
    if "postgresql" not in templates:
        pytest.skip(templates["postgresql_skip"])
    url = templates["postgresql"]
    engine = create_engine(url)
    with engine.begin() as conn:
        # DELETE beats TRUNCATE on tables this small (TRUNCATE rewrites files each time).
        for table in ("forecast_checks", "forecast_curves", "readings", "bay_runs", "rollup_dirty", "hourly_utilization",
                      "credential_bays", "sensor_credentials", "bays", "lots"):
            conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    """The database backend under test."""
    return request.param


@pytest.fixture
def app(backend, _template_dbs, tmp_path):
    """The app on a fresh database, with an app context pushed for the test's duration."""
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": database_url(backend, _template_dbs, tmp_path),
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "STALE_AFTER": 1800,
            "LOTS_FILE": str(CITY_FILE),
            # Tests post a reading and look at the list at once; tests/test_lot_list.py covers the snapshot.
            "LOTS_SNAPSHOT_SECONDS": 0,
            # Suites about other things post unprotected readings; tests/test_oscore.py runs the
            # deployed default (oscore) with real OSCORE clients.
            "SENSOR_AUTH": "none",
        }
    )
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    """HTTP test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """CLI runner."""
    return app.test_cli_runner()


@pytest.fixture
def city(app):
    """The small test city imported: lots PR-WEST (P+R, 4 bays), GARAGE (6), STREET (2)."""
    from parking.lots import import_lot_file

    import_lot_file(CITY_FILE, "Europe/Berlin")
    return app


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_server(city):
    """The real app served over HTTP on 127.0.0.1 by waitress; yields its base URL."""
    from waitress.server import create_server

    server = create_server(city, host="127.0.0.1", port=free_port(), threads=4)
    stopping = threading.Event()

    def serve():
        try:
            server.run()
        except (OSError, ValueError):
            # Closing the sockets below while the loop sits in select() on them makes that select
            # fail (EBADF) now and then: the end of serving, not an error, once we are stopping.
            if not stopping.is_set():
                raise

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    stopping.set()
    # Let the worker threads finish what they serve first: closing the trigger under a busy worker
    # makes it fail with EBADF in the background.
    server.task_dispatcher.shutdown()
    server.close()
    thread.join(timeout=5)


@pytest.fixture
def coap_gateway(city):
    """The real CoAP gateway running in a background thread on 127.0.0.1; yields (host, port)."""
    from gateway.server import run_in_thread

    port = free_port(socket.SOCK_DGRAM)
    handle = run_in_thread(city, "127.0.0.1", port)
    yield ("127.0.0.1", port)
    handle.stop()


CHROMIUM = os.environ.get("PARKING_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def require_chromium() -> None:
    """Skip the calling test module when Chromium is missing, unless CI is set (then fail)."""
    if os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK):
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but there is no Chromium at {CHROMIUM}", pytrace=False)
    pytest.skip(
        f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium, or set "
        "PARKING_CHROMIUM); with CI set they fail instead of skipping",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def browser():
    """One headless Debian Chromium per test module, driven by Playwright.

    Not per session: Playwright's sync API keeps an event loop running in the main thread while
    it is started, and later tests that call asyncio.run() (the CoAP clients) would fail.
    """
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
