"""Two teams in one repository, as a platform team sets them up: each has a FineTune named
`fruit-sft`, and they validate, plan and train side by side without sharing state, runs or
registered models; `render` gives each its namespace, queue, quota and the daemon's access
there, every object checked against the Kubernetes and Kueue schemas. Real MLflow, real Git,
real training of the tiny quickstart model."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_tuneops
from tests.support.reconcile_support import QUICKSTART, SpecRepo

TEAM_FILES = ("base-model.yaml", "dataset.yaml", "fine-tune.yaml")

TEAMS = """\
teams:
  a:
    paths: ["teams/a/**"]
    namespace: team-a
    queue: a-jobs
    owners: ["@org/team-a"]
    quota: {gpus: 16}
  b:
    paths: ["teams/b/**"]
    namespace: team-b
    queue: b-jobs
    owners: ["@org/team-b", "@bea"]
    quota: {gpus: 4, cpu: "64", memory: 512Gi}
"""


def into_teams(root: Path, settings: str = TEAMS) -> None:
    """The quickstart's specs, once under teams/a and once under teams/b (the data and model
    stay at the root, where both read them)."""
    for team in ("a", "b"):
        folder = root / "teams" / team
        folder.mkdir(parents=True)
        for name in TEAM_FILES:
            text = (root / name).read_text().replace("file://data/", "file://../../data/")
            (folder / name).write_text(text.replace("file://models/", "file://../../models/"))
    for name in ("base-model.yaml", "dataset.yaml", "fine-tune.yaml", "evaluation.yaml", "deployment.yaml",
                 "sweep.yaml"):
        (root / name).unlink()
    with (root / "tuneops.yaml").open("a") as file:
        file.write(settings)


@pytest.mark.slow
def test_two_teams_train_their_own_fruit_sft_without_sharing_anything(tmp_path, mlflow_server):
    repo = SpecRepo(tmp_path / "specs", mlflow_server.uri)
    repo.edit("fine-tune.yaml", "epochs: 3", "epochs: 1")  # separation is the point, not quality
    into_teams(repo.root)
    repo.commit("two teams, one FineTune name")

    valid = repo.tuneops("validate", ".")
    assert valid.exit_code == 0, valid.output
    plan = repo.plan()
    assert plan["by_resource"]["FineTune/a.fruit-sft"] == "create"
    assert plan["by_resource"]["FineTune/b.fruit-sft"] == "create"

    applied = repo.tuneops("apply", ".", "--yes")
    assert applied.exit_code == 0, applied.output
    # the same registered model name, each team's own: both start at version 1
    assert "FineTune/a.fruit-sft: done" in applied.stdout and f"registered a.{repo.model}/1" in applied.stdout
    assert f"registered b.{repo.model}/1" in applied.stdout

    import mlflow

    client = mlflow.MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name(_experiment(repo.root))
    runs = client.search_runs([experiment.experiment_id], "tags.`tuneops.kind` = 'FineTune'")
    by_team = {run.data.tags["tuneops.team"]: run.data.tags for run in runs}
    assert sorted(by_team) == ["a", "b"], [run.data.tags.get("tuneops.name") for run in runs]
    assert (by_team["a"]["tuneops.name"], by_team["b"]["tuneops.name"]) == ("a.fruit-sft", "b.fruit-sft")
    assert by_team["a"]["tuneops.fingerprint"] != by_team["b"]["tuneops.fingerprint"]
    for team in ("a", "b"):
        (version,) = client.search_model_versions(f"name = '{team}.{repo.model}'")
        assert version.tags["tuneops.team"] == team and version.run_id in {run.info.run_id for run in runs}
    stores = sorted(path.name for path in (repo.root / ".tuneops" / "store" / "finetunes").iterdir())
    assert stores == ["a.fruit-sft", "b.fruit-sft"]

    # a change to team b's spec retrains team b's model only
    repo.edit("teams/b/fine-tune.yaml", "learningRate: 3.0e-3", "learningRate: 2.0e-3")
    repo.commit("team b: a lower learning rate")
    changed = repo.plan()["by_resource"]
    assert changed["FineTune/b.fruit-sft"] == "rebuild" and changed["FineTune/a.fruit-sft"] == "noop", changed


def _experiment(root: Path) -> str:
    return yaml.safe_load((root / "tuneops.yaml").read_text())["mlflow"]["experiment"]


KUBERNETES = """\
backend: kubernetes
mlflow:
  trackingUri: http://mlflow.mlops.svc.cluster.local:5000
kubernetes:
  namespace: ml-platform
  image: registry.example.internal/ml/tuneops-trainer:0.1.0
  storageClaim: tuneops-store
