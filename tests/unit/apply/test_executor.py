"""What the executor decides without running a job: which prunes it refuses, how a run is
summed up, what a long step prints while it runs."""

from __future__ import annotations

import time

import pytest

from reconciler.apply.executor import ApplyResult, Outcome, PruneRefused, Reporter, StepResult, check_prune
from reconciler.plan.plan import Action, Plan, PlannedAction
from reconciler.specs.base import ResourceId

FINE_TUNE = ResourceId("FineTune", "sft")
FP = "a" * 64


def plan_deleting(count: int) -> Plan:
    kept = PlannedAction(ResourceId("Dataset", "chats"), Action.NOOP, "b" * 64, reason="up to date")
    deletes = tuple(PlannedAction(ResourceId("Deployment", f"old-{i}"), Action.DELETE, "", reason="no spec")
                    for i in range(count))
    return Plan((kept, *deletes), {})


def test_a_prune_within_the_limit_that_leaves_something_running_goes_ahead():
    check_prune(plan_deleting(2), max_deletes=5, force=False, live_objects=3)
    check_prune(plan_deleting(0), max_deletes=0, force=False, live_objects=0)  # nothing to delete


def test_a_prune_over_max_deletes_is_refused_saying_how_to_go_on():
    refused = r"deletes 6 live objects, more than prune.maxDeletes \(5\).*--force"
    with pytest.raises(PruneRefused, match=refused):
        check_prune(plan_deleting(6), max_deletes=5, force=False, live_objects=10)


def test_a_prune_of_everything_that_runs_is_refused_unless_forced():
    with pytest.raises(PruneRefused, match=r"stops everything that runs \(2 live object"):
        check_prune(plan_deleting(2), max_deletes=5, force=False, live_objects=2)
    check_prune(plan_deleting(2), max_deletes=5, force=True, live_objects=2)
    check_prune(plan_deleting(9), max_deletes=5, force=True, live_objects=9)


def test_a_refused_prune_is_permanent_not_worth_retrying():
    with pytest.raises(PruneRefused) as refused:
        check_prune(plan_deleting(1), max_deletes=5, force=False, live_objects=1)
    assert refused.value.retryable is False


def test_the_summary_counts_done_failed_and_blocked_or_skipped():
    steps = [StepResult(FINE_TUNE, Outcome.DONE, "registered sft/1"),
             StepResult(ResourceId("Evaluation", "quality"), Outcome.FAILED, "exited 1"),
             StepResult(ResourceId("Deployment", "bot"), Outcome.BLOCKED, "gate did not pass"),
             StepResult(ResourceId("Deployment", "other"), Outcome.SKIPPED, "interrupted")]
    result = ApplyResult(steps)
    assert [s.resource.name for s in result.failed] == ["quality"]
    assert [s.resource.name for s in result.blocked] == ["bot", "other"]
    assert result.summary() == "Applied: 1 done, 1 failed, 2 blocked or skipped."


def test_outcomes_read_as_the_words_users_see():
    assert [str(o) for o in Outcome] == ["done", "failed", "blocked", "skipped", "pruned"]
    assert Outcome.DONE == "done"  # JSON and text output compare as before


def test_long_steps_get_a_heartbeat_line_with_their_progress():
    lines: list[str] = []
    reporter = Reporter(lines.append, heartbeat=0.05)
    reporter.progress_of = lambda rid, fingerprint: "40% (step 4), ETA 6s" if fingerprint == FP else ""
    with reporter:
        reporter.started(FINE_TUNE, "started pid 3", FP)
        time.sleep(0.3)
        reporter.finished(StepResult(FINE_TUNE, Outcome.DONE, "registered sft/1"), 0.3)
    assert lines[0] == "  FineTune/sft: started pid 3"
    beats = [line for line in lines if "running for" in line]
    assert beats and all(line.endswith("40% (step 4), ETA 6s") for line in beats)
    assert lines[-1].startswith("  FineTune/sft: done after 0s: registered sft/1")


def test_jobs_at_once_never_exceed_max_parallel_whoever_starts_them(tmp_path):
    """The apply's own steps and a sweep's trials take the same job slots. The backend here is a
    stand-in that counts the jobs it runs at once; the slots are the executor's own."""
    import shutil
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from reconciler.apply.executor import Executor
    from reconciler.jobs.jobfile import GitOrigin
    from reconciler.project import Project
    from reconciler.state import BuiltRun, JobObservation
    from tests.support.reconcile_support import QUICKSTART

    shutil.copytree(QUICKSTART, tmp_path / "specs", ignore=shutil.ignore_patterns(".tuneops"))
    project = Project.load(tmp_path / "specs")

    class CountingBackend:
        def __init__(self):
            self.running = self.most = 0
            self.lock = threading.Lock()

        def submit(self, job, processes=1):
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            return SimpleNamespace(handle="pid 1", attempts=1, log="log")

        def wait(self, kind, name, fingerprint, stop_event=None):
            time.sleep(0.1)
            with self.lock:
                self.running -= 1
            return JobObservation(kind, name, fingerprint, "succeeded", 1, 0.0, 1.0, 0, "", "pid 1", None)

    backend = CountingBackend()
    store = SimpleNamespace(ensure_experiment=lambda name: "1")
    executor = Executor(project, Plan((), {}), backend, store, GitOrigin(), Reporter(lambda line: None),
                        max_parallel=2)
    executor.lookup = lambda kind, name, fp: BuiltRun(kind, name, fp, "run", 0.0)
    builder = SimpleNamespace(job=lambda rid: SimpleNamespace(checkout=None), specs=project.specs)
    steps = [PlannedAction(ResourceId("FineTune", f"trial-{i}"), Action.CREATE, FP) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda step: executor._job(step, builder=builder), steps))
    assert [r.outcome for r in results] == [Outcome.DONE] * 6
    assert backend.most == 2
