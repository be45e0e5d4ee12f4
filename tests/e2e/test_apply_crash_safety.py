"""An apply killed mid-job, and two applies at once: no twin jobs, no lost results, clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.reconcile_support import CLI_ENV, SpecRepo
from tests.support.runtime_support import needs_training

pytestmark = [needs_training, pytest.mark.slow]
Found = TypeVar("Found")


def wait_for(condition: Callable[[], Found], timeout: float, what: str) -> Found:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_killed_apply_is_adopted_by_the_next_one_and_a_second_apply_is_refused(tmp_path: Path,
                                                                                mlflow_server):
    repo = SpecRepo(tmp_path / "specs", mlflow_server.uri)
    logs = repo.root / ".tuneops" / "logs"
    env = {**os.environ, **CLI_ENV}
    env.pop("MLFLOW_TRACKING_URI", None)
    first = subprocess.Popen([sys.executable, "-m", "reconciler", "apply", ".", "--yes", "--target",
                              "FineTune/fruit-sft"], cwd=repo.root, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: list(logs.glob("finetune-*.log")), 180, "the fine-tune to start")

        # While it runs, a second apply is refused, naming the holder of the lock.
        second = repo.tuneops("apply", ".", "--yes")
        assert second.exit_code == 1
        assert f"locked by PID {first.pid} since" in second.stderr

        # Kill the apply (not its jobs: they run in their own sessions).
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
        if first.stdout:
            first.stdout.close()

    # The finished dataset is kept; the running fine-tune is waited on, not started again.
    plan = repo.plan("--target", "FineTune/fruit-sft")
    assert plan["by_resource"]["Dataset/fruit-colors"] == "noop"
    assert plan["by_resource"]["FineTune/fruit-sft"] in ("wait", "noop")
    resumed = repo.tuneops("apply", ".", "--yes", "--target", "FineTune/fruit-sft")
    assert resumed.exit_code == 0, resumed.output
    if plan["by_resource"]["FineTune/fruit-sft"] == "wait":
        assert "already running: waiting for it" in resumed.stdout
    assert "started pid" not in resumed.stdout  # no second job, and the dataset was not rebuilt
    assert [p.name for p in logs.glob("finetune-*.log")] == [p.name for p in logs.glob("finetune-*-1.log")]
    assert len(list(logs.glob("finetune-*.log"))) == 1
    assert len(list(logs.glob("dataset-*.log"))) == 1
    done = repo.plan("--target", "FineTune/fruit-sft")
    assert set(done["by_resource"].values()) == {"noop"}


def test_a_lock_left_by_a_dead_apply_is_taken_over(tmp_path: Path, mlflow_server):
    repo = SpecRepo(tmp_path / "specs", mlflow_server.uri)
    state = repo.root / ".tuneops"
    state.mkdir()
    # A process that takes the lock the way apply does, then dies without releasing it.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom pathlib import Path\n"
         "from reconciler.lock import ApplyLock\n"
         f"ApplyLock(Path({str(state)!r})).acquire()\nprint('held', flush=True)\ntime.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    refused = repo.tuneops("apply", ".", "--yes", "--target", "Dataset/fruit-colors")
    assert refused.exit_code == 1 and f"locked by PID {holder.pid}" in refused.stderr
    holder.kill()
    holder.wait(10)
    holder.stdout.close()
    taken = repo.tuneops("apply", ".", "--yes", "--target", "Dataset/fruit-colors")
    assert taken.exit_code == 0, taken.output
    assert "Dataset/fruit-colors: done" in taken.stdout
