"""A Sweep of the quickstart, applied for real: Optuna's trials trained and scored as ordinary
FineTunes and Evaluations on a real MLflow server, the apply killed mid-sweep and resumed with
nothing trained twice, the Deployment serving the best passing trial, and maxTrials raised."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support.reconcile_support import CLI_ENV, SpecRepo
from tests.support.runtime_support import needs_training

pytestmark = [needs_training, pytest.mark.slow]

SWEEP = """\
apiVersion: tuneops.dev/v1alpha1
kind: Sweep
metadata:
  name: fruit-lr
spec:
  fineTune: fruit-sft
  objective:
    evaluation: fruit-sft-quality
    metric: exact_match
    direction: maximize
  parameters:
    training.learningRate: {logUniform: [2.0e-3, 1.0e-2]}
    training.epochs: {intRange: [2, 3]}
  algorithm: tpe
  seed: 0
  maxTrials: 6
  parallelTrials: 2
"""


def trials_of(repo: SpecRepo) -> list:
    from reconciler.tracking.actual_state import read_trials
    from reconciler.tracking.store import open_store

    store = open_store(repo.tracking_uri)
    experiment = store.experiment_id(repo.experiment)
    if experiment is None:
        return []
    return list(read_trials(store, experiment, "fruit-lr").get("fruit-lr", ()))


def trainings(repo: SpecRepo) -> list[str]:
    """The fine-tune jobs started so far, one log file per attempt."""
    return sorted(p.name for p in (repo.root / ".tuneops" / "logs").glob("finetune-*.log"))


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, mlflow_server):
    """The quickstart serving `sweep: fruit-lr`; the first apply killed once 3 trials finished,
    the second left to finish the sweep."""
    repo = SpecRepo(tmp_path_factory.mktemp("sweep") / "specs", mlflow_server.uri)
    repo.tracking_uri, repo.experiment = mlflow_server.uri, _experiment(repo)
    (repo.root / "sweep.yaml").write_text(SWEEP)
    with (repo.root / "tuneops.yaml").open("a") as settings:
        settings.write("local:\n  maxParallel: 2\n")  # two trials at once: jobs share these slots
    repo.edit("deployment.yaml", "fineTune: fruit-sft", "sweep: fruit-lr")
    repo.commit("serve the best trial of a learning-rate sweep")
    env = {**os.environ, **CLI_ENV}
    env.pop("MLFLOW_TRACKING_URI", None)
    first = subprocess.Popen([sys.executable, "-m", "reconciler", "apply", ".", "--yes"], cwd=repo.root,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 900
        while sum(1 for t in trials_of(repo) if t.done) < 3:
            assert first.poll() is None, first.stdout.read() if first.stdout else ""
            assert time.monotonic() < deadline, "3 trials did not finish in 15 minutes"
            time.sleep(1)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
        if first.stdout:
            first.stdout.close()
    killed = {t.number: t for t in trials_of(repo)}
    trained_before = trainings(repo)
    resumed = repo.tuneops("apply", ".", "--yes")
    yield repo, killed, trained_before, resumed
    repo.stop_servers()


def _evaluation_metrics(repo: SpecRepo, trial_fine_tune: str) -> list[str]:
    """The metric names of the newest Evaluation run of a trial."""
    from reconciler.tracking.store import open_store

    store = open_store(repo.tracking_uri)
    runs = [run for run in store.search_runs(store.experiment_id(repo.experiment),
                                             "tags.`tuneops.kind` = 'Evaluation'")
            if run.tags.get("tuneops.name", "").startswith(f"{trial_fine_tune}-")]
    assert runs, trial_fine_tune
    return sorted(runs[0].metrics)


def _experiment(repo: SpecRepo) -> str:
    for line in (repo.root / "tuneops.yaml").read_text().splitlines():
        if line.strip().startswith("experiment:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no experiment in tuneops.yaml")


def test_a_killed_sweep_resumes_training_only_the_trials_left(swept):
    repo, killed, trained_before, resumed = swept
    assert resumed.exit_code == 0, resumed.output
    trials = trials_of(repo)
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state in ("complete", "pruned") for t in trials), [(t.number, t.state, t.message)
                                                                   for t in trials]
    # The trials finished before the kill kept their parameters and were not trained again.
    for number, before in killed.items():
        assert trials[number].params == before.params
    finished_before = [t for t in killed.values() if t.done]
    assert len(finished_before) >= 3
    after = trainings(repo)
    assert set(trained_before) <= set(after)
    for trial in finished_before:
        assert sum(1 for name in after if name.startswith(f"finetune-{trial.fine_tune}-")) == 1, \
            (trial.fine_tune, after)
    # One training per trial (a trial running at the kill is adopted, not started twice), plus the
    # template itself, which the Deployment's graph still builds.
    distinct = {t.fine_tune for t in trials}
    assert len(after) == len(distinct) + 1, after


def test_the_suggestions_are_those_an_uninterrupted_apply_makes(swept):
    """Each trial's parameters are a function of the seed, its number, and the trials before it
    in the window: recomputed here from the records, they are the ones the applies used."""
    repo, *_ = swept
    from reconciler.project import Project
    from reconciler.specs.base import ResourceId
    from reconciler.specs.sweep import SweepResource
    from reconciler.sweeps.study import suggest

    project = Project.load(repo.root)
    sweep = project.specs.resource(ResourceId("Sweep", "fruit-lr"), SweepResource)
    trials = trials_of(repo)
    for trial in trials:
        assert suggest(sweep.spec, trial.number, trials).params == dict(trial.params), trial.number


def test_the_deployment_serves_the_best_trial_that_passes_its_gates(swept):
    repo, *_ = swept
    trials = trials_of(repo)
    plan = repo.plan()
    sweep = next(a for a in plan["actions"] if a["kind"] == "Sweep")
    assert sweep["action"] == "noop", sweep
    passing = [t for t in sweep["sweep"]["trials"] if t["verdicts"].get("fruit-sft-quality") == "passed"]
    assert passing, sweep["sweep"]["trials"]
    best = max(passing, key=lambda t: (t["value"], -t["number"]))
    deployment = next(a for a in plan["actions"] if a["kind"] == "Deployment")
    assert deployment["action"] == "noop", deployment
    assert deployment["serve"]["fine_tune"] == best["fine_tune"]
    assert deployment["serve"]["model_version"].startswith(best["fine_tune"] + "/")
    assert len({t.fine_tune for t in trials}) >= 2
    shown = repo.tuneops("sweep", "show", "fruit-lr", ".")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[1].split()[0] == str(best["number"])  # best first
    status = repo.tuneops("status", ".")
    assert "Sweep/fruit-lr" in status.stdout and "6 of 6 trials done" in status.stdout


def test_raising_max_trials_trains_exactly_the_new_trials(swept):
    repo, *_ = swept
    before = trainings(repo)
    repo.edit("sweep.yaml", "maxTrials: 6", "maxTrials: 8")
    repo.commit("two more trials")
    plan = repo.plan()
    assert plan["by_resource"]["Sweep/fruit-lr"] == "update"
    assert "2 more trials to run" in next(a for a in plan["actions"] if a["kind"] == "Sweep")["reason"]
    assert plan["by_resource"]["FineTune/fruit-sft"] == "noop"
    applied = repo.tuneops("apply", ".", "--yes")
    assert applied.exit_code == 0, applied.output
    trials = trials_of(repo)
    assert [t.number for t in trials] == list(range(8))
    # Scored too, each against the trial the Deployment serves now (its notWorseThan: serving gate).
    assert all(t.state == "complete" and t.value is not None for t in trials[6:]), \
        [(t.number, t.state, t.message) for t in trials[6:]]
    compared = [name for name in _evaluation_metrics(repo, trials[6].fine_tune)
                if name.startswith("compare/serving/exact_match/")]
    assert compared and not any(name.endswith("/skipped") for name in compared), compared
    new = sorted(set(trainings(repo)) - set(before))
    assert len(new) == 2, new
    assert all(any(name.startswith(f"finetune-{t.fine_tune}-") for name in new) for t in trials[6:])


DIVERGING = """\
apiVersion: tuneops.dev/v1alpha1
kind: Sweep
metadata:
  name: fruit-decay
