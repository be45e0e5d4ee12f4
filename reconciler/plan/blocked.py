"""Why a plan action is blocked, as data: an upstream that is not ready, a failed gate, attempts used up.

The plan's English reason is written from these records, so whatever acts on a block (the daemon's
notifications, readers of the JSON plan) reads the fields rather than searching the words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from reconciler.specs.base import ResourceId

if TYPE_CHECKING:
    from reconciler.plan.gates import GateResult

RETRY_FAILED = "--retry-failed"


@dataclass(frozen=True)
class UpstreamNotReady:
    """One upstream that holds a resource back, with its own action and why."""

    resource: ResourceId
    state: Literal["blocked", "suspended"]
    reason: str = ""  # the upstream's own reason, as its plan line says it
    blocked_by: BlockedBy | None = None  # the upstream's own block, when it is blocked

    def describe(self) -> str:
        return f"{self.resource} is {self.state}" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class UpstreamBlock:
    """Upstreams that are blocked or suspended: nothing can be built on them yet."""

    kind: ClassVar[str] = "upstream"
    upstreams: tuple[UpstreamNotReady, ...]
    current_keeps_serving: bool = False  # a Deployment's running server stays as it is

    def describe(self) -> str:
        kept = "; the current version keeps serving" if self.current_keeps_serving else ""
        return "waiting for " + "; ".join(upstream.describe() for upstream in self.upstreams) + kept


@dataclass(frozen=True)
class FailedEvaluation:
    """One required Evaluation that scored the model version and did not pass."""

    evaluation: str
    summary: str  # as the run recorded it, without "failed: ": "gate exact_match 0.21 < 0.5"
    failures: tuple[GateResult, ...] = ()  # each failed check: metric, value, operator, bound

    @property
    def resource(self) -> ResourceId:
        return ResourceId("Evaluation", self.evaluation)


@dataclass(frozen=True)
class GateBlock:
    """A Deployment held back: the model version it would serve failed a required Evaluation."""

    kind: ClassVar[str] = "gate"
    model: str  # the model version, or the FineTune while it has none: "sft/2"
    model_version: str | None
    evaluations: tuple[FailedEvaluation, ...]
    keeps_serving: str | None = None  # the version that serves meanwhile, when one does

    def describe(self) -> str:
        gates = "; ".join(f"{failed.evaluation}: {failed.summary}" for failed in self.evaluations)
        kept = f"; {self.keeps_serving} keeps serving" if self.keeps_serving else ""
        return f"{self.model} did not pass {gates}{kept}"


@dataclass(frozen=True)
class AttemptsBlock:
    """A job that failed as often as it may: the next apply starts it only when told to."""

    kind: ClassVar[str] = "attempts"
    failed: int  # attempts made at this fingerprint
    max_attempts: int
    message: str  # the last failure in one line, or where its log is
    retry_option: str = RETRY_FAILED

    def describe(self) -> str:
        return (f"failed {self.failed} of {self.max_attempts} attempts: {self.message}; fix the cause, "
                f"then apply with {self.retry_option}")


@dataclass(frozen=True)
class BackendBlock:
    """A FineTune on several machines, planned for a backend that runs on one."""

    kind: ClassVar[str] = "backend"
    nodes: int
    needs: str = "kubernetes"

    def describe(self) -> str:
        return (f"resources.nodes: {self.nodes} needs the {self.needs} backend "
                "(the local backend runs on one machine)")


@dataclass(frozen=True)
class NoTrialPassed:
    """A Deployment of a sweep with no complete trial that passes the Deployment's gates."""

    kind: ClassVar[str] = "sweep"
    sweep: str
    requires: tuple[str, ...]
    trials: int  # valid trials recorded
    best_trial: int | None  # the best-scoring complete trial, passing or not
    why: str  # in words: "the best, trial 3, did not pass fruit-sft-quality"
    keeps_serving: str | None = None

    def describe(self) -> str:
        kept = f"; {self.keeps_serving} keeps serving" if self.keeps_serving else ""
        gates = ", ".join(self.requires) or "its gates"
        return f"no trial of Sweep/{self.sweep} passes {gates} ({self.trials} trials; {self.why}){kept}"


@dataclass(frozen=True)
class BudgetBlock:
    """A training that would take its team over its monthly budget (plan/costs.py)."""

    kind: ClassVar[str] = "budget"
    team: str
    why: str  # "team a's budget: 120.00 GPU-hours this month (...) > its 100.00"
    approve_with: str = "budget"

    def describe(self) -> str:
        return (f"{self.why}; to let it through: --approve {self.approve_with} --reason '...', or the "
                f"annotations tuneops.dev/approved-by: {self.approve_with} and tuneops.dev/approval-reason")


BlockedBy = UpstreamBlock | GateBlock | AttemptsBlock | BackendBlock | NoTrialPassed | BudgetBlock
