"""The CI examples (examples/ci/) and the pre-commit hook run what they say: every `tuneops`
command in them is run here, in a clone on a pull-request branch of a real bare remote."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt

from tests.conftest import REPO_ROOT
from tests.e2e.test_plan_base import QUICKSTART, clone_on_a_branch, edit

EXAMPLES = REPO_ROOT / "examples" / "ci"
VARIABLES = {"${{ github.base_ref }}": "main", "$CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main"}


def tuneops_commands(document: object, in_shell: bool = False) -> list[str]:
    """Every shell line (GitHub's `run`, GitLab's `script`) that runs tuneops, with the CI's
    variables filled in."""
    found: list[str] = []
    if isinstance(document, dict):
        for key, value in document.items():
            found += tuneops_commands(value, in_shell or key in ("run", "script"))
    elif isinstance(document, list):
        for value in document:
            found += tuneops_commands(value, in_shell)
    elif isinstance(document, str) and in_shell:
        for line in document.splitlines():
            if line.strip().startswith("tuneops "):
                for variable, value in VARIABLES.items():
                    line = line.replace(variable, value)
                found.append(line.strip())
    return found


@pytest.mark.parametrize("example", ["github-actions.yaml", "gitlab-ci.yaml"])
def test_every_tuneops_command_of_the_ci_example_works_on_a_pull_request(tmp_path: Path, example: str):
    commands = tuneops_commands(yaml.safe_load((EXAMPLES / example).read_text()))
    assert [c.split()[1] for c in commands] == ["validate", "plan", "plan"]
    clone = clone_on_a_branch(tmp_path, QUICKSTART)
    edit(clone / "specs" / "evaluation.yaml", "maxNewTokens: 8", "maxNewTokens: 12")
    for command in commands:
        command = command.split(" || ")[0]  # what the job does when the plan fails: not tuneops
        argv, _, redirect = command.partition(" > ")
        done = subprocess.run([sys.executable, "-m", "reconciler", *shlex.split(argv)[1:]], cwd=clone,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        if redirect:
            (clone / redirect.strip()).write_text(done.stdout)
    comment = (clone / "plan.md").read_text()
    assert "`Evaluation/fruit-sft-quality`" in comment and "compared with origin/main" in comment
    assert any(t.type == "table_open" for t in MarkdownIt("commonmark").enable("table").parse(comment))


def test_the_pre_commit_hook_validates_the_spec_folder(tmp_path: Path):
    (hook,) = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())
    assert re.search(hook["files"], "specs/dataset.yaml") and not hook["pass_filenames"]
    clone = clone_on_a_branch(tmp_path, QUICKSTART)
    argv = [*shlex.split(hook["entry"])[1:], "specs"]
    done = subprocess.run([sys.executable, "-m", "reconciler", *argv], cwd=clone, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    edit(clone / "specs" / "dataset.yaml", "train: 0.8", "train: 8")
    done = subprocess.run([sys.executable, "-m", "reconciler", *argv], cwd=clone, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "dataset.yaml:12" in done.stdout + done.stderr


def _readme_ci_lines() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)\n```", readme, re.S) if "--base origin/main" in b)
    return [line.split("#")[0].strip() for line in block.splitlines()]


def test_readmes_pull_request_command_runs_with_the_install_readme_gives_for_it(tmp_path: Path):
    """README's CI install must hold what its pull-request command needs for a `backend:
    kubernetes` project (the manifests are validated): shown by hiding kubernetes-validate, as
    an install without the extra would, and finding the extra's name in the error and in README."""
    lines = _readme_ci_lines()
    install = next(line for line in lines if line.startswith("pip install"))
    command = next(line for line in lines if line.startswith("tuneops plan"))
    clone = clone_on_a_branch(tmp_path, REPO_ROOT / "specs-example")
    edit(clone / "specs" / "fine-tunes" / "support-sft.yaml", "learningRate: 2.0e-4", "learningRate: 1.0e-4")
    argv = shlex.split(command)[1:]
    done = subprocess.run([sys.executable, "-m", "reconciler", *argv], cwd=clone, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "`FineTune/support-sft`" in done.stdout
    hidden = tmp_path / "without-extra"
    hidden.mkdir()
    (hidden / "kubernetes_validate.py").write_text("raise ImportError('not installed')\n")
    done = subprocess.run([sys.executable, "-m", "reconciler", *argv], cwd=clone, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(hidden), os.environ.get("PYTHONPATH")]))})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    extra = re.search(r"pip install '(tuneops\[\w+\])'", done.stderr).group(1)
    assert extra in install, f"README installs {install!r}; the command asks for {extra}"
