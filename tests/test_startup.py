"""Start-up settings (parking/startup.py, parking/config.py): where the default database lives,
what may be logged about it, and the one-line messages for a wrong DATABASE_URL."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import create_engine, text

from parking import create_app
from parking.config import PROJECT_DIR
from parking.startup import StartupError, check_database, database_label

from .conftest import POSTGRES_URL, require_postgres


def _url_of(config: dict) -> str:
    return create_app({"TESTING": True, **config}).config["SQLALCHEMY_DATABASE_URI"]


def test_default_sqlite_database_is_in_the_instance_folder_whatever_the_working_directory(tmp_path, monkeypatch):
    """A supervisor starting us in another directory must open the same database, not a new one."""
    monkeypatch.chdir(tmp_path)
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite:///instance/parking.db"})
    expected = PROJECT_DIR / "instance" / "parking.db"
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{expected}"
    assert app.instance_path == str(PROJECT_DIR / "instance")
    assert not (tmp_path / "instance").exists()


def test_relative_sqlite_path_is_taken_from_the_project_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _url_of({"SQLALCHEMY_DATABASE_URI": "sqlite:///instance/other.db"}) == (
        f"sqlite:///{PROJECT_DIR / 'instance' / 'other.db'}"
    )
    absolute = tmp_path / "x" / "a.db"
    assert _url_of({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{absolute}"}) == f"sqlite:///{absolute}"
    assert (tmp_path / "x").is_dir()  # its folder is made, so SQLite can create the file


def test_database_label_never_shows_the_password():
    label = database_label("postgresql+psycopg://parking:s3cret-pw@db.example:5433/city")
    assert "s3cret-pw" not in label
    assert label == "postgresql+psycopg://parking:***@db.example:5433/city"


@pytest.mark.parametrize(
    "url, says",
    [
        ("postgres://parking@127.0.0.1/city", "write postgresql+psycopg:// instead"),
        ("mysql://parking@127.0.0.1/city", "only SQLite"),
        ("not a url", "is not a database URL"),
    ],
)
def test_unusable_database_url_is_one_line_naming_the_setting(url, says):
    with pytest.raises(StartupError) as refused:
        create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url})
    message = str(refused.value)
    assert "DATABASE_URL" in message and says in message
    assert "\n" not in message


def _closed_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_postgresql_not_answering_names_host_port_and_setting():
    url = f"postgresql+psycopg://parking:pw@127.0.0.1:{_closed_tcp_port()}/city"
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url})
    with pytest.raises(StartupError) as refused:
        check_database(app)
    message = str(refused.value)
    assert "does not answer" in message and "DATABASE_URL" in message and "127.0.0.1:" in message
    assert "pw" not in message.replace("postgresql+psycopg", "")


def test_postgresql_database_missing_says_create_it():
    require_postgres()
    name = f"parking_missing_{uuid.uuid4().hex[:8]}"
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url})
    with pytest.raises(StartupError) as refused:
        check_database(app)
    assert f"the PostgreSQL database '{name}' does not exist" in str(refused.value)
    assert f"createdb {name}" in str(refused.value)


def test_sqlite_folder_not_writable_names_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{blocker}/parking.db"})
    with pytest.raises(StartupError) as refused:
        check_database(app)
    assert f"cannot open the SQLite database {blocker}/parking.db" in str(refused.value)
    assert "DATABASE_URL" in str(refused.value)


def test_database_in_use_is_logged_without_password(app, caplog):
    caplog.set_level("INFO", logger="parking")
    check_database(app)
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    assert f"database {database_label(url)}" in caplog.text
    engine = create_engine(url)
    with engine.connect() as connection:  # the check left the database usable
        assert connection.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_flask_cli_with_an_unusable_database_url_is_one_line(tmp_path):
    env = {**os.environ, "DATABASE_URL": "postgres://parking@127.0.0.1/city"}
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "init-db"], cwd=PROJECT_DIR,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: DATABASE_URL starts with postgres://, which SQLAlchemy does not know: "
        "write postgresql+psycopg:// instead (the rest stays as it is)"
    )
