"""ActualState: what is built (MLflow) and what is running or serving (the backend), as data.

`project.read_state` fills it from a handful of paged MLflow searches (one per kind, not one
per resource) and one look at the backend. The plan is computed from this frozen snapshot and
the specs; nothing here does I/O, so the planner stays pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from reconciler.tracking import vocabulary as tracking

STOPPED = "stopped by tuneops"
"""The message of a job or server ended by `tuneops stop` (or a prune): not a failure of its own."""

JobPhase = Literal["pending", "running", "succeeded", "failed"]
ServerPhase = Literal["starting", "serving", "failed"]
LIVE_JOB_PHASES: frozenset[str] = frozenset({"pending", "running"})
"""A job in one of these is live: it will still finish, so nothing starts another for it."""
LIVE_SERVER_PHASES: frozenset[str] = frozenset({"starting", "serving"})
"""A server in one of these is live: it runs (a stopped one is gone, an exited one failed)."""


@dataclass(frozen=True)
class JobObservation:
    """The newest attempt of one job: a (kind, name, fingerprint)."""

    kind: str  # "Dataset" | "FineTune" | "Evaluation"
    name: str
    fingerprint: str
    phase: JobPhase
    attempts: int  # attempts made for this (kind, name, fingerprint), this one included
    started_at: float  # unix seconds
    finished_at: float | None
    exit_code: int | None
    message: str  # "" or why it failed, one line
    handle: str  # e.g. "pid 1234"
    log: str | None  # path of its log file

    @property
    def is_live(self) -> bool:
        """Pending or running: not finished, whether it succeeded, failed or was stopped."""
        return self.phase in LIVE_JOB_PHASES


@dataclass(frozen=True)
class ServerObservation:
    """The current model server of one Deployment."""

    name: str  # the Deployment's name
    fingerprint: str  # the Deployment's fingerprint
    model_fingerprint: str  # the FineTune (or BaseModel) being served
    model_version: str | None  # "registered-model/version"
    phase: ServerPhase
    url: str | None
    started_at: float
    message: str
    handle: str
    log: str | None
    # The job file it was started with: its spec and lineage say what a later change changed.
    job: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    # Changed outside tuneops (e.g. `kubectl edit`): what and by whom, one line; "" when not.
    drift: str = ""

    @property
    def is_live(self) -> bool:
        """Starting or serving: the process runs (a failed or stopped server does not)."""
        return self.phase in LIVE_SERVER_PHASES


def is_live(observation: JobObservation | ServerObservation) -> bool:
    """Whether a job or model server still runs: the one test behind prune counts, `stop`, waits."""
    return observation.is_live


@dataclass(frozen=True)
class BackendState:
    """Everything a backend runs or ran, as of one look."""

    jobs: tuple[JobObservation, ...] = ()  # the newest attempt per (kind, name, fingerprint)
    servers: tuple[ServerObservation, ...] = ()  # the current (not stopped) server per Deployment

    def job(self, kind: str, name: str, fingerprint: str) -> JobObservation | None:
        for job in self.jobs:
            if (job.kind, job.name, job.fingerprint) == (kind, name, fingerprint):
                return job
        return None

    def server(self, name: str) -> ServerObservation | None:
        for server in self.servers:
            if server.name == name:
                return server
        return None


BUILT_KINDS = ("Dataset", "FineTune", "Evaluation")
"""Kinds whose jobs leave an MLflow run; BaseModels are read, Deployments are served."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class BuiltRun:
    """One complete MLflow run of a resource: its outputs exist and are recorded."""

    kind: str
    name: str
    fingerprint: str
    run_id: str
    started_at: float  # unix seconds
    output: str | None = None
    spec: Mapping[str, Any] | None = None  # the resolved spec it was built from
    lineage: Mapping[str, Any] | None = None  # {"inputs": {...}, "sources": {...}, "recipe": n}
    git_commit: str | None = None
    dataset_digest: str | None = None  # Datasets
    model_version: str | None = None  # FineTunes: the version registered; Evaluations: the one scored
    verdict: str | None = None  # Evaluations: "passed" | "failed"
    verdict_summary: str | None = None  # "failed: gate exact_match 0.21 < 0.5"
    metrics: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    output_missing: bool = False  # its local output folder is gone: the plan rebuilds it

    @property
    def version_number(self) -> int:
        try:
            return int((self.model_version or "").rpartition("/")[2])
        except ValueError:
            return 0


@dataclass(frozen=True)
class RunProgress:
    """An unfinished run: for `tuneops status` (progress and ETA of a running fine-tune)."""

    kind: str
    name: str
    fingerprint: str
    run_id: str
    started_at: float
    progress: float | None  # 0..1, from the logged `progress` metric
    step: int | None


