"""The sweep step's scheduling, with real Optuna and a real MLflow database, and the trials'
jobs stood in for by a scripted executor (an objective computed from the parameters, answered
at once): the suggestions of an interrupted and resumed sweep are those of an uninterrupted one,
whatever order trials finish in; the budget stops suggesting; a raised maxTrials adds exactly
the new trials. Real training of trials is in tests/e2e/test_sweeps.py."""

from __future__ import annotations

import math
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from reconciler.apply.results import Outcome, StepResult
from reconciler.apply.sweep import SweepRunner
from reconciler.plan.plan import Action, PlannedAction
from reconciler.project import Project
from reconciler.specs.base import ResourceId
from reconciler.specs.sweep import SweepResource
from reconciler.state import BuiltRun
from reconciler.tracking.actual_state import read_trials
from tests.support.reconcile_support import QUICKSTART

pytest.importorskip("optuna")
pytest.importorskip("mlflow", reason="a real MLflow database records the trials")

SWEEP = """\
apiVersion: tuneops.dev/v1alpha1
kind: Sweep
metadata:
  name: fruit-lr
spec:
  fineTune: fruit-sft
  objective: {evaluation: fruit-sft-quality, metric: exact_match}
  parameters:
    training.learningRate: {logUniform: [1.0e-4, 1.0e-2]}
    training.epochs: {intRange: [1, 4]}
  seed: 7
  maxTrials: MAX
  parallelTrials: 2
BUDGET"""


def objective(params: dict[str, Any]) -> float:
    """A smooth peak at learningRate 3e-3 and 3 epochs."""
    rate, epochs = params["training.learningRate"], params["training.epochs"]
    return 1.0 - abs(math.log10(rate) + 2.5) / 3 - abs(epochs - 3) / 10


class ScriptedExecutor:
    """What SweepRunner asks of the executor, with every job answered at once from `objective`."""

    def __init__(self, project: Project, *, stop_after: int | None = None, gpu_hours: float | None = None,
                 built: dict[str, dict[str, Any]] | None = None):
        from reconciler.tracking.store import open_store

        self.project = project
        self.store = open_store(project.tracking_uri)
        self.experiment_id = self.store.ensure_experiment(project.experiment)
        self.reporter = SimpleNamespace(say=lambda line: None)
        self.stop_event = threading.Event()
        self.stop_after, self.gpu_hours = stop_after, gpu_hours
        self.plan = SimpleNamespace(options=SimpleNamespace(retry_failed=False))
        self.broken: Exception | None = None  # raised by every job: the apply's setup is broken
        self.jobs_fail = False  # every fine-tune's job runs and fails
        self.params: dict[str, dict[str, Any]] = {}  # trial resource name -> its parameters
        self.built = {} if built is None else built  # what earlier applies built: name -> parameters
        self.trained: list[str] = []
        self._lock = threading.Lock()

    def with_trials(self, trials: list) -> None:
        for trial in trials:
            self.params[trial.fine_tune_id.name] = dict(trial.params)
            for copy in trial.evaluations.values():
                self.params[copy.id.name] = dict(trial.params)

    def build_step(self, rid: ResourceId, fingerprint: str, builder: Any, prepare: Any = None,
                   retry_failed: bool = False) -> StepResult:
        if self.broken is not None:
            raise self.broken
        if self.jobs_fail and rid.kind == "FineTune":
            return StepResult(rid, Outcome.FAILED, "CUDA out of memory (log: x.log)")
        with self._lock:
            if self.stop_event.is_set():
                return StepResult(rid, Outcome.SKIPPED, "apply was interrupted")
            if rid.kind == "FineTune":
                self.trained.append(rid.name)
                if self.stop_after is not None and len(self.trained) > self.stop_after:
                    self.stop_event.set()
                    return StepResult(rid, Outcome.SKIPPED, "apply was interrupted")
        self.built[rid.name] = self.params[rid.name]
        return StepResult(rid, Outcome.DONE, "built")

    def lookup(self, kind: str, name: str, fingerprint: str) -> BuiltRun | None:
        if name not in self.built:
            return None
        value = objective(self.built[name])
        return BuiltRun(kind, name, fingerprint, "run", 0.0, metrics={"exact_match": value},
                        verdict="passed", model_version=f"{name}/1")

    def pruned(self, rid: ResourceId, fingerprint: str) -> None:
        return None

    def estimate(self, trial: Any) -> Any:
        return SimpleNamespace(gpu_hours=self.gpu_hours)


def project_with(tmp_path: Path, max_trials: int = 6, budget: str = "") -> Project:
    root = tmp_path / "specs"
    if not root.exists():
        shutil.copytree(QUICKSTART, root, ignore=shutil.ignore_patterns(".tuneops"))
    (root / "sweep.yaml").write_text(SWEEP.replace("MAX", str(max_trials)).replace("BUDGET", budget))
    return Project.load(root)


def run(project: Project, broken: Exception | None = None, jobs_fail: bool = False,
        **options: Any) -> tuple[StepResult, ScriptedExecutor]:
    executor = ScriptedExecutor(project, **options)
    executor.broken, executor.jobs_fail = broken, jobs_fail
    rid = ResourceId("Sweep", "fruit-lr")
    sweep = project.specs.resource(rid, SweepResource)
    result = SweepRunner(executor, PlannedAction(rid, Action.CREATE, "0" * 64), sweep).run()
    return result, executor


