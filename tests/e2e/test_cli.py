"""The command line as a user meets it: real processes, real files, assertions on what is shown."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import API, REPO_ROOT, VALID_SPECS, run_tuneops, write_repo

HEAVY_MODULES = ("torch", "transformers", "peft", "trl", "deepspeed", "mlflow", "kubernetes",
                 "datasets", "jinja2", "git", "lm_eval", "optuna")


@pytest.mark.parametrize("example", ["specs-example", "specs-example/quickstart"])
def test_examples_validate_with_no_warnings(example: str):
    result = run_tuneops("validate", example, "--strict", "--format", "json", cwd=REPO_ROOT)
    report = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    assert report["errors"] == [] and report["warnings"] == []
    assert report["specs"] >= 5


def test_the_quickstart_serves_its_sweep_by_editing_only_the_deployment(tmp_path: Path):
    """What sweep.yaml's comment tells a user to do: `fineTune: fruit-sft` -> `sweep: fruit-lr`."""
    import shutil

    repo = tmp_path / "quickstart"
    shutil.copytree(REPO_ROOT / "specs-example" / "quickstart", repo)
    deployment = repo / "deployment.yaml"
    assert "    fineTune: fruit-sft\n" in deployment.read_text()
    served = deployment.read_text().replace("    fineTune: fruit-sft\n", "    sweep: fruit-lr\n")
    deployment.write_text(served)
    result = run_tuneops("validate", ".", "--strict", "--format", "json", cwd=repo)
    assert result.exit_code == 0, result.output
    graph = json.loads(run_tuneops("graph", ".", "--format", "json", cwd=repo).stdout)
    assert {"from": "Sweep/fruit-lr", "to": "Deployment/fruit-bot"} in graph["edges"]
    assert {"from": "FineTune/fruit-sft", "to": "Deployment/fruit-bot"} not in graph["edges"]


def test_the_example_uses_every_kind():
    result = run_tuneops("graph", "specs-example", "--format", "json", cwd=REPO_ROOT)
    kinds = {node["kind"] for node in json.loads(result.stdout)["nodes"]}
    assert kinds == {"Dataset", "BaseModel", "FineTune", "Evaluation", "Deployment"}


def test_json_report_is_stable_and_documented(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "fine-tune.yaml": VALID_SPECS[
        "fine-tune.yaml"].replace("r: 8", "r: -4")})
    result = run_tuneops("validate", ".", "--format", "json", cwd=repo)
    report = json.loads(result.stdout)
    assert result.exit_code == 1
    assert set(report) == {"version", "valid", "strict", "specs", "files", "errors", "warnings",
                           "unchecked_references"}
    assert report["version"] == 1 and report["valid"] is False
    [error] = report["errors"]
    assert error == {
        "severity": "error", "code": "out-of-range", "file": "fine-tune.yaml", "line": 10,
        "column": 8, "path": "spec.adapter.r", "message": "must be > 0", "value": "-4",
        "hint": None, "resource": "FineTune/sft",
    }
    documented = (REPO_ROOT / "docs" / "cli.md").read_text()
    for key in list(report) + list(error):
        assert f"`{key}`" in documented, f"docs/cli.md does not document `{key}`"


def test_warnings_pass_but_strict_fails(tmp_path: Path):
    unpinned = VALID_SPECS["base-model.yaml"].replace("file://models/tiny", "hf://org/model")
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "base-model.yaml": unpinned})
    relaxed = run_tuneops("validate", ".", cwd=repo)
    strict = run_tuneops("validate", ".", "--strict", cwd=repo)
    assert relaxed.exit_code == 0
    assert "base-model.yaml:6:11 warning spec.source: hf:// source without a revision" in relaxed.stdout
    assert strict.exit_code == 1
    assert "base-model.yaml:6:11 error spec.source" in strict.stdout


def test_project_policy_strict_acts_like_the_flag(tmp_path: Path):
    unpinned = VALID_SPECS["base-model.yaml"].replace("file://models/tiny", "hf://org/model")
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "base-model.yaml": unpinned,
                                           "tuneops.yaml": "policy:\n  strict: true\n"})
    assert run_tuneops("validate", ".", cwd=repo).exit_code == 1


def test_project_file_errors_have_positions(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS,
                                           "tuneops.yaml": "backend: local\nmlflow:\n  trackingUrl: x\n"})
    result = run_tuneops("validate", ".", cwd=repo)
    assert result.exit_code == 1
    assert ("tuneops.yaml:3:3 error mlflow.trackingUrl: unknown field (did you mean 'trackingUri'?)"
            in result.stdout)


