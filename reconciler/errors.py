"""One base for the errors a user sees: a one-line message, an exit code, an optional hint,
and whether trying again can help.

The exception carries what to do next, as kopf's do: a `PermanentError` (a bad spec, a refused
prune) will fail the same way until someone changes something; a `TemporaryError` (MLflow not
reachable, an API answering 429) may pass after `delay` seconds. The command line prints any of
them as `error: <message>` (and `hint: <hint>`) with the exit code, never a traceback; the
daemon records one as a failed tick. Layer 0: imports nothing from reconciler.
"""

from __future__ import annotations

EXIT_ERROR = 1


class TuneopsError(Exception):
    """A failure the user can act on, said in one line. `hint` is a likely fix ("did you mean
    `learningRate`?", "run `tuneops init`"); `retryable` says whether the same call may pass
    later, `delay` after how many seconds."""

    exit_code: int = EXIT_ERROR
    retryable: bool = False
    delay: float | None = None

    def __init__(self, *args: object, hint: str | None = None, delay: float | None = None):
        super().__init__(*args)
        self.hint = hint
        if delay is not None:
            self.delay = delay

    def one_line(self) -> str:
        """The message as the command line prints it after `error: `, with the hint below it."""
        hint = getattr(self, "hint", None)
        return str(self) + (f"\nhint: {hint}" if hint else "")


class PermanentError(TuneopsError):
    """Fails the same way until someone changes the specs or the settings: do not retry."""

    retryable = False


class TemporaryError(TuneopsError):
    """May pass on a later try (a service not reachable yet, a rate limit): retry after `delay`
    when the error knows it (a server's Retry-After), else after the caller's own backoff."""

    retryable = True