spec:
  fineTune: fruit-sft
  objective: {evaluation: fruit-sft-quality, metric: exact_match}
  parameters:
    # A weight decay of a million wipes the weights out at the first step: the loss goes nan.
    training.weightDecay: {choice: [0.0, 1.0e+6]}
  algorithm: grid
  maxTrials: 2
  pruning: {metric: loss}
"""


def test_a_diverging_trial_is_pruned_before_it_finishes(swept):
    repo, *_ = swept  # its template FineTune is built: only the trials train
    (repo.root / "decay.yaml").write_text(DIVERGING)
    repo.commit("a sweep over weight decay")
    applied = repo.tuneops("apply", ".", "--yes", "--target", "Sweep/fruit-decay")
    assert applied.exit_code == 0, applied.output
    from reconciler.tracking.actual_state import read_trials
    from reconciler.tracking.store import open_store

    store = open_store(repo.tracking_uri)
    trials = read_trials(store, store.experiment_id(repo.experiment), "fruit-decay")["fruit-decay"]
    by_decay = {t.params["training.weightDecay"]: t for t in trials}
    assert by_decay[0.0].state == "complete"
    pruned = by_decay[1.0e6]
    assert pruned.state == "pruned", (pruned.state, pruned.message)
    assert "diverged" in pruned.message
    step = int(pruned.message.split(" at step ")[1].split(":")[0])
    assert step < 15  # 3 epochs of 40 training rows at 8 a step: it stopped well before its end
    assert "trial 1 pruned" in applied.stdout or "trial 0 pruned" in applied.stdout
    plan = repo.plan()
    assert plan["by_resource"]["Sweep/fruit-decay"] == "noop"  # pruned counts as done, not failed