def test_usage_errors_exit_2(tmp_path: Path):
    assert run_tuneops("validate", str(tmp_path / "missing")).exit_code == 2
    assert run_tuneops("validate", "--format", "xml", str(tmp_path)).exit_code == 2
    assert run_tuneops("no-such-command").exit_code == 2


def test_a_single_file_can_be_validated(valid_repo: Path):
    result = run_tuneops("validate", "dataset.yaml", cwd=valid_repo)
    assert result.exit_code == 0, result.output
    assert "1 valid spec in 1 file" in result.stdout


def test_nested_projects_and_hidden_folders_are_skipped(valid_repo: Path):
    write_repo(valid_repo, {
        "other/tuneops.yaml": "backend: local\n",
        "other/broken.yaml": "kind: Nope\n",
        ".github/workflows/ci.yaml": "on: push\n",
        ".tuneops/state.yaml": "x: 1\n",
    })
    result = run_tuneops("validate", ".", cwd=valid_repo)
    assert result.exit_code == 0, result.output


def test_exclude_patterns_skip_non_spec_yaml(valid_repo: Path):
    write_repo(valid_repo, {"ci/pipeline.yaml": "stages: [test]\n"})
    assert run_tuneops("validate", ".", cwd=valid_repo).exit_code == 1
    write_repo(valid_repo, {"tuneops.yaml": "exclude: ['ci/**']\n"})
    assert run_tuneops("validate", ".", cwd=valid_repo).exit_code == 0


def test_color_only_on_request(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "x.yaml": "kind: Nope\n"})
    plain = run_tuneops("validate", ".", cwd=repo)
    colored = run_tuneops("--color", "validate", ".", cwd=repo)
    assert "\x1b[" not in plain.stdout
    assert "\x1b[31m" in colored.stdout


@pytest.mark.parametrize("output_format, marker", [
    ("text", "FineTune/sft"), ("mermaid", "flowchart LR"), ("dot", "digraph tuneops"),
    ("json", '"edges"'),
])
def test_graph_formats(valid_repo: Path, output_format: str, marker: str):
    result = run_tuneops("graph", ".", "--format", output_format, cwd=valid_repo)
    assert result.exit_code == 0, result.output
    assert marker in result.stdout


def test_graph_text_lists_dependencies_first(valid_repo: Path):
    lines = run_tuneops("graph", ".", cwd=valid_repo).stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert names.index("Dataset/chats") < names.index("FineTune/sft")
    assert names.index("FineTune/sft") < names.index("Evaluation/sft-quality")
    assert names.index("Evaluation/sft-quality") < names.index("Deployment/bot")
    assert any(line.startswith("FineTune/sft") and "<- BaseModel/tiny, Dataset/chats" in line
               for line in lines)


def test_graph_refuses_invalid_specs(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "x.yaml": "kind: Nope\n"})
    result = run_tuneops("graph", ".", cwd=repo)
    assert result.exit_code == 1
    assert "x.yaml:1:7 error kind: unknown kind" in result.stderr


def test_init_writes_a_starter_that_validates_and_refuses_to_overwrite(tmp_path: Path):
    target = tmp_path / "starter"
    first = run_tuneops("init", str(target))
    assert first.exit_code == 0, first.output
    assert (target / "schemas" / "finetune.json").is_file()
    result = run_tuneops("validate", str(target), "--strict")
    assert result.exit_code == 0, result.output
    assert "5 valid specs" in result.stdout
    again = run_tuneops("init", str(target))
    assert again.exit_code == 1
    assert "already exist" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.output
    assert run_tuneops("init", str(target), "--force").exit_code == 0


def test_committed_schemas_and_reference_equal_a_fresh_generation():
    result = run_tuneops("schema", "--out", "schemas", "--docs", "docs/specs.md", "--check",
                         cwd=REPO_ROOT)
    assert result.exit_code == 0, (
        "schemas/ or docs/specs.md are stale: run `tuneops schema --docs docs/specs.md`\n"
        + result.output)


def test_schema_check_notices_a_stale_file(tmp_path: Path):
    assert run_tuneops("schema", "--out", str(tmp_path)).exit_code == 0
    (tmp_path / "finetune.json").write_text("{}\n")
    result = run_tuneops("schema", "--out", str(tmp_path), "--check")
    assert result.exit_code == 1
    assert "finetune.json" in result.stderr


