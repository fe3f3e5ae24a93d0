"""Portable SQL helpers: the same code on SQLite and PostgreSQL, no dialect-only SQL elsewhere."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Float, any_, bindparam, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session


def upsert_insert(session: Session, table):
    """An INSERT supporting ON CONFLICT for the session's database (SQLite or PostgreSQL)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database: {name}")


def driver_tuples(session: Session, stmt) -> list[tuple]:
    """All rows of a Core SELECT as the driver's own tuples, in the session's transaction.

    For the few queries that return hundreds of thousands of rows (the reports' stored hours):
    SQLAlchemy's Row objects and result processing cost more there than the query itself.
    Only for columns whose driver values are already what the caller wants (numbers, text).
    """
    connection = session.connection()
    compiled = stmt.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    if compiled.positional:
        params = tuple(params[name] for name in compiled.positiontup)
    dbapi_connection = connection.connection.dbapi_connection
    if connection.dialect.name == "postgresql":
        # Binary results: numbers arrive as machine values, not text psycopg must parse.
        cursor = dbapi_connection.cursor(binary=True)
    else:
        cursor = dbapi_connection.cursor()
    try:
        cursor.execute(str(compiled), params)
        return cursor.fetchall()
    finally:
        cursor.close()


def in_subquery(session: Session, column, subquery):
    """`column IN (subquery)`, written so that each value becomes a probe of `column`'s index.

    PostgreSQL gets `column = ANY(ARRAY(subquery))`: the subquery runs once and the outer scan is
    an index scan for the values, whatever the statistics say. With a join or a plain IN, for a
    time range newer than its statistics (the hour just stored) it chose a sequential scan of the
    whole readings table: 0.6 s against 0.1 s at 10 million readings, growing with the history.
    SQLite's planner probes the index for `IN (subquery)` by itself.
    """
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(func.array(subquery.scalar_subquery()))
    return column.in_(subquery)


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most `size` items: ids per IN (...) list, rows per executemany."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def one_of(session: Session, column, values: Sequence):
    """`column IN values`: on PostgreSQL one array parameter (`= ANY(...)`), so the statement's
    text is the same whatever the number of values (one prepared statement, nothing to expand
    per call); on SQLite a plain IN."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(values)


class Statements:
    """Driver-level writes collected and then sent together (`run`): on PostgreSQL in one
    pipeline, so that all of them and the transaction's BEGIN cost one round trip to the server
    instead of one each; on SQLite (in-process, no round trips) one after the other. In the order
    added; nothing of them is sent before `run`."""

    def __init__(self, session: Session):
        self.session = session
        self.connection = session.connection()
        self.postgresql = self.connection.dialect.name == "postgresql"
        self.items: list[tuple[str, object]] = []

    def insert_rows(self, table, columns: Sequence[str], rows: Sequence[tuple], conflict: str = "") -> None:
        """INSERT `rows` (tuples in `columns` order) into `table`, `conflict` the ON CONFLICT clause.

        PostgreSQL: one statement for all rows, one array per column through unnest: a single
        execution in the server instead of one per row (which cost the writer's group more than
        the rows themselves). SQLite: one executemany. Both at the driver level: SQLAlchemy's
        per-row parameter processing cost more than the insert in bulk loads.
        """
        if not rows:
            return
        names = ", ".join(columns)
        if self.postgresql:
            arrays = ", ".join(f"%s::{_array_type(self.connection, table, c)}" for c in columns)
            sql = f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({arrays}) {conflict}"
            self.items.append((sql, _arrays(table, columns, rows)))
            return
        sql = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(columns))}) {conflict}"
        self.items += [(sql, list(chunk)) for chunk in chunks(rows, 5000)]

    def update_rows(self, table, key: str, columns: Sequence[str], rows: Sequence[tuple]) -> None:
        """UPDATE `table` SET `columns` for each row (key, then the columns' values): PostgreSQL
        one UPDATE ... FROM unnest(arrays), SQLite one executemany (see `insert_rows`)."""
        if not rows:
            return
        if self.postgresql:
            names = [key, *columns]
            arrays = ", ".join(f"%s::{_array_type(self.connection, table, c)}" for c in names)
            sets = ", ".join(f"{c} = v.{c}" for c in columns)
            # The key's array a second time as `= ANY(...)`: PostgreSQL then probes the key's
            # index for the rows; a join alone it planned as a hash join over a scan of the whole
            # table (1.7 ms for the 10,000 bays of the benchmark's city, growing with the table).
            sql = (f"UPDATE {table.name} SET {sets} FROM unnest({arrays}) AS v({', '.join(names)}) "
                   f"WHERE {table.name}.{key} = v.{key} "
                   f"AND {table.name}.{key} = ANY(%s::{_array_type(self.connection, table, key)})")
            values = _arrays(table, names, rows)
            self.items.append((sql, (*values, values[0])))
            return
        sql = f"UPDATE {table.name} SET {', '.join(f'{c} = ?' for c in columns)} WHERE {key} = ?"
        self.items.append((sql, [(*row[1:], row[0]) for row in rows]))

    def run(self, commit: bool = False) -> None:
        """Send every statement added (and forget them); `commit`: on PostgreSQL the COMMIT goes
        in the same pipeline (the caller's session.commit() after it then has nothing left to
        send), on SQLite the caller's session.commit() does it."""
        items, self.items = self.items, []
        if not self.postgresql:
            for sql, params in items:
                self.connection.exec_driver_sql(sql, params)
            return
        if not items and not commit:
            return
        dbapi_connection = self.connection.connection.dbapi_connection
        with driver_errors(self.connection, items[0][0] if items else "COMMIT"):
            with dbapi_connection.pipeline():
                for sql, params in items:
                    dbapi_connection.execute(sql, params)
                if commit:
                    # As a statement: psycopg's commit() would sync the pipeline, and its end
                    # sync again, a round trip more. psycopg follows the server's transaction
                    # state, so its commit() after this (from session.commit()) sends nothing.
                    dbapi_connection.execute("COMMIT")


def fetch_together(session: Session, queries: Sequence[tuple[str, tuple]]) -> list[list[tuple]]:
    """The rows of each query (driver SQL and its parameters): on PostgreSQL all sent in one
    pipeline, one round trip (the transaction's BEGIN included), on SQLite one after the other."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return [list(connection.exec_driver_sql(sql, params)) for sql, params in queries]
    dbapi_connection = connection.connection.dbapi_connection
    with driver_errors(connection, queries[0][0]):
        with dbapi_connection.pipeline():
            cursors = [dbapi_connection.execute(sql, params) for sql, params in queries]
        return [cursor.fetchall() for cursor in cursors]


@contextmanager
def driver_errors(connection, statement: str):
    """A driver error raised as SQLAlchemy's own (what `exec_driver_sql` would raise: an
    OperationalError is still one), the connection invalidated when it is gone, for statements
    sent to the driver directly (a pipeline)."""
    dbapi = connection.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        gone = connection.dialect.is_disconnect(exc, connection.connection.dbapi_connection, None)
        if gone:
            connection.invalidate(exc)
        raise DBAPIError.instance(statement, None, exc, dbapi.Error, connection_invalidated=gone,
                                  dialect=connection.dialect) from exc


def _arrays(table, columns: Sequence[str], rows: Sequence[tuple]) -> tuple[list, ...]:
    """The rows as one list per column; a float column's values all floats (psycopg refuses a
    list mixing int and float)."""
    arrays = tuple(list(values) for values in zip(*rows))
    for name, values in zip(columns, arrays):
        if isinstance(table.c[name].type, Float):
            values[:] = [v if v is None or type(v) is float else float(v) for v in values]
    return arrays


def _array_type(connection, table, column: str) -> str:
    """The PostgreSQL array type of one of `table`'s columns, e.g. DOUBLE PRECISION[]."""
    return f"{table.c[column].type.compile(dialect=connection.dialect)}[]"