"""


def test_render_gives_each_team_its_namespace_queue_quota_and_the_daemons_access(tmp_path):
    root = tmp_path / "specs"
    shutil.copytree(QUICKSTART, root, ignore=shutil.ignore_patterns(".tuneops"))
    (root / "tuneops.yaml").write_text(KUBERNETES)
    into_teams(root)

    rendered = run_tuneops("render", str(root))  # validated against the schemas, Kueue's included
    assert rendered.exit_code == 0, rendered.output
    objects = list(yaml.safe_load_all(rendered.stdout))
    named = {(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]): obj for obj in objects}

    for team, gpus in (("a", 16), ("b", 4)):
        assert ("Namespace", None, f"team-{team}") in named
        local_queue = named[("LocalQueue", f"team-{team}", f"{team}-jobs")]
        assert local_queue["spec"] == {"clusterQueue": f"tuneops-{team}"}
        cluster_queue = named[("ClusterQueue", None, f"tuneops-{team}")]["spec"]
        selected = cluster_queue["namespaceSelector"]["matchLabels"]
        assert selected == {"kubernetes.io/metadata.name": f"team-{team}"}
        (flavor,) = cluster_queue["resourceGroups"][0]["flavors"]
        quotas = {r["name"]: r["nominalQuota"] for r in flavor["resources"]}
        assert quotas["nvidia.com/gpu"] == gpus
        binding = named[("RoleBinding", f"team-{team}", "tuneops")]
        daemon = {"kind": "ServiceAccount", "name": "tuneops", "namespace": "ml-platform"}
        assert binding["subjects"] == [daemon]
        role = named[("Role", f"team-{team}", "tuneops")]
        assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in role["rules"])
        assert not any(rule["resources"] == ["leases"] for rule in role["rules"])  # the Lease stays home
        job = next(obj for obj in objects if obj["kind"] == "Job"
                   and obj["metadata"]["labels"]["tuneops.dev/name"] == f"{team}.fruit-sft")
        assert job["metadata"]["namespace"] == f"team-{team}"
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == f"{team}-jobs"
        assert job["metadata"]["name"].startswith(f"{team}-fruit-sft-finetune-")
    assert quotas == {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": 4}  # team b's own

    # a quota the schema refuses fails render (and so CI), naming the object and field
    (root / "tuneops.yaml").write_text(KUBERNETES + TEAMS.replace("queue: b-jobs", "queue: B_jobs"))
    refused = run_tuneops("render", str(root))
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "tuneops.yaml" in refused.stderr and "teams.b.queue" in refused.stderr, refused.stderr


def test_plan_json_names_the_team_of_each_action(tmp_path):
    root = tmp_path / "specs"
    shutil.copytree(QUICKSTART, root, ignore=shutil.ignore_patterns(".tuneops"))
    into_teams(root)
    planned = run_tuneops("plan", str(root), "--offline", "--format", "json")
    assert planned.exit_code == 0, planned.output
    teams = {f"{a['kind']}/{a['name']}": a.get("team") for a in json.loads(planned.stdout)["actions"]}
    assert teams["FineTune/a.fruit-sft"] == "a" and teams["Dataset/b.fruit-colors"] == "b"
    bare = run_tuneops("plan", str(root), "--offline", "--target", "FineTune/fruit-sft")
    assert bare.exit_code == 1 and "did you mean FineTune/a.fruit-sft, FineTune/b.fruit-sft?" in bare.stderr
    qualified = run_tuneops("plan", str(root), "--offline", "--format", "json",
                            "--target", "FineTune/b.fruit-sft")
    assert {f"{a['kind']}/{a['name']}" for a in json.loads(qualified.stdout)["actions"]} == \
        {"BaseModel/b.tiny-llama", "Dataset/b.fruit-colors", "FineTune/b.fruit-sft"}


PRICED = """\
pricing:
  gpuProducts:
    NVIDIA-H100-80GB-HBM3: {onDemand: 4.0, spot: 1.6}
"""


def on_gpus(repo: SpecRepo) -> None:
    """Both teams' FineTunes on an H100 each, so the planner prices them (nothing trains here)."""
    for team in ("a", "b"):
        repo.edit(f"teams/{team}/fine-tune.yaml", "gpusPerNode: 0",
                  "gpusPerNode: 1\n    gpuProduct: NVIDIA-H100-80GB-HBM3")