def test_examples_point_editors_at_the_schemas():
    for spec_file in (REPO_ROOT / "specs-example").rglob("*.yaml"):
        first_line = spec_file.read_text().splitlines()[0]
        assert first_line.startswith("# yaml-language-server: $schema="), spec_file
        schema = (spec_file.parent / first_line.split("=", 1)[1]).resolve()
        assert schema.is_file(), f"{spec_file}: {schema} does not exist"


@pytest.mark.parametrize("args", [["--help"], ["validate", "specs-example"], ["schema", "--check"],
                                  ["graph", "specs-example"], ["run", "--help"],
                                  ["run", "dataset", "--job", "no-such-job.json"],
                                  ["plan", "specs-example/quickstart", "--offline"],
                                  ["plan", "specs-example/quickstart", "--offline", "--format", "markdown"],
                                  ["plan", "specs-example/quickstart", "--offline", "--base", "HEAD"],
                                  ["plan", "specs-example", "--offline", "--format", "json"],
                                  ["estimate", "support-sft", "specs-example"],
                                  ["render", "specs-example"], ["pin", "specs-example", "--check"]])
def test_control_plane_commands_do_not_import_heavy_libraries(args: list[str]):
    needed = ("jinja2",) if args[0] == "render" else ()  # render is templates; still no kubernetes client
    probe = (
        "import sys\n"
        "from reconciler.cli import cli\n"
        f"try:\n    cli.main({args!r}, prog_name='tuneops')\n"
        "except SystemExit:\n    pass\n"
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules and m not in {needed!r}]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert "HEAVY=\n" in done.stdout, done.stdout + done.stderr


def test_an_internal_error_is_one_line_not_a_traceback(tmp_path: Path):
    # A directory named like a spec file cannot be read as one; the loader reports it.
    repo = write_repo(tmp_path / "specs", VALID_SPECS)
    (repo / "dir.yaml").mkdir()
    (repo / "dir.yaml" / "x.txt").write_text("")
    result = run_tuneops("validate", ".", cwd=repo)
    assert "Traceback" not in result.output
    assert result.exit_code == 0


def test_an_empty_project_is_a_warning_not_a_silent_success(tmp_path: Path):
    (tmp_path / "tuneops.yaml").write_text("")
    result = run_tuneops("validate", str(tmp_path))
    assert result.exit_code == 0
    assert "warning: no spec files" in result.stdout
    assert run_tuneops("validate", str(tmp_path), "--strict").exit_code == 1


def test_an_empty_folder_is_no_project(tmp_path: Path):
    result = run_tuneops("validate", str(tmp_path))
    assert result.exit_code == 1
    assert f"error: no tuneops project in {tmp_path}: no tuneops.yaml there or in a folder above it, " \
           "and it holds no YAML files" in result.stderr
    assert "tuneops init" in result.stderr


# What the top of an application repository holds besides its specs.
NOT_SPECS = {
    "deploy/base/deployment.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
    "examples/ci/github-actions.yaml": "name: ci\non: [push]\njobs: {}\n",
    "tests/testdata/job.yaml": "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\n",
}


@pytest.mark.parametrize("command", [
    ["validate"], ["graph"], ["plan", "--offline"], ["plan"], ["status"], ["apply", "--yes"], ["render"],
    ["estimate", "sft"], ["logs", "FineTune/sft"], ["stop"],
], ids=lambda command: " ".join(command))
def test_a_folder_that_is_no_project_says_so_once(tmp_path: Path, command: list[str]):
    specs = {f"specs/{name}": text for name, text in VALID_SPECS.items()}
    repo = write_repo(tmp_path / "repo", {**NOT_SPECS, **specs, "specs/tuneops.yaml": ""})
    result = run_tuneops(*command, cwd=repo)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: no tuneops project in {repo}: "), result.output
    assert "none of its 3 YAML files is a tuneops spec" in result.stderr
    assert "`tuneops init DIR`" in result.stderr
    assert result.stderr.rstrip().endswith("projects below this folder (give one as the path): specs")
    assert "deploy/" not in result.output and "Traceback" not in result.output


def test_a_spec_folder_whose_only_spec_does_not_parse_is_still_a_project(tmp_path: Path):
    broken = f"{API}\nkind: FineTune\nmetadata:\n  name: sft\n   labels: {{}}\n"
    repo = write_repo(tmp_path / "specs", {"fine-tune.yaml": broken})
    result = run_tuneops("validate", cwd=repo)
    assert result.exit_code == 1
    assert "fine-tune.yaml:5:" in result.stdout and "no tuneops project" not in result.output


def test_status_at_the_top_of_this_repository_points_at_the_examples():
    result = run_tuneops("status", cwd=REPO_ROOT)
    assert result.exit_code == 1
    assert "no tuneops project in" in result.stderr and "specs-example/quickstart" in result.stderr
    assert "deploy/" not in result.output and "unsupported apiVersion" not in result.output


