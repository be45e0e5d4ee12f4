"""The pure plan: specs + a state snapshot -> one action per resource, with its reason."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import MappingProxyType

import pytest

from reconciler.fingerprint import fingerprint_inputs, resolved_spec
from reconciler.graph import DependencyGraph
from reconciler.plan.blocked import AttemptsBlock, GateBlock, UpstreamBlock
from reconciler.plan.plan import Action, PlanOptions, build_plan
from reconciler.plan.report import plan_json, plan_markdown, plan_text
from reconciler.sources_digest import source_digests
from reconciler.specs.base import ResourceId
from reconciler.specs.validate import validate_path
from reconciler.state import ActualState, BackendState, BuiltRun, JobObservation, ServerObservation
from tests.conftest import VALID_SPECS, write_repo

DATASET = ResourceId("Dataset", "chats")
BASE = ResourceId("BaseModel", "tiny")
FINE_TUNE = ResourceId("FineTune", "sft")
EVALUATION = ResourceId("Evaluation", "sft-quality")
DEPLOYMENT = ResourceId("Deployment", "bot")


class Project:
    """Specs written to a folder, with their fingerprint inputs."""

    def __init__(self, root: Path, edits: dict[str, tuple[str, str]] | None = None):
        files = {name: textwrap.dedent(text) for name, text in VALID_SPECS.items()}
        for file, (old, new) in (edits or {}).items():
            assert old in files[file]
            files[file] = files[file].replace(old, new)
        result = validate_path(write_repo(root, files))
        assert result.valid, [p.text() for p in result.errors]
        self.specs = result.specs
        self.graph = DependencyGraph.from_specs(self.specs)
        self.inputs = fingerprint_inputs(self.specs, self.graph, source_digests(self.specs))

    def fp(self, rid: ResourceId) -> str:
        return self.inputs[rid].fingerprint

    def built(self, rid: ResourceId, **extra) -> BuiltRun:
        """A complete run of `rid` as the runtime records it (spec and lineage tags)."""
        item = self.inputs[rid]
        return BuiltRun(kind=rid.kind, name=rid.name, fingerprint=item.fingerprint, run_id=f"run-{rid.name}",
                        started_at=1_700_000_000.0, output=f"/store/{rid.name}",
                        spec=resolved_spec(self.specs.get(rid).resource),
                        lineage={"recipe": item.recipe, "inputs": item.inputs, "sources": item.sources},
                        **extra)

    def plan(self, state: ActualState, **options):
        return build_plan(self.specs, self.graph, self.inputs, state, PlanOptions(**options))


def state_of(*runs: BuiltRun, jobs=(), servers=()) -> ActualState:
    built, history = {}, {}
    for run in runs:
        built.setdefault((run.kind, run.name, run.fingerprint), run)
        history.setdefault((run.kind, run.name), []).append(run)
    return ActualState(MappingProxyType(built), MappingProxyType({k: tuple(v) for k, v in history.items()}),
                       MappingProxyType({}), BackendState(tuple(jobs), tuple(servers)), "sqlite:///x.db")


def server(project: Project, model_version: str = "sft/1", fingerprint: str | None = None,
           model_fingerprint: str | None = None, phase: str = "serving", spec: dict | None = None,
           lineage: dict | None = None) -> ServerObservation:
    item = project.inputs[DEPLOYMENT]
    job = {"spec": spec if spec is not None else resolved_spec(project.specs.get(DEPLOYMENT).resource),
           "lineage": lineage or {"recipe": item.recipe, "inputs": item.inputs, "sources": {}}}
    return ServerObservation(name="bot", fingerprint=fingerprint or item.fingerprint,
                             model_fingerprint=model_fingerprint or project.fp(FINE_TUNE),
                             model_version=model_version, phase=phase, url="http://127.0.0.1:8000",
                             started_at=1_700_000_000.0, message="", handle="pid 1", log=None, job=job)


def everything_built(project: Project, verdict: str = "passed", summary: str = "passed (1 gate)") -> list:
    return [project.built(DATASET, dataset_digest="sha256:" + "a" * 64),
            project.built(FINE_TUNE, model_version="sft/1"),
            project.built(EVALUATION, model_version="sft/1", verdict=verdict, verdict_summary=summary)]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "specs")


def actions(plan) -> dict[ResourceId, Action]:
    return {a.resource: a.action for a in plan.actions}


def test_from_empty_every_built_kind_is_created(project):
    plan = project.plan(state_of())
    assert actions(plan) == {BASE: Action.NOOP, DATASET: Action.CREATE, FINE_TUNE: Action.CREATE,
                             EVALUATION: Action.CREATE, DEPLOYMENT: Action.CREATE}
    assert plan.has_changes
    assert plan.counts()["create"] == 4
    assert [a.resource for a in plan.actions][:2] == [BASE, DATASET]  # dependencies first
    assert plan.impact[DATASET] == (FINE_TUNE, EVALUATION, DEPLOYMENT)


def test_everything_built_and_serving_is_no_change(project):
    plan = project.plan(state_of(*everything_built(project), servers=[server(project)]))
    assert set(actions(plan).values()) == {Action.NOOP}
    assert not plan.has_changes
    assert "No changes." in plan_text(plan)


def test_a_hyperparameter_change_names_the_field_and_the_downstream_reason(tmp_path, project):
    state = state_of(*everything_built(project), servers=[server(project)])
    changed = Project(tmp_path / "changed", {"fine-tune.yaml": ("learningRate: 2e-4", "learningRate: 1e-4")})
    plan = changed.plan(state)
    assert actions(plan) == {BASE: Action.NOOP, DATASET: Action.NOOP, FINE_TUNE: Action.REBUILD,
                             EVALUATION: Action.REBUILD, DEPLOYMENT: Action.REBUILD}
    fine_tune = plan.get(FINE_TUNE)
    assert [(c.path, c.before, c.after) for c in fine_tune.changes] == [("training.learningRate", 2e-4, 1e-4)]
    assert fine_tune.upstream == ()
    evaluation = plan.get(EVALUATION)
    assert evaluation.changes == () and evaluation.upstream == (FINE_TUNE,)
    assert "upstream changed: FineTune/sft" in evaluation.reason
    text = plan_text(plan)
    assert "training.learningRate: 0.0002 -> 0.0001" in text
    assert "adapter" not in text  # unchanged fields are not printed


def test_a_running_job_is_waited_on_not_started_again(project):
    job = JobObservation("Dataset", "chats", project.fp(DATASET), "running", 1, 1_700_000_000.0, None, None,
                         "", "pid 42", None)
    plan = project.plan(state_of(jobs=[job]))
    assert actions(plan)[DATASET] == Action.WAIT
    assert "pid 42" in plan.get(DATASET).reason
    assert actions(plan)[FINE_TUNE] == Action.CREATE  # planned behind it


def test_failed_jobs_are_retried_until_their_attempts_are_used(project):
    def failed(attempts: int) -> JobObservation:
        return JobObservation("Dataset", "chats", project.fp(DATASET), "failed", attempts, 1.0, 2.0, 1,
                              "exited with 1: bad row", "pid 7", None)

    plan = project.plan(state_of(jobs=[failed(1)]), max_attempts=2)
    assert actions(plan)[DATASET] == Action.RETRY
    assert plan.get(DATASET).attempt == 2
    plan = project.plan(state_of(jobs=[failed(2)]), max_attempts=2)
    assert actions(plan)[DATASET] == Action.BLOCKED
    assert "bad row" in plan.get(DATASET).reason
    assert actions(plan)[FINE_TUNE] == Action.BLOCKED
    assert "Dataset/chats is blocked" in plan.get(FINE_TUNE).reason
    assert actions(project.plan(state_of(jobs=[failed(2)]), retry_failed=True))[DATASET] == Action.RETRY


def test_a_failed_gate_blocks_the_deployment_and_keeps_the_old_version(tmp_path, project):
    old = everything_built(project)
    changed = Project(tmp_path / "changed", {"fine-tune.yaml": ("learningRate: 2e-4", "learningRate: 1e-4")})
    failing = everything_built(changed, "failed", "failed: gate rougeL 0.21 < 0.3")
    failing[1] = changed.built(FINE_TUNE, model_version="sft/2")
    plan = changed.plan(state_of(*failing, *old, servers=[server(project)]))
    deployment = plan.get(DEPLOYMENT)
    assert deployment.action == Action.BLOCKED
    assert "gate rougeL 0.21 < 0.3" in deployment.reason
    assert "sft/1 keeps serving" in deployment.reason
    assert not plan.has_changes


def test_reverting_to_a_built_version_switches_without_training(tmp_path, project):
    newer = Project(tmp_path / "newer", {"fine-tune.yaml": ("learningRate: 2e-4", "learningRate: 1e-4")})
    runs = everything_built(newer) + everything_built(project)
    live = server(newer, model_version="sft/2")
    plan = project.plan(state_of(*runs, servers=[live]))  # the specs are back at the first version
    assert actions(plan) == {BASE: Action.NOOP, DATASET: Action.NOOP, FINE_TUNE: Action.NOOP,
                             EVALUATION: Action.NOOP, DEPLOYMENT: Action.UPDATE}
    assert "nothing is trained" in plan.get(DEPLOYMENT).reason


def test_after_a_rollback_a_change_is_diffed_against_the_version_serving_not_the_newest(tmp_path, project):
    # Version 1 built and served; version 2 (a new learning rate) built, served, then reverted:
    # version 1 serves again, while version 2 stays the newest run in MLflow.
    rolled_back = Project(tmp_path / "v2", {"fine-tune.yaml": ("learningRate: 2e-4", "learningRate: 1e-4")})
    v2 = everything_built(rolled_back)
    v2[1] = rolled_back.built(FINE_TUNE, model_version="sft/2")
    v2[2] = rolled_back.built(EVALUATION, model_version="sft/2", verdict="passed", verdict_summary="passed")
    state = state_of(*v2, *everything_built(project), servers=[server(project, model_version="sft/1")])
    assert state.newest("FineTune", "sft").model_version == "sft/2"
    # Now only the adapter's rank changes, on top of version 1.
    edited = Project(tmp_path / "edit", {"fine-tune.yaml": ("r: 8", "r: 16")})
    plan = edited.plan(state)
    fine_tune = plan.get(FINE_TUNE)
    assert fine_tune.action == Action.REBUILD
    # alpha follows r (2r by default); training.learningRate, the rolled-back change, is not listed
    assert [c.path for c in fine_tune.changes] == ["adapter.alpha", "adapter.r"]
    assert fine_tune.previous == project.fp(FINE_TUNE)
    assert fine_tune.compared_with == "sft/1, serving"
    evaluation = plan.get(EVALUATION)
    assert evaluation.previous == project.fp(EVALUATION) and evaluation.compared_with.endswith("scored sft/1")
    assert plan.get(DEPLOYMENT).compared_with == "sft/1, serving"
    text = plan_text(plan)
    assert "compared with sft/1, serving" in text and "learningRate" not in text
    assert plan_json(plan)["actions"][2]["compared_with"] == "sft/1, serving"
    assert "since sft/1, serving" in plan_markdown(plan)


def test_with_nothing_serving_a_change_is_diffed_against_the_newest_version(tmp_path, project):
    newer = Project(tmp_path / "newer", {"fine-tune.yaml": ("learningRate: 2e-4", "learningRate: 1e-4")})
    runs = everything_built(newer) + everything_built(project)  # newest first
    runs[1] = newer.built(FINE_TUNE, model_version="sft/2")
    plan = Project(tmp_path / "edit", {"fine-tune.yaml": ("learningRate: 2e-4", "learningRate: 3e-4")}
                   ).plan(state_of(*runs))
    fine_tune = plan.get(FINE_TUNE)
    assert [(c.before, c.after) for c in fine_tune.changes] == [(1e-4, 3e-4)]
    assert fine_tune.compared_with == "sft/2, newest built"


def test_replicas_are_an_update_in_place(tmp_path, project):
    live = server(project)
    more = Project(tmp_path / "more", {"deployment.yaml": ("requires: [sft-quality]",
                                                           "requires: [sft-quality]\n  replicas: 2")})
    plan = more.plan(state_of(*everything_built(project), servers=[live]))
    deployment = plan.get(DEPLOYMENT)
    assert deployment.action == Action.UPDATE
    assert [(c.path, c.before, c.after) for c in deployment.changes] == [("replicas", 1, 2)]
    assert plan.counts()["update"] == 1 and plan.counts()["rebuild"] == 0


def test_a_dead_server_is_started_again(project):
    plan = project.plan(state_of(*everything_built(project), servers=[server(project, phase="failed")]))
    assert actions(plan)[DEPLOYMENT] == Action.CREATE


def test_live_objects_without_a_spec_are_deleted_only_when_pruning(tmp_path):
    project = Project(tmp_path / "specs")
    orphan = ServerObservation("old-bot", "f" * 64, "e" * 64, "old/3", "serving", "http://127.0.0.1:8001",
                               1.0, "", "pid 9", None, None)
    kept = project.plan(state_of(servers=[orphan]))
    assert kept.deletes() == [] and "Deployment/old-bot" in kept.unmanaged[0]
    pruned = project.plan(state_of(servers=[orphan]), prune=True)
    assert [a.resource for a in pruned.deletes()] == [ResourceId("Deployment", "old-bot")]
    assert "MLflow runs and model versions are kept" in pruned.deletes()[0].reason


def test_suspended_resources_start_nothing(tmp_path):
    project = Project(tmp_path / "specs", {"fine-tune.yaml": ("learningRate: 2e-4",
                                                              "learningRate: 2e-4\n  suspend: true")})
    plan = project.plan(state_of())
    assert actions(plan)[FINE_TUNE] == Action.SUSPENDED
    assert actions(plan)[EVALUATION] == Action.BLOCKED
    assert "FineTune/sft is suspended" in plan.get(EVALUATION).reason


def test_a_target_plans_only_it_and_its_upstreams(project):
    plan = project.plan(state_of(), target=frozenset({FINE_TUNE}))
    assert set(actions(plan)) == {BASE, DATASET, FINE_TUNE}


def test_json_and_markdown_forms(tmp_path, project):
    changed = Project(tmp_path / "changed", {"fine-tune.yaml": ("learningRate: 2e-4", "learningRate: 1e-4")})
    plan = changed.plan(state_of(*everything_built(project), servers=[server(project)]))
    document = plan_json(plan)
    assert document["format_version"] == 1 and document["has_changes"] is True
    by_name = {a["name"]: a for a in document["actions"]}
    assert by_name["sft"]["action"] == "rebuild"
    assert by_name["sft"]["changes"] == [{"path": "training.learningRate", "before": 2e-4, "after": 1e-4}]
    assert by_name["sft-quality"]["upstream"] == ["FineTune/sft"]
    markdown = plan_markdown(plan)
    assert "| `rebuild` | `FineTune/sft` |" in markdown
    assert "<details>" in markdown


def test_a_built_output_that_is_gone_is_rebuilt_at_the_same_fingerprint(project):
    runs = everything_built(project)
    runs[1] = project.built(FINE_TUNE, model_version="sft/1", output_missing=True)
    plan = project.plan(state_of(*runs, servers=[server(project)]))
    fine_tune = plan.get(FINE_TUNE)
    assert fine_tune.action == Action.REBUILD and fine_tune.previous == fine_tune.fingerprint
    assert fine_tune.reason.startswith("output missing: /store/sft")
    assert actions(plan)[DATASET] == Action.NOOP and actions(plan)[EVALUATION] == Action.NOOP
    assert actions(plan)[DEPLOYMENT] == Action.REBUILD  # it serves the model built again
    assert plan.impact == {}  # the same fingerprint: nothing downstream changes


def test_a_failed_gate_is_recorded_with_its_metric_value_and_threshold(tmp_path, project):
    old = everything_built(project)
    changed = Project(tmp_path / "changed", {"fine-tune.yaml": ("learningRate: 2e-4", "learningRate: 1e-4")})
    failing = everything_built(changed)
    failing[1] = changed.built(FINE_TUNE, model_version="sft/2")
    failing[2] = changed.built(EVALUATION, model_version="sft/2", verdict="failed",
                               verdict_summary="failed: gate rougeL 0.21 < 0.3",
                               metrics={"rougeL": 0.21, "perplexity": 3.5})
    deployment = changed.plan(state_of(*failing, *old, servers=[server(project)])).get(DEPLOYMENT)
    block = deployment.blocked_by
    assert isinstance(block, GateBlock)
    assert (block.model_version, block.keeps_serving) == ("sft/2", "sft/1")
    [evaluation] = block.evaluations
    assert evaluation.evaluation == "sft-quality" and evaluation.summary == "gate rougeL 0.21 < 0.3"
    [check] = evaluation.failures
    assert (check.metric, check.value, check.operator, check.bound, check.kind) == \
        ("rougeL", 0.21, ">=", 0.3, "min")
    assert deployment.reason == block.describe() == \
        "sft/2 did not pass sft-quality: gate rougeL 0.21 < 0.3; sft/1 keeps serving"
    written = {a["name"]: a for a in plan_json(changed.plan(state_of(*failing, *old,
                                                                      servers=[server(project)])))["actions"]}
    assert written["bot"]["blocked_by"] == {
        "kind": "gate", "model": "sft/2", "model_version": "sft/2", "keeps_serving": "sft/1",
        "evaluations": [{"evaluation": "sft-quality", "summary": "gate rougeL 0.21 < 0.3",
                         "failures": [{"metric": "rougeL", "check": "min", "value": 0.21, "operator": ">=",
                                       "threshold": 0.3, "baseline": None,
                                       "description": "gate rougeL 0.21 < 0.3"}]}]}
    assert written["sft"]["blocked_by"] is None  # only blocked actions carry one


def test_used_up_attempts_and_the_upstreams_they_block_are_recorded(project):
    failed = JobObservation("Dataset", "chats", project.fp(DATASET), "failed", 2, 1.0, 2.0, 1,
                            "exited with 1: bad row", "pid 7", None)
    plan = project.plan(state_of(jobs=[failed]), max_attempts=2)
    attempts = plan.get(DATASET).blocked_by
    assert attempts == AttemptsBlock(failed=2, max_attempts=2, message="exited with 1: bad row")
    assert plan.get(DATASET).reason == ("failed 2 of 2 attempts: exited with 1: bad row; fix the cause, then "
                                        "apply with --retry-failed")
    upstream = plan.get(FINE_TUNE).blocked_by
    assert isinstance(upstream, UpstreamBlock)
    assert [(u.resource, u.state, u.blocked_by) for u in upstream.upstreams] == \
        [(DATASET, "blocked", attempts)]
    written = {a["name"]: a for a in plan_json(plan)["actions"]}
    assert written["chats"]["blocked_by"] == {"kind": "attempts", "failed": 2, "max_attempts": 2,
                                              "message": "exited with 1: bad row",
                                              "retry_option": "--retry-failed"}
    [entry] = written["sft"]["blocked_by"]["upstreams"]
    assert (entry["kind"], entry["name"], entry["state"]) == ("Dataset", "chats", "blocked")
    assert entry["blocked_by"]["kind"] == "attempts"


def test_a_plan_writes_times_in_utc_whatever_the_machine_time_zone(project, time_zone):
    running = JobObservation("Dataset", "chats", project.fp(DATASET), "running", 1, 1_700_000_000.0, None,
                             None, "", "pid 42", None)
    gone = everything_built(project)[:2]
    gone[1] = project.built(FINE_TUNE, model_version="sft/1", output_missing=True)
    documents, texts = [], []
    for zone in ("UTC", "Asia/Tokyo"):
        time_zone(zone)
        for state in (state_of(jobs=[running]), state_of(*gone)):
            plan = project.plan(state)
            documents.append(json.dumps(plan_json(plan), sort_keys=True))
            texts.append(plan_text(plan) + plan_markdown(plan))
    assert documents[:2] == documents[2:]
    assert "running since 2023-11-14T22:13:20Z (pid 42, attempt 1)" in documents[0]
    assert "(built 2023-11-14T22:13:20Z)" in documents[1]
    # People read local time: the text and Markdown reports are the edge where it is formatted.
    assert "running since 2023-11-14 22:13:20 (pid 42" in texts[0]
    assert "running since 2023-11-15 07:13:20 (pid 42" in texts[2]
    assert "(built 2023-11-15 07:13:20)" in texts[3] and "T22:13:20Z" not in texts[3]


def test_a_run_built_under_an_older_recipe_names_the_default_changes_and_how_to_keep_them(
        tmp_path, monkeypatch):
    # An upgrade that changes a default rebuilds; the plan says what changed, in words, and how to
    # keep the old behaviour, not only the recipe numbers.
    from reconciler import fingerprint

    current = fingerprint.RECIPE_VERSIONS["FineTune"]
    monkeypatch.setitem(fingerprint.RECIPE_VERSIONS, "FineTune", 1)
    before = Project(tmp_path / "before")
    monkeypatch.setitem(fingerprint.RECIPE_VERSIONS, "FineTune", current)
    plan = Project(tmp_path / "after").plan(state_of(*everything_built(before), servers=[server(before)]))
    assert actions(plan)[FINE_TUNE] == Action.REBUILD and actions(plan)[DATASET] == Action.NOOP
    reason = plan.get(FINE_TUNE).reason
    assert f"runtime recipe 1 -> {current}: chat SFT now trains every assistant turn" in reason
    assert "set training.trainOn: lastAssistantTurn to keep the old behaviour" in reason
    assert "warmupRatio is now a share of the optimizer steps on transformers 4" in reason
    shown = plan_text(plan) + plan_markdown(plan) + json.dumps(plan_json(plan))
    assert shown.count("training.trainOn: lastAssistantTurn") == 3


def test_every_recipe_bump_says_what_changed() -> None:
    from reconciler.fingerprint import RECIPE_CHANGES, RECIPE_VERSIONS

    for kind, version in RECIPE_VERSIONS.items():
        for bump in range(2, version + 1):
            assert RECIPE_CHANGES.get(kind, {}).get(bump), f"{kind} recipe {bump} has no note"
