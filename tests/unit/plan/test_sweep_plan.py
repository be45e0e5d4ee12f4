"""A Sweep in the plan, from recorded trials: trials left (create, update), trials made stale by
a narrowed search space (rebuild, naming which remain valid), all done (noop); a Deployment of
the sweep serving the best trial that passes its gates, switching only for a better one; and the
budget line saying how many trials fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import MappingProxyType

import pytest

from reconciler.plan.plan import Action
from reconciler.plan.report import plan_json, plan_text
from reconciler.project import Project
from reconciler.specs.base import ResourceId
from reconciler.specs.sweep import SweepResource
from reconciler.state import ActualState, BackendState, BuiltRun, ServerObservation, TrialRecord
from reconciler.sweeps.trials import materialize
from tests.support.reconcile_support import QUICKSTART

SWEEP_ID, DEPLOYMENT = ResourceId("Sweep", "fruit-lr"), ResourceId("Deployment", "fruit-bot")


def quickstart(tmp_path: Path, *, low: str = "1.0e-3", max_trials: int = 3) -> Project:
    root = tmp_path / "specs"
    if not root.exists():
        shutil.copytree(QUICKSTART, root, ignore=shutil.ignore_patterns(".tuneops"))
        deployment = root / "deployment.yaml"
        deployment.write_text(deployment.read_text().replace("fineTune: fruit-sft", "sweep: fruit-lr"))
    sweep = (root / "sweep.yaml").read_text().split("  parameters:")[0]
    (root / "sweep.yaml").write_text(
        sweep + f"  parameters:\n    training.learningRate: {{logUniform: [{low}, 1.0e-2]}}\n"
                f"  maxTrials: {max_trials}\n")
    return Project.load(root)


class Trials:
    """Recorded trials and the runs of their FineTunes and Evaluations, as MLflow would hold them."""

    def __init__(self, project: Project):
        self.project = project
        self.sweep = project.specs.resource(SWEEP_ID, SweepResource)
        self.records: list[TrialRecord] = []
        self.runs: list[BuiltRun] = []

    def add(self, rate: float, *, state: str = "complete", value: float | None = None,
            verdict: str = "passed") -> TrialRecord:
        params = {"training.learningRate": rate}
        trial = materialize(self.project.specs, self.project.inputs, self.sweep, params)
        number = len(self.records)
        record = TrialRecord("fruit-lr", number, f"run{number}", trial.fine_tune_id.name,
                             trial.fingerprint, MappingProxyType(params), {}, state,
                             value=value if state == "complete" else None)
        self.records.append(record)
        if state == "complete":
            self.runs.append(BuiltRun("FineTune", trial.fine_tune_id.name, trial.fingerprint, "ft", 0.0,
                                      model_version=f"{trial.fine_tune_id.name}/1"))
            self.runs.append(BuiltRun("Evaluation", trial.evaluation_id("fruit-sft-quality").name,
                                      trial.evaluation_fingerprint("fruit-sft-quality"), "ev", 0.0,
                                      metrics={"exact_match": value}, verdict=verdict))
        return record

    def state(self, *servers: ServerObservation) -> ActualState:
        built = {(r.kind, r.name, r.fingerprint): r for r in self.runs}
        return ActualState(built, {}, {}, BackendState((), servers), trials={"fruit-lr": tuple(self.records)})


def plan_of(project: Project, state: ActualState):
    from reconciler.plan.plan import build_plan

    return build_plan(project.specs, project.graph, project.inputs, state)


def test_trials_left_are_planned_and_all_done_is_no_change(tmp_path: Path):
    project = quickstart(tmp_path)
    trials = Trials(project)
    trials.add(0.002, value=0.6)
    planned = plan_of(project, trials.state()).get(SWEEP_ID)
    assert planned.action == Action.UPDATE
    assert "1 of 3 trials done (1 complete)" in planned.reason and "2 more trials to run" in planned.reason
    trials.add(0.004, value=0.8)
    trials.add(0.006, state="pruned")
    done = plan_of(project, trials.state())
    assert done.get(SWEEP_ID).action == Action.NOOP
    assert "best exact_match 0.8 (trial 1: training.learningRate=0.004)" in done.get(SWEEP_ID).reason
    document = plan_json(done)
    sweep = next(a for a in document["actions"] if a["kind"] == "Sweep")["sweep"]
    assert sweep["counts"] == {"complete": 2, "pruned": 1, "failed": 0, "running": 0}
    assert sweep["best"]["number"] == 1 and sweep["left"] == 0


def test_a_narrowed_search_space_names_the_trials_that_remain_valid(tmp_path: Path):
    project = quickstart(tmp_path)
    trials = Trials(project)
    trials.add(0.002, value=0.6)
    trials.add(0.005, value=0.7)
    narrowed = quickstart(tmp_path, low="3.0e-3")
    trials.project = narrowed
    planned = plan_of(narrowed, Trials.state(trials)).get(SWEEP_ID)
    assert planned.action == Action.REBUILD
    assert "trials 1 remain valid (same fingerprint)" in planned.reason
    assert "trial 0: outside the search space: training.learningRate=0.002" in planned.reason
    assert "2 more trials to run" in planned.reason
    text = plan_text(plan_of(narrowed, trials.state()))
    assert "trial 0 no longer counted: training.learningRate=0.002" in text


def test_the_deployment_serves_the_best_passing_trial_and_switches_only_for_a_better_one(tmp_path: Path):
    project = quickstart(tmp_path)
    trials = Trials(project)
    trials.add(0.002, value=0.9, verdict="failed")  # the best score, but its gate failed
    second = trials.add(0.004, value=0.7)
    trials.add(0.006, value=0.7)  # as good as trial 1: the earlier trial wins the tie
    deployment = plan_of(project, trials.state()).get(DEPLOYMENT)
    assert deployment.action == Action.CREATE
    assert deployment.serve.fine_tune == second.fine_tune
    assert "trial 1 of Sweep/fruit-lr" in deployment.reason
    live = ServerObservation("fruit-bot", project.inputs[DEPLOYMENT].fingerprint, second.fingerprint,
                             f"{second.fine_tune}/1", "serving", "http://127.0.0.1:8000", 0.0, "", "pid 1",
                             None)
    assert plan_of(project, trials.state(live)).get(DEPLOYMENT).action == Action.NOOP


def test_no_passing_trial_blocks_the_deployment_saying_why(tmp_path: Path):
    project = quickstart(tmp_path, max_trials=1)
    trials = Trials(project)
    trials.add(0.002, value=0.3, verdict="failed")
    planned = plan_of(project, trials.state()).get(DEPLOYMENT)
    assert planned.action == Action.BLOCKED
    assert planned.reason == ("no trial of Sweep/fruit-lr passes fruit-sft-quality (1 trials; the best, "
                              "trial 0, did not pass fruit-sft-quality)")
    assert plan_json(plan_of(project, trials.state()))["actions"][-1]["blocked_by"]["kind"] == "sweep"


@pytest.mark.parametrize("budget_trials", [2, 6])
def test_the_plan_says_how_many_trials_the_budget_covers(tmp_path: Path, budget_trials: int):
    project = quickstart(tmp_path, max_trials=6)
    fine_tune = project.root / "fine-tune.yaml"
    on_a_gpu = "gpusPerNode: 1\n    gpuProduct: NVIDIA-H100-80GB-HBM3"
    fine_tune.write_text(fine_tune.read_text().replace("gpusPerNode: 0", on_a_gpu)
                         .replace("epochs: 3", "maxSteps: 400"))
    per_trial = json.loads(json.dumps(plan_json(Project.load(project.root).plan(offline=True).plan)))
    estimate = next(a for a in per_trial["actions"] if a["kind"] == "Sweep")["sweep"]["estimate"]
    assert estimate["remaining"] == 6 and estimate["gpu_hours_per_trial"] > 0
    sweep = project.root / "sweep.yaml"
    budget = estimate["gpu_hours_per_trial"] * (budget_trials + 0.5)
    sweep.write_text(sweep.read_text() + f"  budget: {{gpuHours: {budget!r}}}\n")
    planned = Project.load(project.root).plan(offline=True).plan
    line = plan_text(planned)
    if budget_trials < 6:
        assert f"{budget_trials} of 6 trials fit, apply stops there" in line
    else:
        assert ": all fit" in line



def test_a_sweep_the_budget_stopped_is_up_to_date_until_the_budget_changes(tmp_path: Path):
    from dataclasses import replace

    project = quickstart(tmp_path, max_trials=4)
    sweep = project.root / "sweep.yaml"
    sweep.write_text(sweep.read_text() + "  budget: {gpuHours: 25}\n")
    project = Project.load(project.root)
    trials = Trials(project)
    trials.add(0.002, value=0.6)
    stopped = replace(trials.state(), sweep_stops={"fruit-lr": ("budget: trial 1 would take 30 of 25", 25.0)})
    planned = plan_of(project, stopped).get(SWEEP_ID)
    assert planned.action == Action.NOOP
    assert "stopped by the budget: trial 1 would take 30 of 25 (raise budget.gpuHours to run the 3 left)" \
        in planned.reason
    assert plan_of(project, stopped).get(DEPLOYMENT).serve.fine_tune == trials.records[0].fine_tune
    sweep.write_text(sweep.read_text().replace("gpuHours: 25", "gpuHours: 40"))
    raised = Project.load(project.root)
    assert plan_of(raised, stopped).get(SWEEP_ID).action == Action.UPDATE


def test_finished_trials_are_scored_with_an_evaluation_added_since(tmp_path: Path):
    project = quickstart(tmp_path, max_trials=1)
    trials = Trials(project)
    trials.add(0.002, value=0.6)
    assert plan_of(project, trials.state()).get(SWEEP_ID).action == Action.NOOP
    evaluation = project.root / "evaluation.yaml"
    extra = evaluation.read_text().replace("name: fruit-sft-quality", "name: fruit-sft-strict")
    (project.root / "strict.yaml").write_text(extra)
    deployment = project.root / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("requires: [fruit-sft-quality]",
                                                         "requires: [fruit-sft-quality, fruit-sft-strict]"))
    planned = plan_of(Project.load(project.root), trials.state()).get(SWEEP_ID)
    assert planned.action == Action.UPDATE
    assert "1 finished trial(s) to score with fruit-sft-strict" in planned.reason
