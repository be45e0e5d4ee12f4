"""reconciler/git is the one place that runs Git: no other module starts a `git` process or
imports GitPython, so the rules it keeps (timeouts, no prompt, tokens only in the environment,
redacted errors) hold everywhere."""

from __future__ import annotations

import ast

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "reconciler"
GIT_PACKAGE = PACKAGE / "git"


def _starts_with_git(node: ast.AST) -> bool:
    """An argv literal whose program is git: ["git", ...], ("git", ...) or "git ..." as a string."""
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        first = node.elts[0]
        return isinstance(first, ast.Constant) and first.value == "git"
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value == "git" or node.value.startswith("git ")
    return False


def git_runs(source: str) -> list[str]:
    """Where `source` runs git itself (a call given an argv that starts with "git") or imports
    GitPython (`import git`, `from git import ...`; our own `reconciler.git` is not GitPython)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {alias.name}" for alias in node.names
                      if alias.name.split(".")[0] == "git"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "git":
            found.append(f"line {node.lineno}: from {node.module} import")
        elif isinstance(node, (ast.List, ast.Tuple)) and _starts_with_git(node):
            found.append(f"line {node.lineno}: runs git")  # an argv, passed on or kept for later
        elif isinstance(node, ast.Call):
            arguments = [*node.args, *(keyword.value for keyword in node.keywords if keyword.arg == "args")]
            if arguments and isinstance(arguments[0], ast.Constant) and _starts_with_git(arguments[0]):
                found.append(f"line {node.lineno}: runs git")
    return sorted(found, key=lambda where: int(where.split()[1].rstrip(":")))


def test_no_module_outside_reconciler_git_runs_git_or_imports_gitpython():
    offenders = [f"{path.relative_to(REPO_ROOT)} {where}"
                 for path in sorted(PACKAGE.rglob("*.py")) if GIT_PACKAGE not in path.parents
                 for where in git_runs(path.read_text())]
    assert offenders == []


def test_the_scan_finds_git_run_or_imported():
    source = (
        "import subprocess\nimport git\nfrom git.exc import GitCommandError\n"
        "from reconciler.git import info\n"
        "subprocess.run(['git', 'status'])\nsubprocess.Popen(args=('git', 'fetch'))\nos.system('git gc')\n"
        "subprocess.run(['python', '-c', 'git'])\ncommand = ['git', *options, 'clone']\n"
    )
    assert git_runs(source) == ["line 2: import git", "line 3: from git.exc import", "line 5: runs git",
                                "line 6: runs git", "line 7: runs git", "line 9: runs git"]


def test_only_reconciler_git_imports_gitpython_and_lazily():
    """GitPython costs tens of milliseconds at import (it runs `git version`): `tuneops validate`
    does not pay it, so reconciler/git imports it inside a function only."""
    top_level = []
    for path in sorted(GIT_PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            top_level += [f"{path.name}: {name}" for name in names if name.split(".")[0] == "git"]
    assert top_level == []
