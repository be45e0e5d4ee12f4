"""`tuneops plan --base REF --offline`: the pull-request dry-run, on real Git repositories (a
bare remote, a clone that pushes main, and a clone that works on a branch)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.conftest import REPO_ROOT, run_tuneops
from tests.support.reconcile_support import GIT_ENV

QUICKSTART = REPO_ROOT / "specs-example" / "quickstart"
DOWNSTREAM_OF_DATA = {"Dataset/fruit-colors": "rebuild", "FineTune/fruit-sft": "rebuild",
                      "Evaluation/fruit-sft-quality": "rebuild", "Deployment/fruit-bot": "rebuild"}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def pull_request(tmp_path: Path) -> Path:
    """A clone on branch `change`, of a remote whose main holds the quickstart under specs/."""
    return clone_on_a_branch(tmp_path, QUICKSTART)


def clone_on_a_branch(tmp_path: Path, specs: Path) -> Path:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    author = tmp_path / "author"
    git(tmp_path, "clone", "-q", str(remote), str(author))
    shutil.copytree(specs, author / "specs",
                    ignore=shutil.ignore_patterns(".tuneops", "__pycache__", "quickstart"))
    git(author, "add", "-A")
    git(author, "commit", "-q", "-m", "the quickstart")
    git(author, "push", "-q", "origin", "HEAD:main")
    reviewer = tmp_path / "reviewer"
    git(tmp_path, "clone", "-q", str(remote), str(reviewer))
    git(reviewer, "checkout", "-q", "-b", "change")
    return reviewer


def plan(clone: Path, *args: str) -> dict:
    result = run_tuneops("plan", "specs", "--base", "origin/main", "--offline", "--format", "json", *args,
                         cwd=clone)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    # the quickstart's Sweep is suspended in every plan: what a change does is the rest
    document["changed"] = {f"{a['kind']}/{a['name']}": a["action"] for a in document["actions"]
                           if a["action"] not in ("noop", "suspended")}
    document["suspended"] = {f"{a['kind']}/{a['name']}" for a in document["actions"]
                             if a["action"] == "suspended"}
    return document


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_a_dataset_change_lists_that_dataset_and_exactly_its_downstream(pull_request: Path):
    edit(pull_request / "specs" / "dataset.yaml", "train: 0.8\n    validation: 0.1",
         "train: 0.7\n    validation: 0.2")
    git(pull_request, "commit", "-q", "-am", "more validation data")
    found = plan(pull_request)
    assert found["changed"] == DOWNSTREAM_OF_DATA and found["suspended"] == {"Sweep/fruit-lr"}
    dataset = next(a for a in found["actions"] if a["kind"] == "Dataset")
    assert {(c["path"], c["before"], c["after"]) for c in dataset["changes"]} == {
        ("split.train", 0.8, 0.7), ("split.validation", 0.1, 0.2)}
    fine_tune = next(a for a in found["actions"] if a["kind"] == "FineTune")
    assert fine_tune["reason"] == "upstream changed: Dataset/fruit-colors" and fine_tune["changes"] == []
    assert found["source"]["base_commit"] == git(pull_request, "rev-parse", "origin/main")
    assert found["source"]["head_commit"] == git(pull_request, "rev-parse", "HEAD")


def test_an_evaluation_change_leaves_the_training_alone(pull_request: Path):
    edit(pull_request / "specs" / "evaluation.yaml", "maxNewTokens: 8", "maxNewTokens: 12")
    assert plan(pull_request)["changed"] == {"Evaluation/fruit-sft-quality": "rebuild",
                                             "Deployment/fruit-bot": "rebuild"}


def test_reformatting_and_reordering_keys_is_no_change(pull_request: Path):
    spec = pull_request / "specs" / "dataset.yaml"
    text = spec.read_text()
    reordered = text.replace("  split:\n    train: 0.8\n    validation: 0.1\n    test: 0.1\n",
                             "  split: {test: 0.1, validation: 0.10, train: .8}   # same split\n")
    assert reordered != text
    spec.write_text(reordered.replace("source: file://data/fruit-colors.jsonl",
                                      "source: 'file://data/fruit-colors.jsonl'"))
    git(pull_request, "commit", "-q", "-am", "tidy")
    found = plan(pull_request)
    assert found["changed"] == {} and found["has_changes"] is False
    result = run_tuneops("plan", "specs", "--base", "origin/main", "--offline", "--detailed-exitcode",
                         cwd=pull_request)
    assert result.exit_code == 0, result.output


def test_added_and_removed_specs_are_creates_and_deletes(pull_request: Path):
    specs = pull_request / "specs"
    (specs / "deployment.yaml").unlink()
    # with no Deployment left to require it, the comparison with the serving version goes too
    evaluation = (specs / "evaluation.yaml").read_text()
    (specs / "evaluation.yaml").write_text(evaluation[:evaluation.index("    # A new version must not")])
    shutil.copy(specs / "evaluation.yaml", specs / "evaluation-2.yaml")
    edit(specs / "evaluation-2.yaml", "name: fruit-sft-quality", "name: fruit-sft-quality-2")
    found = plan(pull_request)
    assert found["changed"] == {"Deployment/fruit-bot": "delete", "Evaluation/fruit-sft-quality-2": "create",
                                "Evaluation/fruit-sft-quality": "rebuild"}


def test_the_pull_request_comment_is_valid_markdown_with_a_graph(pull_request: Path):
    edit(pull_request / "specs" / "dataset.yaml", "train: 0.8\n    validation: 0.1",
         "train: 0.7\n    validation: 0.2")
    result = run_tuneops("plan", "specs", "--base", "origin/main", "--offline", "--format", "markdown",
                         cwd=pull_request)
    assert result.exit_code == 0, result.output
    tokens = MarkdownIt("commonmark").enable("table").parse(result.stdout)
    cells = [t.content for t in tokens if t.type == "inline"]
    assert "`Dataset/fruit-colors`" in cells and "spec changed" in cells
    fences = {t.info: t.content for t in tokens if t.type == "fence"}
    # the quickstart's 5 edges, and the suspended Sweep's 2 (from its FineTune and Evaluation)
    assert fences["mermaid"].startswith("flowchart LR\n") and fences["mermaid"].count(" --> ") == 7
    assert "- split.train: 0.8\n+ split.train: 0.7" in fences["diff"]


def test_an_unknown_base_says_how_to_get_it(pull_request: Path):
    result = run_tuneops("plan", "specs", "--base", "origin/nope", "--offline", cwd=pull_request)
    assert result.exit_code == 1
    assert "--base origin/nope: no such commit, branch or tag here" in result.stderr
    assert "git fetch origin nope" in result.stderr and "Traceback" not in result.output


def test_on_kubernetes_the_dry_run_also_renders_and_validates_the_manifests(tmp_path: Path):
    clone = clone_on_a_branch(tmp_path, REPO_ROOT / "specs-example")
    edit(clone / "specs" / "deployments" / "support-bot.yaml", "maxReplicas: 6", "maxReplicas: 8")
    found = plan(clone)
    assert found["changed"] == {"Deployment/support-bot": "update"}
    edit(clone / "specs" / "tuneops.yaml", "  image: registry.example.internal/ml/tuneops-trainer:0.1.0\n",
         "")
    result = run_tuneops("plan", "specs", "--base", "origin/main", "--offline", cwd=clone)
    assert result.exit_code == 1
    assert "the Kubernetes manifests do not render: kubernetes.image is not set" in result.stderr



def test_a_thousand_resource_change_keeps_the_comment_under_githubs_limit(tmp_path: Path):
    """1,000 Datasets on main, all changed by the branch: the comment is cut, and says so."""
    from markdown_it import MarkdownIt

    specs = tmp_path / "many"
    (specs / "data").mkdir(parents=True)
    shutil.copy(QUICKSTART / "data" / "fruit-colors.jsonl", specs / "data" / "rows.jsonl")
    (specs / "tuneops.yaml").write_text("backend: local\n")
    template = (QUICKSTART / "dataset.yaml").read_text().replace("file://data/fruit-colors.jsonl",
                                                                 "file://data/rows.jsonl")
    documents = [template.replace("name: fruit-colors", f"name: rows-{index:04d}") for index in range(1000)]
    (specs / "datasets.yaml").write_text("---\n".join(documents))
    clone = clone_on_a_branch(tmp_path, specs)
    datasets = clone / "specs" / "datasets.yaml"
    datasets.write_text(datasets.read_text().replace("train: 0.8\n    validation: 0.1",
                                                     "train: 0.7\n    validation: 0.2"))
    result = run_tuneops("plan", "specs", "--base", "origin/main", "--offline", "--format", "markdown",
                         cwd=clone, timeout=300)
    assert result.exit_code == 0, result.output[-2000:]
    assert "**Plan: 1000 rebuild; 0 unchanged.**" in result.stdout
    assert len(result.stdout) <= 65_536
    rows = sum(t.type == "tr_open" for t in MarkdownIt("commonmark").enable("table").parse(result.stdout)) - 1
    assert rows == 1000  # every action fits once the per-resource details are left out, which it says
    assert "The changed fields, the graph and the downstream impact are left out" in result.stdout
    assert "<details>" not in result.stdout


def test_a_change_to_tuneops_yaml_is_shown_for_review_with_credentials_masked(pull_request: Path):
    settings = pull_request / "specs" / "tuneops.yaml"
    edit(settings, "  experiment: quickstart\n",
         "  experiment: quickstart\n  trackingUri: http://ci:hunter2secret@mlflow.example.invalid\n")
    settings.write_text(settings.read_text() + "policy:\n  allowedFileRoots: [/srv/shared]\n")
    found = plan(pull_request)
    assert found["changed"] == {}  # no resource changes, and yet the reviewer must see these
    changes = {change["path"]: (change["before"], change["after"]) for change in found["settings_changes"]}
    assert changes["policy.allowedFileRoots"] == ([], ["/srv/shared"])
    assert changes["mlflow.trackingUri"][1] == "http://ci:***@mlflow.example.invalid"
    comment = run_tuneops("plan", "specs", "--base", "origin/main", "--offline", "--format", "markdown",
                          cwd=pull_request)
    assert comment.exit_code == 0, comment.output
    assert "**`tuneops.yaml` changes**" in comment.stdout
    assert '`policy.allowedFileRoots`: `[]` → `["/srv/shared"]`' in comment.stdout
    assert "hunter2secret" not in comment.stdout + comment.stderr
    text = run_tuneops("plan", "specs", "--base", "origin/main", "--offline", cwd=pull_request).stdout
    assert "tuneops.yaml changes (review them" in text and "allowedFileRoots" in text