def test_a_pull_request_plan_prices_each_team_and_blocks_one_over_budget(tmp_path):
    repo = SpecRepo(tmp_path / "specs", None)
    budget = TEAMS.replace("quota: {gpus: 16}", "quota: {gpus: 16}\n    budget: {dollarsPerMonth: 0}")
    into_teams(repo.root, budget + PRICED)
    repo.commit("two teams; team a has no money left this month")
    repo.git("checkout", "-q", "-b", "gpus")
    on_gpus(repo)
    repo.commit("train on H100s")

    planned = repo.tuneops("plan", ".", "--base", "main", "--offline", "--format", "json")
    assert planned.exit_code == 0, planned.output
    document = json.loads(planned.stdout)
    actions = {f"{a['kind']}/{a['name']}": a for a in document["actions"]}
    b_sft = actions["FineTune/b.fruit-sft"]
    assert (b_sft["action"], b_sft["team"]) == ("rebuild", "b")
    blocked = actions["FineTune/a.fruit-sft"]
    assert blocked["action"] == "blocked" and blocked["blocked_by"]["kind"] == "budget"
    assert "team a's budget" in blocked["blocked_by"]["why"]
    assert blocked["blocked_by"]["approve_with"] == "budget"
    # dollars per resource, and per team
    assert document["estimates"]["FineTune/a.fruit-sft"]["dollars_at_most"]["on_demand"] > 0
    teams = document["teams"]
    assert teams["a"]["costly"] == ["FineTune/a.fruit-sft"] and teams["a"]["over_budget"]
    assert teams["b"]["dollars"] > 0 and teams["b"]["over_budget"] is None
    assert teams["b"]["owners"] == ["@org/team-b", "@bea"] and teams["a"]["spent"] is None  # offline

    comment = repo.tuneops("plan", ".", "--base", "main", "--offline", "--format", "markdown").stdout
    assert "| `a` | @org/team-a |" in comment and "over budget" in comment
    assert "| `b` | @org/team-b, @bea |" in comment
    text = repo.tuneops("plan", ".", "--base", "main", "--offline").stdout
    assert "blocked   FineTune/a.fruit-sft" in text and "team a (@org/team-a): this plan" in text

    why = "quarter-end retraining, agreed with finance"
    approved = repo.tuneops("plan", ".", "--base", "main", "--offline", "--format", "json",
                            "--approve", "budget", "--reason", why)
    assert approved.exit_code == 0, approved.output
    document = json.loads(approved.stdout)
    assert {a["name"]: a["action"] for a in document["actions"]}["a.fruit-sft"] == "rebuild"
    assert document["teams"]["a"]["approval_reason"] == why
    assert any("over budget" in warning and why in warning for warning in document["warnings"])


def test_month_to_date_spend_is_read_from_the_runs_mlflow_recorded(tmp_path):
    import time

    import mlflow

    repo = SpecRepo(tmp_path / "specs", None)
    budget = TEAMS.replace("quota: {gpus: 16}", "quota: {gpus: 16}\n    budget: {gpuHoursPerMonth: 100}")
    into_teams(repo.root, budget + PRICED)
    on_gpus(repo)
    repo.commit("two teams on H100s")
    assert repo.tuneops("plan", ".").exit_code == 0  # creates nothing: reads an empty state
    client = mlflow.MlflowClient(f"sqlite:///{repo.root / '.tuneops' / 'mlflow.db'}")
    experiment = client.create_experiment(_experiment(repo.root))
    now = time.time()
    for team, hours, ended in (("a", 100.0, now), ("a", 500.0, now - 40 * 86400), ("b", 7.5, now)):
        tags = {"tuneops.kind": "FineTune", "tuneops.team": team, "tuneops.gpu_hours": repr(hours),
                "tuneops.gpu_product": "NVIDIA-H100-80GB-HBM3"}
        run = client.create_run(experiment, tags=tags)
        client.set_terminated(run.info.run_id, "FINISHED", end_time=int(ended * 1000))

    planned = repo.tuneops("plan", ".", "--format", "json")
    assert planned.exit_code == 0, planned.output
    teams = json.loads(planned.stdout)["teams"]
    # last month's 500 GPU-hours do not count; this month's 100 use team a's 100 up, so its
    # training (the tiny model's sliver of a GPU-hour) is blocked; team b has no budget
    assert teams["a"]["spent"] == {"gpu_hours": 100.0, "dollars": 400.0, "runs": 1}
    assert teams["b"]["spent"] == {"gpu_hours": 7.5, "dollars": 30.0, "runs": 1}
    actions = {a["name"]: a["action"] for a in json.loads(planned.stdout)["actions"]}
    assert (actions["a.fruit-sft"], actions["b.fruit-sft"]) == ("blocked", "create")
    assert teams["a"]["over_budget"] == "100.00 GPU-hours spent this month: its 100.00 are used up"


