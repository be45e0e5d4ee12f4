"""The `tuneops` command line: `base` (the group, errors, shared options), one module per family of
commands, and `main` (the console entry point)."""

from reconciler.cli.base import UserError, cli
from reconciler.cli.main import main

__all__ = ["UserError", "cli", "main"]
