"""Which run's log `tuneops logs` shows: the run at the fingerprint the specs ask for (after a
rollback, the version serving), or the run that built (or scored) model version N; failing
both, the newest. Each answer comes with a note that says which it is."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from reconciler.errors import TuneopsError


def logs_of_version(backend: Any, rid: Any, version: int, runs: Sequence[Any],
                    **how: Any) -> tuple[Iterable[str], str]:
    """(lines, note) of the run of model version `version` among `runs` (BuiltRun, newest
    first), or an error that lists the versions built."""
    chosen = next((run for run in runs if run.model_version and run.version_number == version), None)
    what = "built" if rid.kind == "FineTune" else "scored"
    if chosen is None:
        numbers = sorted({run.version_number for run in runs if run.model_version})
        listed = (f"versions {what}: {', '.join(map(str, numbers))}" if numbers
                  else f"no version {what} yet")
        raise TuneopsError(f"{rid} has no version {version} ({listed}; see `tuneops status`)")
    lines = backend.logs(rid.kind, rid.name, fingerprint=chosen.fingerprint, **how)
    if lines is None:
        raise TuneopsError(f"no log of {rid} for {chosen.model_version} here: the run that {what} it "
                           f"(fingerprint {chosen.fingerprint[:12]}) left no log on this backend")
    return lines, f"{rid}: the run that {what} {chosen.model_version} (fingerprint {chosen.fingerprint[:12]})"


def logs_of_wanted_run(backend: Any, rid: Any, fingerprint: str | None,
                       **how: Any) -> tuple[Iterable[str] | None, str | None]:
    """(lines, note): the run at `fingerprint` (what the specs ask for; None when they do not
    validate now), else the newest run; (None, None) when it never ran here."""
    if fingerprint is not None:
        lines = backend.logs(rid.kind, rid.name, fingerprint=fingerprint, **how)
        if lines is not None:
            return lines, f"{rid}: the run at the fingerprint the specs ask for ({fingerprint[:12]})"
    lines = backend.logs(rid.kind, rid.name, **how)
    why = ("the specs do not validate now" if fingerprint is None
           else f"none at the fingerprint the specs ask for ({fingerprint[:12]}) yet")
    return (lines, f"{rid}: the newest run ({why})") if lines is not None else (None, None)
