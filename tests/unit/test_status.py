"""Status rows: phase, progress, the version in use, when it ran."""

from __future__ import annotations

from types import MappingProxyType

from reconciler.plan.plan import Action, Plan, PlannedAction
from reconciler.specs.base import ResourceId
from reconciler.state import ActualState, BackendState, JobObservation, RunProgress
from reconciler.status import progress_text, status_rows, status_text

FINE_TUNE = ResourceId("FineTune", "sft")
FP = "a" * 64


def test_progress_and_eta_follow_the_pace_so_far():
    assert progress_text(0.25, 30, started_at=1000.0, now=1060.0) == "25% (step 30), ETA 3m00s"
    assert progress_text(None, None, started_at=1000.0, now=1060.0) == "starting"
    assert progress_text(1.0, 120, started_at=1000.0, now=1060.0) == "100% (step 120)"


def test_a_running_fine_tune_reads_running_with_its_progress():
    job = JobObservation("FineTune", "sft", FP, "running", 1, 1000.0, None, None, "", "pid 3", None)
    progress = RunProgress("FineTune", "sft", FP, "r", 1000.0, 0.5, 60)
    state = ActualState(MappingProxyType({}), MappingProxyType({}),
                        MappingProxyType({("FineTune", "sft", FP): progress}), BackendState((job,), ()))
    plan = Plan((PlannedAction(FINE_TUNE, Action.WAIT, FP, reason="running"),), {})
    [row] = status_rows(plan, state, now=1100.0)
    assert (row.phase, row.progress, row.fingerprint) == ("Running", "50% (step 60), ETA 1m40s", FP[:12])
    assert "FineTune/sft" in status_text([row]) and "Running" in status_text([row])


def test_a_failed_job_out_of_attempts_reads_failed_not_blocked():
    job = JobObservation("FineTune", "sft", FP, "failed", 2, 1000.0, 1010.0, 1, "exited with 1: OOM", "pid 3",
                         None)
    empty = MappingProxyType({})
    state = ActualState(empty, empty, empty, BackendState((job,), ()))
    plan = Plan((PlannedAction(FINE_TUNE, Action.BLOCKED, FP, reason="failed 2 of 2 attempts"),), {})
    [row] = status_rows(plan, state, now=1100.0)
    assert row.phase == "Failed" and "failed 2 of 2 attempts" in row.result


def test_an_evaluation_in_progress_shows_the_version_it_scores_not_the_one_scored_before(tmp_path):
    from tests.unit.plan.test_plan import EVALUATION, Project, everything_built, server, state_of

    first = Project(tmp_path / "v1")
    second = Project(tmp_path / "v2", {"fine-tune.yaml": ("learningRate: 2e-4", "learningRate: 1e-4")})
    new_model = second.built(FINE_TUNE, model_version="sft/2")
    scoring = JobObservation("Evaluation", EVALUATION.name, second.fp(EVALUATION), "running", 1, 1000.0, None,
                             None, "", "pid 9", None)
    state = state_of(new_model, *everything_built(first), jobs=[scoring], servers=[server(first)])
    rows = {row.kind: row for row in status_rows(second.plan(state), state, now=1100.0)}
    assert (rows["Evaluation"].phase, rows["Evaluation"].model_version) == ("Running", "sft/2")
    assert "passed" not in rows["Evaluation"].result  # version 1's verdict is not version 2's
    assert (rows["FineTune"].phase, rows["FineTune"].model_version) == ("Ready", "sft/2")
    assert rows["Deployment"].model_version == "sft/1"


def test_status_data_is_utc_and_its_table_local_time(tmp_path, time_zone):
    """`status --format json` is the same on every machine; the table is read by people here."""
    from tests.unit.plan.test_plan import Project, everything_built, server, state_of

    project = Project(tmp_path / "project")
    state = state_of(*everything_built(project), servers=[server(project)])  # started 2023-11-14T22:13:20Z
    rows, tables = [], []
    for zone in ("UTC", "Asia/Tokyo"):
        time_zone(zone)
        found = {row.kind: row for row in status_rows(project.plan(state), state, now=1_700_000_100.0)}
        rows.append(found["FineTune"].to_json())
        tables.append(status_text([found["FineTune"]]))
    assert rows[0] == rows[1] and rows[0]["last_run"] == "2023-11-14T22:13:20Z"
    assert "2023-11-14 22:13" in tables[0] and "2023-11-15 07:13" in tables[1]
