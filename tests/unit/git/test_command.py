"""The rules every git command of reconciler/git runs under: a timeout that kills it, no prompt,
and errors that quote git's last line without credentials."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.git.command import QUIET_ENVIRONMENT, Completed, GitTimedOut, read, run
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("how", ["run", "read"])
def test_a_command_past_its_timeout_is_killed_and_says_so(tmp_path: Path, how: str):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "config", "alias.nap", "!sleep 30"], check=True)
    started = time.monotonic()
    with pytest.raises(GitTimedOut, match=r"git nap took over 1 s"):
        (run if how == "run" else read)(tmp_path, "nap", timeout=1)
    assert time.monotonic() - started < 20


def test_without_a_git_binary_both_ways_say_git_is_not_installed(tmp_path: Path):
    """GitPython raises ImportError at import when it finds no git: that is GitUnavailable too."""
    probe = (
        "from reconciler.git.command import GitUnavailable, read, run\n"
        "for how in (run, read):\n"
        "    try:\n        how(None, 'version', timeout=10)\n"
        "    except GitUnavailable as error:\n        print(str(error).splitlines()[0][:38])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, "PATH": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)})
    assert done.stdout == "git is not installed or not runnable (\n" * 2, done.stderr


def test_git_never_prompts_and_gets_the_callers_environment_on_top(tmp_path: Path):
    done = run(tmp_path, "var", "GIT_AUTHOR_IDENT", timeout=20,
               environment={"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.invalid",
                            "GIT_TERMINAL_PROMPT": "1"})
    assert done.ok and done.text.startswith("Ada <ada@example.invalid>")
    assert QUIET_ENVIRONMENT == {"GIT_TERMINAL_PROMPT": "0"}  # and it wins over the caller's


def test_a_failure_quotes_gits_last_line_with_credentials_masked(tmp_path: Path):
    done = run(tmp_path / "missing", "status", timeout=20)
    assert not done.ok and done.last_line().startswith("fatal: cannot change to ")
    url = "https://bot:s3cret-pass@git.example.invalid/specs.git"
    stderr = f"hint: retry\nfatal: unable to access '{url}/': 401\n"
    failed = Completed(128, "", stderr)
    assert "s3cret-pass" not in failed.last_line()
    assert failed.last_line().startswith("fatal: unable to access")
    shown = failed.last_line(url, "https://git.example.invalid/specs.git")
    assert shown == "fatal: unable to access 'https://git.example.invalid/specs.git/': 401"
    assert Completed(1, "", "").last_line() == "no output"
