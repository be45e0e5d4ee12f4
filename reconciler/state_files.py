"""The SQLite files a project's state lives in (`.tuneops/mlflow.db`, `.tuneops/processes.db`),
checked before use: one that is damaged, unreadable, or something else in its place is the
user's to fix, so it is named in one line instead of surfacing as a database driver's traceback
(or, for MLflow, after a minute of retries).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"


def sqlite_file_problem(path: Path) -> str | None:
    """Why the SQLite database at `path` cannot be used, or None. A missing one is fine when
    its folder can be made and written: it is created on first use."""
    try:
        status = path.stat()
    except FileNotFoundError:
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"cannot create {path}: {folder} is not writable"
        return None
    except OSError as error:
        return f"cannot read {path}: {error.strerror or error}"
    if stat.S_ISDIR(status.st_mode):
        return f"{path} is a folder, not a database"
    if not stat.S_ISREG(status.st_mode):
        return f"{path} is not a regular file"
    if status.st_size == 0:
        return None  # SQLite takes an empty file for a new database
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as error:
        return f"cannot read {path}: {error.strerror or error}"
    if header != SQLITE_HEADER:
        return f"{path} is not a SQLite database (damaged, or another file in its place)"
    return None


def sqlite_cause(error: BaseException) -> sqlite3.Error | None:
    """The sqlite3 error behind `error` (SQLAlchemy and MLflow wrap it), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, sqlite3.Error):
            return current
        seen.add(id(current))
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return None


def is_state_database_error(error: sqlite3.Error) -> bool:
    """A database that cannot be opened, read or written (damaged, locked, read-only, no
    space), as opposed to a query tuneops got wrong (a bug)."""
    return type(error) in (sqlite3.DatabaseError, sqlite3.OperationalError)


def looks_damaged(message: str) -> bool:
    """Whether a problem above, or SQLite's own message, says the file is no good database
    (rather than unreadable or locked): then moving it aside is the way out."""
    return any(words in message for words in ("not a SQLite database", "file is not a database",
                                              "database disk image is malformed"))
