"""benchmarks/planner_memory.py is run where a GPU is lent, rarely and on a clock: its --quick
mode (a tiny model, on the CPU) keeps the harness itself working between those runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.runtime_support import REPO_ROOT, needs_training

pytestmark = [pytest.mark.slow, needs_training]


def test_the_harness_trains_each_case_and_reports_it(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    # without the roots the test session sets for its own jobs: the harness must set them itself
    env = {key: value for key, value in os.environ.items() if key != "TUNEOPS_FILE_ROOTS"}
    env.update(CUDA_VISIBLE_DEVICES="", NO_COLOR="1")
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "planner_memory.py"), "--quick",
                           "--steps", "2", "--workdir", str(tmp_path / "work"), "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [r["case"] for r in report["results"]] == ["lora-s128-b2", "full-s128-b2-ckpt"]
    for result in report["results"]:
        assert result["measured_bytes"] > 0 and result["states_bytes"] > 0 and result["activation_bytes"] > 0
    assert "n/a (RSS)" in done.stdout  # a CPU peak is never judged against the target
    refused = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "planner_memory.py")],
                             env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "no CUDA GPU here" in refused.stderr