def test_codeowners_gives_each_teams_folders_to_its_owners_and_keeps_other_lines(tmp_path):
    top = tmp_path / "repo"  # the specs one folder below the repository's root
    specs = top / "specs"
    shutil.copytree(QUICKSTART, specs, ignore=shutil.ignore_patterns(".tuneops"))
    into_teams(specs)
    subprocess.run(["git", "init", "-q", str(top)], check=True)
    (top / ".github").mkdir()
    (top / ".github" / "CODEOWNERS").write_text("* @org/platform\n")
    settings = specs / "tuneops.yaml"

    printed = run_tuneops("codeowners", str(specs))
    assert printed.exit_code == 0, printed.output
    assert "/specs/teams/a/** @org/team-a" in printed.stdout
    assert "/specs/teams/b/** @org/team-b @bea" in printed.stdout
    stale = run_tuneops("codeowners", str(specs), "--check")
    assert stale.exit_code == 1 and "codeowners --write" in stale.stderr

    assert run_tuneops("codeowners", str(specs), "--write").exit_code == 0
    written = (top / ".github" / "CODEOWNERS").read_text()
    assert written.startswith("* @org/platform\n\n# BEGIN tuneops teams")  # team rules come last, and win
    settings.write_text(settings.read_text().replace('"@bea"', '"@bo"'))
    assert run_tuneops("codeowners", str(specs), "--write").exit_code == 0
    rewritten = (top / ".github" / "CODEOWNERS").read_text()
    assert rewritten.count("# BEGIN tuneops teams") == 1
    assert "@org/team-b @bo" in rewritten and "@bea" not in rewritten
    assert run_tuneops("codeowners", str(specs), "--check").exit_code == 0

    settings.write_text(settings.read_text().replace('"@bo"', '"bo"'))
    refused = run_tuneops("codeowners", str(specs))
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "teams.b.owners[1]" in refused.stderr


def test_a_rule_about_the_plan_is_checked_on_each_matched_teams_share(tmp_path):
    root = tmp_path / "specs"
    shutil.copytree(QUICKSTART, root, ignore=shutil.ignore_patterns(".tuneops"))
    into_teams(root)
    (root / "policies").mkdir()
    (root / "policies" / "frozen.yaml").write_text("""\
apiVersion: tuneops.dev/v1alpha1
kind: Policy
metadata: {name: b-is-frozen}
spec:
  match: {teams: [b]}
  rule: "team == 'b' && plan.actions.all(a, a.kind != 'FineTune' && a.name.startsWith('b.'))"
  message: "team b trains nothing this week"
""")
    planned = run_tuneops("plan", str(root), "--offline", "--format", "json")
    assert planned.exit_code == 1, planned.output  # team a's FineTune is not team b's share
    (error,) = json.loads(planned.stdout)["policy_errors"]
    assert "the plan (team b's share) violates Policy 'b-is-frozen'" in error
    (root / "policies" / "frozen.yaml").write_text(
        (root / "policies" / "frozen.yaml").read_text().replace("teams: [b]", "teams: [a]").replace(
            "team == 'b' && ", "team == 'a' && ").replace("startsWith('b.')", "startsWith('a.')"))
    assert "team a's share" in json.loads(run_tuneops("plan", str(root), "--offline", "--format", "json")
                                          .stdout)["policy_errors"][0]


def test_an_approved_budget_overrun_is_recorded_once_and_listed_by_history(tmp_path):
    from reconciler.apply.session import record_overrides
    from reconciler.project import Project
    from reconciler.specs.policy import Approval

    repo = SpecRepo(tmp_path / "specs", None)
    budget = TEAMS.replace("quota: {gpus: 16}", "quota: {gpus: 16}\n    budget: {dollarsPerMonth: 0}")
    into_teams(repo.root, budget + PRICED)
    on_gpus(repo)
    commit = repo.commit("two teams on H100s; team a has no money left")
    why = "the quarter's retraining, agreed with finance"
    project = Project.load(repo.root, approval=Approval(frozenset({"budget"}), why, "ada (--approve)"))
    planned = project.plan(creating=True)  # the real (empty) state, with an MLflow store to record in
    (cost,) = [cost for cost in planned.plan.teams if cost.team == "a"]
    assert cost.over_budget and cost.approval is not None and not cost.blocks
    for _ in range(2):  # a second apply of the same plan records nothing new
        record_overrides(planned, "ada")
    history = repo.tuneops("history", "Policy/budget", "--format", "json")
    assert history.exit_code == 0, history.output
    (override,) = json.loads(history.stdout)["overrides"]
    assert (override["resource"], override["approved_by"], override["reason"], override["commit"]) == \
        ("team a", "ada (--approve)", why, commit)
