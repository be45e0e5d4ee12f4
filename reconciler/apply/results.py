"""How the steps of an apply ended, as data: what the command line, the daemon and a sweep's
trials all report."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from reconciler.specs.base import ResourceId


class Outcome(enum.StrEnum):
    """How one step of an apply ended; a str, so output and JSON read as before."""

    DONE = "done"
    FAILED = "failed"
    BLOCKED = "blocked"  # its gates failed: the version in use keeps serving
    SKIPPED = "skipped"  # not started (an upstream failed, or the apply was interrupted)
    PRUNED = "pruned"  # a sweep trial's fine-tune stopped early by the sweep's pruning rule


NOT_DONE = frozenset({Outcome.FAILED, Outcome.BLOCKED, Outcome.SKIPPED, Outcome.PRUNED})
"""Outcomes that stop what depends on the step."""


@dataclass
class StepResult:
    resource: ResourceId
    outcome: Outcome
    message: str = ""
    url: str | None = None


@dataclass
class ApplyResult:
    steps: list[StepResult] = field(default_factory=list)

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.outcome == Outcome.FAILED]

    @property
    def blocked(self) -> list[StepResult]:
        return [s for s in self.steps if s.outcome in (Outcome.BLOCKED, Outcome.SKIPPED)]

    def summary(self) -> str:
        """The line an apply ends with, on the command line and in the daemon's log."""
        done = sum(1 for s in self.steps if s.outcome == Outcome.DONE)
        return f"Applied: {done} done, {len(self.failed)} failed, {len(self.blocked)} blocked or skipped."