def test_a_folder_inside_a_project_means_the_whole_project(valid_repo: Path):
    (valid_repo / "tuneops.yaml").write_text("backend: local\n")
    (valid_repo / "fine-tunes").mkdir()
    (valid_repo / "fine-tune.yaml").rename(valid_repo / "fine-tunes" / "fine-tune.yaml")
    here = run_tuneops("validate", cwd=valid_repo / "fine-tunes")
    assert here.exit_code == 0, here.output
    assert "valid: 5 valid specs in 6 files" in here.stdout
    planned = run_tuneops("plan", "fine-tunes", "--offline", "--format", "json", cwd=valid_repo)
    assert planned.exit_code == 0, planned.output
    assert json.loads(planned.stdout)["source"]["path"] == str(valid_repo)


def test_quote_hints_repeat_the_value_as_written(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS,
                                           "tuneops.yaml": "kubernetes:\n  version: 1.30\n"})
    result = run_tuneops("validate", ".", cwd=repo)
    assert "kubernetes.version: must be a string (got 1.3) (quote it if you meant the string: '1.30')" \
        in result.stdout


def test_special_files_are_reported_not_read(valid_repo: Path):
    import os

    os.mkfifo(valid_repo / "pipe.yaml")  # reading it would block forever
    (valid_repo / "dangling.yaml").symlink_to(valid_repo / "gone.yaml")
    result = run_tuneops("validate", ".", cwd=valid_repo, timeout=30)
    assert result.exit_code == 1
    assert "pipe.yaml:1:1 error: not a regular file" in result.stdout
    assert "dangling.yaml:1:1 error: cannot read file" in result.stdout


def test_control_characters_in_specs_cannot_rewrite_the_terminal(tmp_path: Path):
    spec = textwrap.dedent(VALID_SPECS["dataset.yaml"]) + '  "\\e[2K\\rALL GOOD\\nx": 1\n'
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "dataset.yaml": spec})
    result = run_tuneops("validate", ".", cwd=repo)
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert "spec.\\x1b[2K\\x0dALL GOOD\\x0ax: unknown field" in result.stdout


def test_text_output_is_capped_per_file_and_json_is_not(tmp_path: Path):
    many = "\n".join(f"  bogus{i}: 1" for i in range(80)) + "\n"
    spec = textwrap.dedent(VALID_SPECS["dataset.yaml"]) + many
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "dataset.yaml": spec})
    text = run_tuneops("validate", ".", cwd=repo).stdout
    assert text.count("unknown field") == 50
    assert "... and 30 more problems in this file (--format json lists all)" in text
    report = json.loads(run_tuneops("validate", ".", "--format", "json", cwd=repo).stdout)
    assert len(report["errors"]) == 80


def test_written_files_are_ordinary_files_and_write_errors_are_user_errors(tmp_path: Path):
    assert run_tuneops("init", str(tmp_path / "starter")).exit_code == 0
    assert (tmp_path / "starter" / "fine-tune.yaml").stat().st_mode & 0o777 == 0o644
    blocked = tmp_path / "file"
    blocked.write_text("")
    result = run_tuneops("schema", "--out", str(blocked / "schemas"))
    assert result.exit_code == 1
    assert "error: cannot write" in result.stderr and "internal error" not in result.output


def test_files_are_checked_within_their_project(valid_repo: Path):
    # References from fine-tune.yaml to the specs beside it resolve.
    result = run_tuneops("validate", "fine-tune.yaml", "evaluation.yaml", cwd=valid_repo)
    assert result.exit_code == 0, result.output
    assert "valid: 2 valid specs in 2 files" in result.stdout
    # Only the files asked about are reported on.
    (valid_repo / "dataset.yaml").write_text((valid_repo / "dataset.yaml").read_text() + "  bogus: 1\n")
    assert run_tuneops("validate", "fine-tune.yaml", cwd=valid_repo).exit_code == 0
    broken = run_tuneops("validate", "dataset.yaml", cwd=valid_repo)
    assert broken.exit_code == 1 and "dataset.yaml:9:3 error spec.bogus: unknown field" in broken.stdout


def test_a_file_in_a_sub_folder_finds_its_project_settings():
    # specs-example/tuneops.yaml sets policy.strict and the files refer to each other.
    result = run_tuneops("validate", "specs-example/fine-tunes/support-dpo.yaml",
                         "specs-example/deployments/support-bot.yaml", cwd=REPO_ROOT)
    assert result.exit_code == 0, result.output
    assert "valid: 2 valid specs in 2 files" in result.stdout


