"""The rules every git command of reconciler/git runs under: a timeout that kills it, no prompt,
and errors that quote git's last line without credentials."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reconciler.git.command import QUIET_ENVIRONMENT, Completed, GitTimedOut, run


def test_a_command_past_its_timeout_is_killed_and_says_so(tmp_path: Path):
    started = time.monotonic()
    with pytest.raises(GitTimedOut, match=r"git nap took over 1 s"):
        run(tmp_path, "nap", timeout=1, options=["-c", "alias.nap=!sleep 30"])
    assert time.monotonic() - started < 20


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