def recorded(project: Project) -> list:
    from reconciler.tracking.store import open_store

    store = open_store(project.tracking_uri)
    return list(read_trials(store, store.ensure_experiment(project.experiment)).get("fruit-lr", ()))


def test_an_interrupted_sweep_resumes_with_the_suggestions_of_an_uninterrupted_one(tmp_path: Path):
    whole = project_with(tmp_path / "whole")
    done, _ = run(whole)
    assert done.outcome == Outcome.DONE, done.message
    uninterrupted = [(t.number, dict(t.params), t.state) for t in recorded(whole)]
    assert [n for n, _, _ in uninterrupted] == list(range(6))
    assert len({str(p) for _, p, _ in uninterrupted}) == 6

    halves = project_with(tmp_path / "halves")
    built: dict = {}
    first, executor = run(halves, stop_after=3, built=built)
    assert first.outcome == Outcome.SKIPPED and "resumes" in first.message
    done_first = {t.number for t in recorded(halves) if t.done}
    assert len(done_first) == 3
    second, resumed = run(Project.load(halves.root), built=built)
    assert second.outcome == Outcome.DONE, second.message
    assert [(t.number, dict(t.params), t.state) for t in recorded(halves)] == uninterrupted
    # Only the trials that had not finished were run again.
    finished_first = {t.fine_tune for t in recorded(halves) if t.number in done_first}
    assert resumed.trained and not finished_first & set(resumed.trained)


def test_the_budget_stops_suggesting_before_it_would_be_exceeded(tmp_path: Path):
    project = project_with(tmp_path, budget="  budget: {gpuHours: 25}\n")
    built: dict = {}
    result, executor = run(project, gpu_hours=10.0, built=built)
    assert result.outcome == Outcome.DONE
    assert len(recorded(project)) == 2
    assert "stopped by the budget: trial 2 would take the estimate to 30 of 25 GPU-hours" in result.message
    again, executor = run(Project.load(project.root), gpu_hours=10.0, built=built)
    assert again.outcome == Outcome.DONE and len(recorded(project)) == 2 and executor.trained == []
    from reconciler.tracking.actual_state import read_sweep_stops
    from reconciler.tracking.store import open_store

    store = open_store(project.tracking_uri)
    stops = read_sweep_stops(store, store.ensure_experiment(project.experiment))
    assert stops == {"fruit-lr": ("budget: trial 2 would take the estimate to 30 of 25 GPU-hours", 25.0)}


def test_raising_max_trials_adds_exactly_the_new_trials(tmp_path: Path):
    project = project_with(tmp_path, max_trials=4)
    built: dict = {}
    run(project, built=built)
    before = [(t.number, dict(t.params)) for t in recorded(project)]
    raised = project_with(tmp_path, max_trials=6)
    result, executor = run(raised, built=built)
    assert result.outcome == Outcome.DONE
    after = [(t.number, dict(t.params)) for t in recorded(raised)]
    assert after[:4] == before and len(after) == 6
    assert len(executor.trained) == 2


def test_values_the_template_refuses_together_fail_their_trial_and_the_search_moves_on(tmp_path: Path):
    project = project_with(tmp_path, max_trials=3)
    fine_tune = project.root / "fine-tune.yaml"
    fine_tune.write_text(fine_tune.read_text().replace("    epochs: 3\n", ""))
    sweep = project.root / "sweep.yaml"  # each valid alone; together "set either epochs or maxSteps"
    sweep.write_text(sweep.read_text().replace("training.learningRate: {logUniform: [1.0e-4, 1.0e-2]}",
                                               "training.maxSteps: {intRange: [5, 9]}"))
    result, executor = run(Project.load(project.root))
    trials = recorded(project)
    assert [t.state for t in trials] == ["failed"] * 3 and executor.trained == []
    assert all("the template refuses these values" in t.message and "epochs or maxSteps" in t.message
               for t in trials), [t.message for t in trials]
    assert result.outcome == Outcome.FAILED and "no trial completed" in result.message


def test_a_broken_setup_fails_the_step_and_leaves_the_trials_for_the_next_apply(tmp_path: Path):
    from reconciler.apply.executor import SourcesNotPublished

    project = project_with(tmp_path)
    broken = SourcesNotPublished("its pods check out data.jsonl, but it is not pushed: commit and push")
    result, _ = run(project, broken=broken)
    assert result.outcome == Outcome.FAILED and "commit and push" in result.message
    trials = recorded(project)
    assert 1 <= len(trials) <= 2 and {t.state for t in trials} == {"running"}  # none burned
    again, executor = run(Project.load(project.root))
    assert again.outcome == Outcome.DONE, again.message
    assert [t.state for t in recorded(project)] == ["complete"] * 6


def test_trials_failing_in_a_row_stop_the_search(tmp_path: Path):
    project = project_with(tmp_path)
    result, _ = run(project, jobs_fail=True)
    assert result.outcome == Outcome.FAILED
    assert "3 trials failing in a row (last: CUDA out of memory (log: x.log))" in result.message
    assert "--retry-failed" in result.message
    assert 3 <= len(recorded(project)) <= 4  # the ones in flight when the third failed
