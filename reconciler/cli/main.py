"""`tuneops`'s entry point: every command registered, and unexpected exceptions turned into one line."""

from __future__ import annotations

import os
import sys

import click

# Importing the command modules is what registers their commands on `cli`.
from reconciler.cli import (  # noqa: F401
    base,
    daemon_commands,
    history_commands,
    import_commands,
    operate_commands,
    plan_commands,
    spec_commands,
    sweep_commands,
    ui_commands,
)
from reconciler.cli.base import EXIT_INVALID, cli
from reconciler.errors import TuneopsError


def main() -> None:
    """Console entry point: turns unexpected exceptions into one line unless TUNEOPS_DEBUG is set."""
    try:
        cli.main(prog_name="tuneops")
    except SystemExit as done:
        if base.short_lived_run():
            sys.stdout.flush()
            sys.stderr.flush()
            code = done.code
            os._exit(code if isinstance(code, int) else (0 if code is None else EXIT_INVALID))
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as error:  # a bug, unless it is about the user's files: say which, briefly
        if os.environ.get("TUNEOPS_DEBUG"):
            raise
        from reconciler.redaction import redact

        problem = _users_problem(error)
        if problem is not None:
            click.echo(f"error: {redact(problem)}", err=True)
        else:
            click.echo(f"tuneops: internal error: {type(error).__name__}: {redact(str(error))}\n"
                       "This is a bug in tuneops. Rerun with TUNEOPS_DEBUG=1 to see the traceback.",
                       err=True)
        sys.exit(EXIT_INVALID)



def _users_problem(error: Exception) -> str | None:
    """The message for an error that reached `main` but is the user's to fix, or None for a bug:
    a file that cannot be read or written (permissions, a folder where a file belongs), a
    state database that is damaged or cannot be opened, and any TuneopsError raised outside a
    command. Commands catch these where they can say more; this is the net for the places that
    cannot."""
    from reconciler.state_files import is_state_database_error, sqlite_cause

    if isinstance(error, TuneopsError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        target = f"{error.filename} -> {error.filename2}" if error.filename2 else str(error.filename)
        return f"cannot use {target}: {error.strerror or error}"
    cause = sqlite_cause(error)
    if cause is not None and is_state_database_error(cause):
        return (f"a state database cannot be used: {cause} (the project's state is in .tuneops/ beside its "
                "tuneops.yaml; TUNEOPS_DEBUG=1 shows which file)")
    return None

