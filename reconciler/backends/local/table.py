"""The local backend's process table (`<state dir>/processes.db`): a row per process started.

A row says what the process is (kind, name, fingerprint, attempt), how to recognise it (pid and
start ticks), where it logs and how it ended. Model servers add their port, URL, the model they
serve and their start's token; a Deployment's front port (kind `Router`) is a row of its own.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from reconciler.backends.base import BackendError
from reconciler.state_files import is_state_database_error, looks_damaged, sqlite_file_problem

Row = dict[str, Any]  # one row of the process table
SERVER_KIND = "Deployment"
ROUTER_KIND = "Router"  # a Deployment's front port: not a job, not a model server

_SCHEMA = """
CREATE TABLE IF NOT EXISTS processes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, name TEXT NOT NULL, fingerprint TEXT NOT NULL, attempt INTEGER NOT NULL,
    pid INTEGER NOT NULL, pid_start_ticks INTEGER, argv TEXT NOT NULL, job_file TEXT,
    log_path TEXT NOT NULL, exit_file TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL,
    exit_code INTEGER, message TEXT NOT NULL DEFAULT '', port INTEGER, url TEXT,
    model_fingerprint TEXT, model_version TEXT, stopped INTEGER NOT NULL DEFAULT 0, token TEXT
);
CREATE INDEX IF NOT EXISTS processes_by_resource ON processes (kind, name, fingerprint);
"""
# Columns added since the first release, for tables an earlier tuneops created.
_ADDED_COLUMNS = {"token": "TEXT"}
_DAMAGED_HINT = (" (if no tuneops job or model server is running, move it aside and tuneops starts an "
                 "empty one; running ones are then not known to it)")


class ProcessTable:
    """The SQLite file, opened anew for each use: callers may be on several threads or in
    several processes."""

    def __init__(self, database: Path):
        self.database = database
        self._ready = False
        self._setup = threading.Lock()  # threads creating the table at once: one does it

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A table that cannot be opened (damaged, unreadable, a folder in its place) is a
        BackendError naming the file."""
        if not self._ready:
            problem = sqlite_file_problem(self.database)
            if problem:
                raise BackendError(f"cannot use the process table: {problem}"
                                   + _DAMAGED_HINT * looks_damaged(problem))
        try:
            self.database.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.database, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise BackendError(f"cannot open the process table {self.database}: {error}") from None
        connection.row_factory = sqlite3.Row
        try:
            try:
                connection.execute("PRAGMA busy_timeout = 30000")
                if not self._ready:
                    # Switching to WAL takes an exclusive lock that busy_timeout does not wait for:
                    # several threads doing it on a new database at once got "database is locked".
                    with self._setup:
                        if not self._ready:
                            connection.execute("PRAGMA journal_mode = WAL")
                            connection.executescript(_SCHEMA)
                            _add_missing_columns(connection)
                            self._ready = True
            except sqlite3.Error as error:
                if not is_state_database_error(error):
                    raise
                raise BackendError(f"cannot use the process table {self.database}: {error}"
                                   + _DAMAGED_HINT * looks_damaged(str(error))) from None
            yield connection
        finally:
            connection.close()


def _add_missing_columns(table: sqlite3.Connection) -> None:
    present = {row["name"] for row in table.execute("PRAGMA table_info(processes)")}
    for column, kind in _ADDED_COLUMNS.items():
        if column not in present:
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it first
                table.execute(f"ALTER TABLE processes ADD COLUMN {column} {kind}")


@contextlib.contextmanager
def transaction(table: sqlite3.Connection) -> Iterator[None]:
    table.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        table.execute("ROLLBACK")
        raise
    table.execute("COMMIT")


def rows(table: sqlite3.Connection, where: str, parameters: Sequence[Any] = ()) -> list[Row]:
    return [dict(row) for row in table.execute(f"SELECT * FROM processes WHERE {where}", parameters)]


def unfinished_rows(table: sqlite3.Connection, where: str = "1", parameters: Sequence[Any] = ()) -> list[Row]:
    return rows(table, f"finished_at IS NULL AND ({where})", parameters)


def insert(table: sqlite3.Connection, row: Row) -> int:
    columns = [column for column in row if column != "id"]
    cursor = table.execute(
        f"INSERT INTO processes ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        [row[column] for column in columns])
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def finish(table: sqlite3.Connection, row_id: int, finished_at: float, exit_code: int | None,
           message: str) -> None:
    table.execute("UPDATE processes SET finished_at = ?, exit_code = ?, message = ? "
                  "WHERE id = ? AND finished_at IS NULL", (finished_at, exit_code, message, row_id))


def mark_stopped(table: sqlite3.Connection, row_id: int) -> None:
    """Out of the current set: a stopped server or front port is no longer any Deployment's."""
    table.execute("UPDATE processes SET stopped = 1 WHERE id = ?", (row_id,))


def count_attempts(table: sqlite3.Connection, kind: str, name: str, fingerprint: str) -> int:
    query = "SELECT COUNT(*) FROM processes WHERE kind = ? AND name = ? AND fingerprint = ?"
    return table.execute(query, (kind, name, fingerprint)).fetchone()[0]


_NEWEST_JOBS = f"""
SELECT p.*, newest.attempts FROM processes p JOIN (
    SELECT MAX(id) AS id, COUNT(*) AS attempts FROM processes
    WHERE kind NOT IN ('{SERVER_KIND}', '{ROUTER_KIND}') {{where}}
    GROUP BY kind, name, fingerprint) newest ON p.id = newest.id ORDER BY p.id
"""


def newest_jobs(table: sqlite3.Connection) -> list[Row]:
    return [dict(row) for row in table.execute(_NEWEST_JOBS.format(where=""))]


def newest_job(table: sqlite3.Connection, kind: str, name: str, fingerprint: str) -> Row | None:
    query = _NEWEST_JOBS.format(where="AND kind = ? AND name = ? AND fingerprint = ?")
    found = [dict(row) for row in table.execute(query, (kind, name, fingerprint))]
    return found[0] if found else None


def _current(table: sqlite3.Connection, kind: str) -> list[Row]:
    """The newest row of `kind` per name that was not stopped (it may have ended on its own)."""
    return rows(table, "id IN (SELECT MAX(id) FROM processes WHERE kind = ? AND stopped = 0 GROUP BY name) "
                       "ORDER BY id", (kind,))


def current_servers(table: sqlite3.Connection) -> list[Row]:
    return _current(table, SERVER_KIND)


def current_server(table: sqlite3.Connection, name: str) -> Row | None:
    return next((row for row in current_servers(table) if row["name"] == name), None)


def current_routers(table: sqlite3.Connection) -> dict[str, Row]:
    """Each Deployment's front port, by Deployment name."""
    return {row["name"]: row for row in _current(table, ROUTER_KIND)}


def last_router(table: sqlite3.Connection, name: str) -> Row | None:
    """The newest front port of a Deployment, stopped or not: a new one reuses its port."""
    found = rows(table, "kind = ? AND name = ? ORDER BY id DESC LIMIT 1", (ROUTER_KIND, name))
    return found[0] if found else None