TrialState = Literal["running", "complete", "pruned", "failed"]
TRIAL_DONE: frozenset[str] = frozenset({"complete", "pruned", "failed"})
"""Trial states that will not change: a running trial is resumed, these are only read."""


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a Sweep as apply recorded it in its MLflow child run: the parameters Optuna
    suggested, and how it ended. The study is rebuilt from these; nothing else keeps it."""

    sweep: str
    number: int
    run_id: str
    fine_tune: str  # the trial's FineTune name: "<sweep>-<digest>"
    fingerprint: str  # that FineTune's fingerprint when it was suggested
    params: Mapping[str, Any]  # dotted path -> value
    distributions: Mapping[str, str]  # dotted path -> Optuna's distribution JSON
    state: str  # TrialState
    value: float | None = None  # the objective, once complete
    message: str = ""  # why it was pruned or failed
    started_at: float = 0.0
    finished_at: float | None = None
    system_attrs: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)  # the sampler's own state
    gpu_hours: float | None = None  # the planner's estimate when suggested (None on CPU)

    @property
    def done(self) -> bool:
        return self.state in TRIAL_DONE


@dataclass(frozen=True)
class ActualState:
    built: Mapping[tuple[str, str, str], BuiltRun]  # (kind, name, fingerprint) -> newest complete run
    history: Mapping[tuple[str, str], tuple[BuiltRun, ...]]  # (kind, name) -> complete runs, newest first
    unfinished: Mapping[tuple[str, str, str], RunProgress]
    backend: BackendState
    tracking_uri: str | None = None
    read: bool = True  # False for an offline plan: nothing was read
    # Sweep name -> its recorded trials, by number.
    trials: Mapping[str, tuple[TrialRecord, ...]] = field(default_factory=lambda: _EMPTY)
    # Sweep name -> (why the budget stopped it, the budget it stopped at), as its last apply said.
    sweep_stops: Mapping[str, tuple[str, float]] = field(default_factory=lambda: _EMPTY)

    @classmethod
    def unknown(cls) -> ActualState:
        """For `plan --offline`: no state was read, so everything reads as not built."""
        return cls({}, {}, {}, BackendState((), ()), None, read=False)

    def built_run(self, kind: str, name: str, fingerprint: str) -> BuiltRun | None:
        return self.built.get((kind, name, fingerprint))

    def newest(self, kind: str, name: str) -> BuiltRun | None:
        runs = self.history.get((kind, name), ())
        return runs[0] if runs else None

    def job(self, kind: str, name: str, fingerprint: str) -> JobObservation | None:
        return self.backend.job(kind, name, fingerprint)

    def server(self, name: str) -> ServerObservation | None:
        return self.backend.server(name)

    def trials_of(self, sweep: str) -> tuple[TrialRecord, ...]:
        return self.trials.get(sweep, ())

    def evaluation_of(self, evaluation: str, model_version: str) -> BuiltRun | None:
        """The newest complete run of an Evaluation that scored this model version."""
        for run in self.history.get(("Evaluation", evaluation), ()):
            if run.model_version == model_version:
                return run
        return None


def _json_tag(tags: Mapping[str, str], key: str) -> Mapping[str, Any] | None:
    text = tags.get(key)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def built_run_from(record: Any) -> BuiltRun | None:
    """A tracking-store RunRecord -> BuiltRun, or None for a run that is not complete."""
    tags = record.tags
    if tags.get(tracking.TAG_STATUS) != tracking.STATUS_COMPLETE:
        return None
    kind = tags.get(tracking.TAG_KIND, "")
    verdict = tags.get(tracking.gate_tag(tags.get(tracking.TAG_NAME, ""))) if kind == "Evaluation" else None
    version = tags.get(tracking.TAG_REGISTERED_VERSION if kind == "FineTune" else tracking.TAG_MODEL_VERSION)
    return BuiltRun(
        kind=kind,
        name=tags.get(tracking.TAG_NAME, ""),
        fingerprint=tags.get(tracking.TAG_FINGERPRINT, ""),
        run_id=record.run_id,
        started_at=record.start_time / 1000,
        output=tags.get(tracking.TAG_OUTPUT),
        spec=_json_tag(tags, tracking.TAG_SPEC),
        lineage=_json_tag(tags, tracking.TAG_LINEAGE),
        git_commit=tags.get(tracking.TAG_GIT_COMMIT),
        dataset_digest=tags.get(tracking.TAG_DATASET_DIGEST),
        model_version=version,
        verdict=verdict,
        verdict_summary=tags.get(tracking.TAG_GATE_SUMMARY),
        metrics=MappingProxyType(dict(record.metrics)),
    )


def trial_from(record: Any) -> TrialRecord | None:
    """A tracking-store RunRecord of a trial -> TrialRecord, or None for one that cannot be read
    (written by something else, or damaged): it is left out of the study, not guessed at."""
    tags = record.tags
    try:
        number = int(tags[tracking.TAG_TRIAL_NUMBER])
        params = json.loads(tags[tracking.TAG_TRIAL_PARAMS])
        distributions = json.loads(tags[tracking.TAG_TRIAL_DISTRIBUTIONS])
    except (KeyError, ValueError):
        return None
    if not isinstance(params, dict) or not isinstance(distributions, dict):
        return None
    state = tags.get(tracking.TAG_TRIAL_STATE, "running")
    if state not in ("running", "complete", "pruned", "failed"):
        return None
    system = "".join(tags[key] for key in sorted(
        (k for k in tags if k.startswith(tracking.TAG_TRIAL_SYSTEM_PREFIX)),
        key=lambda k: int(k.removeprefix(tracking.TAG_TRIAL_SYSTEM_PREFIX) or 0)))
    try:
        system_attrs = json.loads(system) if system else {}
    except ValueError:
        system_attrs = {}
    return TrialRecord(
        sweep=tags.get(tracking.TAG_NAME, ""), number=number, run_id=record.run_id,
        fine_tune=tags.get(tracking.TAG_TRIAL_FINE_TUNE, ""),
        fingerprint=tags.get(tracking.TAG_FINGERPRINT, ""),
        params=MappingProxyType(params), distributions=MappingProxyType(distributions), state=state,
        value=_float(tags.get(tracking.TAG_TRIAL_VALUE)), message=tags.get(tracking.TAG_TRIAL_MESSAGE, ""),
        started_at=record.start_time / 1000,
        finished_at=record.end_time / 1000 if record.end_time else None,
        system_attrs=MappingProxyType(system_attrs if isinstance(system_attrs, dict) else {}),
        gpu_hours=_float(tags.get(tracking.TAG_TRIAL_GPU_HOURS)))


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None
