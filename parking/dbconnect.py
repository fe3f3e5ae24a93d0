"""How every engine connects to PostgreSQL: timeouts and TCP keepalive, so that a database that
stops answering becomes an error within seconds instead of a request held for as long as the
network stays silent.

This module owns the connection settings of the web app's engine (which the scheduler and the
gateway's reads share) and of the gateway writer's own engine: `engine_options` adds them to an
engine's options. A reachable but slow server is bounded by `statement_timeout` (and the writer's
`lock_timeout`); a server or network that goes silent with the connection open (packets
dropped, a frozen host) by libpq's TCP keepalive and `tcp_user_timeout`; a connection attempt by
`connect_timeout`. The checks that must answer within a set time whatever the database does
(`/healthz`, the gateway's writer and reads) also keep their own deadline on top of these, since
a server that is alive enough for the kernel to acknowledge packets (a stopped process, a stuck
proxy) trips none of them. SQLite needs none of this: it has no network. Its settings are the
pragmas of `sqlite_pragmas`, which every SQLite connection gets (the web app's through a hook in
`parking`, the writer's with its own busy timeout and cache).
"""
from __future__ import annotations

import re

from sqlalchemy.engine import make_url

CONNECT_TIMEOUT = 3  # seconds for one connection attempt (libpq's connect_timeout)
# An idle-looking connection (a query sent, no answer) is probed after 5 s, every 2 s, and given
# up after 3 unanswered probes: a silent peer is an error after ~11 s.
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
# Data sent and not acknowledged for this long (packets vanishing) ends the connection.
TCP_USER_TIMEOUT_MS = 10_000
# Longest statement of the web app, the scheduler and the CLI (a year-long report's queries take
# a few seconds); the writer's statements get a few seconds (gateway/writer_process.py).
STATEMENT_TIMEOUT = 60.0

# A writer waits this long for SQLite's lock instead of failing at once (the gateway's writer
# waits less: gateway/writer_process.py).
SQLITE_BUSY_TIMEOUT = 10.0
# Readings are indexed by bay first, so inserts land all over the index: keep it cached.
SQLITE_CACHE_KIB = 64 * 1024

_OURS = re.compile(r"\s*-c\s*(statement_timeout|lock_timeout)=\S+")


def engine_options(url: str, options: dict | None, *, statement_timeout: float = STATEMENT_TIMEOUT,
                   lock_timeout: float | None = None) -> dict:
    """`options` (SQLALCHEMY_ENGINE_OPTIONS) with the timeouts and keepalive for a PostgreSQL URL.

    A setting the URL's query or the given connect_args already has is kept; the timeouts are
    set anew (so the writer's shorter ones replace the web app's it inherits). Other URLs: as given.
    """
    options = dict(options or {})
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return options
    connect_args = dict(options.get("connect_args") or {})
    for name, value in {"connect_timeout": CONNECT_TIMEOUT, **KEEPALIVE,
                        "tcp_user_timeout": TCP_USER_TIMEOUT_MS}.items():
        if name not in parsed.query:
            connect_args.setdefault(name, value)
    settings = f"-c statement_timeout={int(statement_timeout * 1000)}"
    if lock_timeout is not None:
        settings += f" -c lock_timeout={int(lock_timeout * 1000)}"
    theirs = _OURS.sub("", str(connect_args.get("options", ""))).strip()
    connect_args["options"] = f"{theirs} {settings}".strip()
    options["connect_args"] = connect_args
    return options


def sqlite_pragmas(dbapi_connection, *, busy_timeout: float = SQLITE_BUSY_TIMEOUT,
                   cache_kib: int = SQLITE_CACHE_KIB) -> None:
    """Set up a new sqlite3 connection: WAL lets readers work while the gateway writes, FULL
    sync makes a commit durable (2.04 means stored), busy_timeout makes writers wait, not fail."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
    cursor.close()
