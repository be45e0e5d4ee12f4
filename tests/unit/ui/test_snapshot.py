"""The dashboard's snapshots: nodes from the plan and state as `tuneops status` sees them, read
at most once per period, and a failed read that keeps the last nodes and says why."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import TuneopsError
from reconciler.plan.plan import Action, Plan, PlannedAction
from reconciler.specs.base import ResourceId
from reconciler.state import ActualState, BackendState, RunProgress
from reconciler.ui.snapshot import SnapshotSource, nodes_of

DATA, TUNE = ResourceId("Dataset", "d"), ResourceId("FineTune", "t")


def plan_and_state(progress: float | None) -> tuple[Plan, ActualState]:
    plan = Plan(actions=(PlannedAction(DATA, Action.NOOP, "fd"),
                         PlannedAction(TUNE, Action.WAIT, "ft", reason="running", depends_on=(DATA,))),
                impact={})
    running = RunProgress("FineTune", "t", "ft", "run1", time.time() - 30, progress, 12)
    state = ActualState(built={}, history={}, unfinished={("FineTune", "t", "ft"): running},
                        backend=BackendState())
    return plan, state


def test_a_running_fine_tune_is_a_node_with_its_progress_and_eta():
    plan, state = plan_and_state(0.25)
    data, tune = nodes_of(plan, state, time.time())
    assert (data.resource, data.phase, data.action) == (DATA, "Ready", "noop")
    assert (tune.phase, tune.progress, tune.depends_on) == ("Running", 0.25, (DATA,))
    assert tune.progress_text.startswith("25% (step 12), ETA 1m")
    assert tune.to_json()["progressText"] == tune.progress_text


@dataclass
class FakePlanned:
    plan: Plan
    state: ActualState


class FakeProject:
    """What read_snapshot asks of a project: its root, tracking URI and a plan."""

    def __init__(self, root: Path, progress: float | None):
        self.root, self.tracking_uri, self.progress = root, "sqlite:///x.db", progress

    def plan(self) -> FakePlanned:
        return FakePlanned(*plan_and_state(self.progress))


def test_reads_are_shared_and_a_failed_read_keeps_the_last_nodes_and_says_why(tmp_path: Path):
    loads: list[float] = []
    broken = threading.Event()

    def load() -> FakeProject:
        loads.append(time.time())
        if broken.is_set():
            raise TuneopsError("cannot reach MLflow at http://bob:***@mlflow:5000/")
        return FakeProject(tmp_path, 0.1 * len(loads))

    source = SnapshotSource(load, refresh=0.3)
    first = source.current()
    assert len(loads) == 1 and first.problem == "" and first.by_id[TUNE].progress == 0.1
    assert [source.current() for _ in range(20)] and len(loads) == 1  # within the period: no new read
    time.sleep(0.35)
    source.current()  # starts the next read, answers with what it has
    deadline = time.monotonic() + 5
    while source.current().by_id[TUNE].progress != 0.2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    broken.set()
    time.sleep(0.35)
    source.current()
    deadline = time.monotonic() + 5
    while not source.current().problem:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    failed = source.current()
    assert "cannot reach MLflow" in failed.problem and failed.by_id[TUNE].progress == 0.2


def test_after_a_quiet_spell_a_reader_waits_for_fresh_numbers(tmp_path: Path):
    loads: list[float] = []

    def load() -> FakeProject:
        loads.append(time.time())
        return FakeProject(tmp_path, 0.1 * len(loads))

    source = SnapshotSource(load, refresh=0.1)
    assert source.current().by_id[TUNE].progress == 0.1
    time.sleep(0.5)  # over three periods with nobody looking
    assert source.current().by_id[TUNE].progress == 0.2  # waited for the read, not the old one


def test_a_read_that_sees_what_the_last_one_saw_keeps_its_version(tmp_path: Path):
    from reconciler.ui.snapshot import read_snapshot

    progress = [None, None, 0.75]  # no ETA, which moves with the clock
    first = read_snapshot(lambda: FakeProject(tmp_path, progress[0]), None, {})
    time.sleep(0.01)
    same = read_snapshot(lambda: FakeProject(tmp_path, progress[1]), first, {})
    time.sleep(0.01)
    moved = read_snapshot(lambda: FakeProject(tmp_path, progress[2]), same, {})
    assert same.taken_at > first.taken_at and same.changed_at == first.changed_at == first.taken_at
    assert same.digest == first.digest  # a poll of the graph is answered 304, unrendered
    assert moved.changed_at == moved.taken_at and moved.digest != same.digest


def test_a_first_read_that_fails_after_the_specs_loaded_shows_them_unknown(tmp_path: Path):
    from reconciler.project import Project
    from reconciler.ui.snapshot import UNKNOWN, read_snapshot
    from tests.conftest import VALID_SPECS, write_repo

    project = Project.load(write_repo(tmp_path / "specs", VALID_SPECS))

    class Unreachable:
        def __getattr__(self, name: str):
            return getattr(project, name)

        def plan(self):
            raise TuneopsError("cannot reach MLflow at http://mlflow.example:5000/")

    read = read_snapshot(Unreachable, None, {})
    assert "cannot reach MLflow" in read.problem
    assert {str(node.resource) for node in read.nodes} == {str(rid) for rid in project.graph.order}
    assert {node.phase for node in read.nodes} == {UNKNOWN}
    assert read.by_id[ResourceId("FineTune", "sft")].depends_on == project.graph.depends_on[
        ResourceId("FineTune", "sft")]
