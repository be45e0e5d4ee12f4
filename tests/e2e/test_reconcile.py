"""The reconciler end to end: plan and apply the quickstart against a real MLflow server, with
real jobs (the tiny model trains for real), a real model server, and real Git history."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.support.reconcile_support import SpecRepo, chat
from tests.support.runtime_support import free_port, needs_training

pytestmark = needs_training

RESOURCES = ("BaseModel/tiny-llama", "Dataset/fruit-colors", "FineTune/fruit-sft",
             "Evaluation/fruit-sft-quality", "Deployment/fruit-bot")
# The quickstart's Sweep is suspended (sweep.yaml): in every plan, and downstream of its template.
SWEEP = "Sweep/fruit-lr"
EVERYTHING_BUILT = {**dict.fromkeys(RESOURCES, "noop"), SWEEP: "suspended"}
DOWNSTREAM_OF_DATA = ["FineTune/fruit-sft", "Evaluation/fruit-sft-quality", "Deployment/fruit-bot", SWEEP]


@pytest.fixture
def repo(tmp_path: Path, mlflow_server):
    repo = SpecRepo(tmp_path / "specs", mlflow_server.uri)
    yield repo
    repo.stop_servers()


def alias_version(tracking_uri: str, model: str, alias: str = "production") -> str:
    import mlflow

    return str(mlflow.MlflowClient(tracking_uri).get_model_version_by_alias(model, alias).version)


@pytest.mark.slow
def test_the_gitops_workflow_from_empty_to_rollback(repo: SpecRepo, mlflow_server):
    # 1. From empty: every resource is created, then served; a second plan is empty.
    first = repo.plan()
    assert first["by_resource"] == {**EVERYTHING_BUILT, "Dataset/fruit-colors": "create",
                                    "FineTune/fruit-sft": "create", "Evaluation/fruit-sft-quality": "create",
                                    "Deployment/fruit-bot": "create"}
    first_commit = repo.git("rev-parse", "HEAD")
    applied = repo.tuneops("apply", ".", "--yes")
    assert applied.exit_code == 0, applied.output
    assert "Deployment/fruit-bot: done" in applied.stdout
    assert "curl -s http://127.0.0.1:" in applied.stdout
    url = applied.stdout.split(f"serving {repo.model}/1 at ")[1].split()[0]
    answer = chat(url, "What color is a banana?")
    assert answer["choices"][0]["message"]["content"].strip() != ""
    assert alias_version(mlflow_server.uri, repo.model) == "1"
    again = repo.tuneops("plan", ".", "--detailed-exitcode")
    assert again.exit_code == 0, again.output
    assert "No changes." in again.stdout
    assert "Nothing to do" in repo.tuneops("apply", ".", "--yes").stdout

    # 3. A description or a label changes nothing; replicas is an update, nothing else.
    repo.edit("fine-tune.yaml", "  name: fruit-sft\n", "  name: fruit-sft\n  description: fruit colours\n"
                                                       "  labels:\n    team: demo\n")
    assert repo.tuneops("plan", ".", "--detailed-exitcode").exit_code == 0
    repo.edit("deployment.yaml", "  runtime: transformers\n", "  runtime: transformers\n  replicas: 2\n")
    replicas = repo.plan()
    assert replicas["counts"]["update"] == 1 and replicas["by_resource"]["Deployment/fruit-bot"] == "update"
    assert sum(replicas["counts"][a] for a in ("create", "rebuild", "delete", "retry")) == 0
    assert repo.tuneops("plan", ".", "--detailed-exitcode").exit_code == 2
    repo.git("checkout", "--", ".")

    # 2. Appending rows rebuilds the dataset and everything downstream; the base model stays.
    with (repo.root / "data/fruit-colors.jsonl").open("a") as data:
        row = {"instruction": "What color is a plum?", "input": "", "output": "purple"}
        data.write(json.dumps(row) + "\n")
    appended = repo.plan()
    assert appended["by_resource"] == {**dict.fromkeys(RESOURCES, "rebuild"), "BaseModel/tiny-llama": "noop",
                                       SWEEP: "suspended"}
    dataset = next(a for a in appended["actions"] if a["name"] == "fruit-colors")
    assert "spec.source content changed" in dataset["reason"]
    assert appended["impact"]["Dataset/fruit-colors"] == DOWNSTREAM_OF_DATA
    repo.git("checkout", "--", ".")

    # 5. A hyperparameter change trains version 2; `git revert` serves version 1 again, untrained.
    repo.edit("fine-tune.yaml", "epochs: 3", "epochs: 4")
    longer = repo.commit("train a little longer")
    applied = repo.tuneops("apply", ".", "--yes")
    assert applied.exit_code == 0, applied.output
    assert f"serving {repo.model}/2" in applied.stdout
    assert alias_version(mlflow_server.uri, repo.model) == "2"
    # version 2 was compared with version 1, which served, on the same 36 rows
    compared = r"exact_match [0-9.]+ vs serving [0-9.]+: \S+ \[\S+, \S+\] \(n=\d+, 95%"
    assert re.search(compared, applied.stdout), applied.stdout
    status = json.loads(repo.tuneops("status", ".", "--format", "json").stdout)
    quality = {r["name"]: r for r in status["resources"]}["fruit-sft-quality"]
    assert "vs serving" in quality["result"] and "notWorseThan -0.1" in quality["result"], quality
    repo.git("revert", "--no-edit", "HEAD")
    revert = repo.git("rev-parse", "HEAD")
    reverted = repo.plan()
    assert reverted["by_resource"] == {**EVERYTHING_BUILT, "Deployment/fruit-bot": "update"}
    assert reverted["counts"]["create"] == reverted["counts"]["rebuild"] == 0
    applied = repo.tuneops("apply", ".", "--yes")
    assert applied.exit_code == 0, applied.output
    assert "started pid" not in applied.stdout  # no job ran
    assert f"serving {repo.model}/1" in applied.stdout
    assert alias_version(mlflow_server.uri, repo.model) == "1"
    # Logs follow the version in use: version 1's training log, not version 2's, the newest.
    version_1_log, version_2_log = sorted((repo.root / ".tuneops" / "logs").glob("finetune-fruit-sft-*.log"),
                                          key=lambda log: log.stat().st_mtime)
    assert version_1_log.read_text() != version_2_log.read_text()
    current = repo.tuneops("logs", "FineTune/fruit-sft")
    assert current.exit_code == 0 and current.stdout == version_1_log.read_text(), current.stderr
    assert "the run at the fingerprint the specs ask for" in current.stderr
    picked = repo.tuneops("logs", "FineTune/fruit-sft", "--version", "2")
    assert picked.exit_code == 0 and picked.stdout == version_2_log.read_text(), picked.stderr
    assert f"the run that built {repo.model}/2" in picked.stderr
    missing = repo.tuneops("logs", "FineTune/fruit-sft", "--version", "7")
    assert missing.exit_code == 1
    assert missing.stderr == \
        "error: FineTune/fruit-sft has no version 7 (versions built: 1, 2; see `tuneops status`)\n"

    # An output that MLflow records but that is gone from disk is rebuilt, not trusted.
    shutil.rmtree(repo.root / ".tuneops" / "store" / "datasets")
    missing = next(a for a in repo.plan()["actions"] if a["kind"] == "Dataset")
    assert missing["action"] == "rebuild" and missing["reason"].startswith("output missing: "), missing
    status = json.loads(repo.tuneops("status", ".", "--format", "json").stdout)
    assert {r["name"]: r["phase"] for r in status["resources"]}["fruit-colors"] == "Pending"
    rebuilt = repo.tuneops("apply", ".", "--yes")
    assert rebuilt.exit_code == 0 and "Dataset/fruit-colors: done" in rebuilt.stdout, rebuilt.output
    assert "FineTune/fruit-sft:" not in rebuilt.stdout  # its own output is there: nothing retrained
    assert "reaches" not in rebuilt.stdout  # the same fingerprint: nothing downstream changes
    assert "No changes." in repo.tuneops("plan", ".").stdout

    # 4. A version that fails its gate is not served: the old one keeps serving, the alias stays.
    repo.edit("fine-tune.yaml", "learningRate: 3.0e-3", "learningRate: 1.0e-6")
    repo.commit("a learning rate too small to learn anything")
    # After the rollback the change is diffed against version 1, which serves, not version 2,
    # the newest: only the learning rate is listed, not the reverted epochs.
    edited = next(a for a in repo.plan()["actions"] if a["kind"] == "FineTune")
    assert [c["path"] for c in edited["changes"]] == ["training.learningRate"], edited
    assert edited["compared_with"] == f"{repo.model}/1, serving"
    assert f"compared with {repo.model}/1, serving" in repo.tuneops("plan", ".").stdout
    applied = repo.tuneops("apply", ".", "--yes")
    assert applied.exit_code == 0, applied.output
    assert "Deployment/fruit-bot: blocked" in applied.stdout
    assert f"{repo.model}/3 did not pass fruit-sft-quality: gate exact_match" in applied.stdout
    assert alias_version(mlflow_server.uri, repo.model) == "1"
    assert chat(url, "What color is a banana?")["model"] == "fruit-bot"  # still answering
    blocked = repo.plan()
    deployment = next(a for a in blocked["actions"] if a["name"] == "fruit-bot")
    assert deployment["action"] == "blocked"
    assert "gate exact_match" in deployment["reason"]
    assert f"{repo.model}/1 keeps serving" in deployment["reason"]
    # the pull-request comment shows the interval the comparison with version 1 failed on
    comment = repo.tuneops("plan", ".", "--format", "markdown").stdout
    assert re.search(r"exact_match [0-9.]+ vs serving [0-9.]+: \S+ \[\S+, \S+\] \(n=\d+, 95%.*\) fails "
                     r"notWorseThan -0\.1", comment), comment
    status = json.loads(repo.tuneops("status", ".", "--format", "json").stdout)
    rows = {r["name"]: r for r in status["resources"]}
    assert rows["fruit-bot"]["phase"] == "Blocked" and rows["fruit-bot"]["model_version"] == f"{repo.model}/1"
    assert rows["fruit-sft"]["phase"] == "Ready" and rows["fruit-sft"]["model_version"] == f"{repo.model}/3"

    # Pruning: a removed Deployment keeps serving until prune is asked for, and a prune that
    # would stop everything is refused unless forced.
    (repo.root / "deployment.yaml").unlink()
    # with no Deployment requiring it, a comparison with the serving version is an error: drop it
    evaluation = (repo.root / "evaluation.yaml").read_text()
    gate = evaluation.index("    # A new version must not be measurably worse")
    (repo.root / "evaluation.yaml").write_text(evaluation[:gate])
    repo.commit("retire the bot")
    kept = repo.plan()
    assert kept["unmanaged"] and "Deployment/fruit-bot" in kept["unmanaged"][0]
    refused = repo.tuneops("apply", ".", "--yes", "--prune")
    assert refused.exit_code == 1 and "refusing" in refused.stderr
    pruned = repo.tuneops("apply", ".", "--yes", "--prune", "--force")
    assert pruned.exit_code == 0, pruned.output
    assert "Deployment/fruit-bot: done" in pruned.stdout
    assert repo.plan()["unmanaged"] == []
    retired = repo.git("rev-parse", "HEAD")

    # The audit trail: each switch of what fruit-bot served, as recorded when it happened (the
    # blocked version 3 and the re-applies that served the same version are no switches). It
    # outlives the commits: the branch is reset and its old commits collected first.
    repo.git("reset", "-q", "--hard", first_commit)
    repo.git("reflog", "expire", "--expire=now", "--all")
    repo.git("gc", "-q", "--prune=now")
    shown = repo.tuneops("history", "Deployment/fruit-bot", "--format", "json")
    assert shown.exit_code == 0, shown.output
    switches = json.loads(shown.stdout)["switches"]
    model = repo.model
    assert [(s["change"], s["previous"], s["version"], s["commit"]) for s in switches] == [
        ("deploy", None, f"{model}/1", first_commit),
        ("switch", f"{model}/1", f"{model}/2", longer),
        ("rollback", f"{model}/2", f"{model}/1", revert),
        ("stopped", f"{model}/1", None, retired)], switches
    assert [s["subject"] for s in switches] == ["the quickstart", "train a little longer",
                                                'Revert "train a little longer"', "retire the bot"]
    assert all(s["author"] and s["applied_by"] and s["status"] == "FINISHED" for s in switches)
    assert switches[1]["gates"]["fruit-sft-quality"].startswith("passed"), switches[1]
    assert "vs serving" in switches[1]["gates"]["fruit-sft-quality"], switches[1]
    assert [s["at"] for s in switches] == sorted(s["at"] for s in switches)
    text = repo.tuneops("history", "Deployment/fruit-bot").stdout
    assert f"rollback  {model}/2 -> {model}/1" in text, text
    assert f'commit {revert[:12]} "Revert "train a little longer""' in text, text
    since = repo.tuneops("history", "--since", "2999-01-01", "--format", "json")
    assert since.exit_code == 0 and json.loads(since.stdout)["switches"] == [], since.output


def test_mlflow_unreachable_is_a_clear_error_naming_the_uri(tmp_path: Path):
    uri = f"http://ml:secret@127.0.0.1:{free_port()}"
    repo = SpecRepo(tmp_path / "specs", uri)
    result = repo.tuneops("plan", ".")
    assert result.exit_code == 1
    assert f"cannot reach MLflow at http://ml:***@127.0.0.1:{uri.rsplit(':', 1)[1]}" in result.stderr
    assert "secret" not in result.output and "Traceback" not in result.output
    result = repo.tuneops("apply", ".", "--yes")
    assert result.exit_code == 1 and "cannot reach MLflow" in result.stderr
    assert not list((repo.root / ".tuneops").glob("jobs/*.json"))  # nothing was submitted


def test_invalid_specs_are_never_planned_or_applied(tmp_path: Path):
    repo = SpecRepo(tmp_path / "specs", f"http://127.0.0.1:{free_port()}")
    repo.edit("fine-tune.yaml", "microBatchSize: 8", "microBatchSize: -8")
    for command in ("plan", "apply"):
        result = repo.tuneops(command, ".", "--yes") if command == "apply" else repo.tuneops(command, ".")
        assert result.exit_code == 1
        assert "fine-tune.yaml:" in result.stderr and "microBatchSize" in result.stderr
        assert "nothing was planned" in result.stderr
        assert "cannot reach MLflow" not in result.output  # refused before any state is read


def test_offline_plan_reads_no_state(tmp_path: Path):
    repo = SpecRepo(tmp_path / "specs", f"http://127.0.0.1:{free_port()}")
    result = repo.tuneops("plan", ".", "--offline", "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["state_read"] is False and document["format_version"] == 1
    assert document["counts"]["create"] == 4