def test_paths_that_are_not_one_project_are_a_usage_error(valid_repo: Path):
    other = REPO_ROOT / "specs-example" / "quickstart" / "dataset.yaml"
    mixed = run_tuneops("validate", "fine-tune.yaml", str(other), cwd=valid_repo)
    assert mixed.exit_code == 2 and "belong to different projects" in mixed.stderr
    both = run_tuneops("validate", ".", "fine-tune.yaml", cwd=valid_repo)
    assert both.exit_code == 2 and "not both" in both.stderr


def test_a_plan_of_a_fresh_starter_reads_well_and_leaves_the_folder_as_it_was(tmp_path: Path):
    assert run_tuneops("init", "my-specs", cwd=tmp_path).exit_code == 0
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    planned = run_tuneops("plan", "my-specs", cwd=tmp_path)
    assert planned.exit_code == 0, planned.output
    # "nothing runs": and nothing is created, neither MLflow's database nor the process table
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    header = planned.stdout.splitlines()[0]
    assert header.startswith("specs in my-specs/ (not in a Git repository); state from "), header
    assert "4 create" in planned.stdout
    assert "0.00 GPU-hours" not in planned.stdout
    assert "Training: GPU-hours not estimated for 1 fine-tune (`tuneops estimate` says why)." \
        in planned.stdout
    status = run_tuneops("status", "my-specs", cwd=tmp_path)
    assert status.exit_code == 0 and "Pending" in status.stdout, status.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_logs_of_a_misspelt_resource_suggests_the_name(valid_repo: Path):
    result = run_tuneops("logs", "FineTune/sfd", cwd=valid_repo)
    assert result.exit_code == 1
    assert result.stderr == "error: FineTune/sfd is not defined in . (did you mean 'sft'?)\n"
    other_kind = run_tuneops("logs", "Dataset/sft", cwd=valid_repo)
    assert "Dataset/sft is not defined in . ('sft' is a FineTune, not a Dataset)" in other_kind.stderr


def test_logs_takes_the_path_like_every_command(valid_repo: Path):
    said = "error: no logs for FineTune/sft in specs: it has not run here (see `tuneops status`)\n"
    positional = run_tuneops("logs", "FineTune/sft", "specs", cwd=valid_repo.parent)
    assert (positional.exit_code, positional.stderr) == (1, said)
    # Scripts written for `--path` keep working.
    old_style = run_tuneops("logs", "FineTune/sft", "--path", "specs", cwd=valid_repo.parent)
    assert old_style.exit_code == 1 and old_style.stderr.endswith(said)
    assert "--path is deprecated" in old_style.stderr
    assert "--path" not in run_tuneops("logs", "--help").stdout
    both = run_tuneops("logs", "FineTune/sft", "specs", "--path", "specs", cwd=valid_repo.parent)
    assert both.exit_code == 2


@pytest.mark.slow  # starts MLflow to plan before it asks
def test_apply_without_a_terminal_says_to_pass_yes(valid_repo: Path):
    result = run_tuneops("apply", cwd=valid_repo, env={"TUNEOPS_MLFLOW_RETRY_DELAYS": "0"})
    assert result.exit_code == 1, result.output
    assert "Plan: 4 create" in result.stdout
    assert result.stderr.endswith("error: no answer to 'Apply this plan?': there is no terminal to ask on "
                                  "(pass --yes to apply without asking)\n"), result.output
    answered = run_tuneops("apply", cwd=valid_repo, stdin="n\n")
    assert answered.exit_code == 0 and "Nothing applied." in answered.stdout


def test_logs_version_applies_to_model_versions_and_says_none_is_built(valid_repo: Path):
    base_model = run_tuneops("logs", "BaseModel/tiny", cwd=valid_repo)
    assert base_model.exit_code == 1 and "a BaseModel is read where it is" in base_model.stderr
    dataset = run_tuneops("logs", "Dataset/chats", "--version", "1", cwd=valid_repo)
    assert dataset.exit_code == 2 and "applies to a FineTune" in dataset.stderr, dataset.output
    before = sorted(valid_repo.rglob("*"))
    nothing = run_tuneops("logs", "FineTune/sft", "--version", "1", cwd=valid_repo)
    assert nothing.exit_code == 1
    assert nothing.stderr == \
        "error: FineTune/sft has no version 1 (no version built yet; see `tuneops status`)\n"
    assert sorted(valid_repo.rglob("*")) == before  # asking created no MLflow database
