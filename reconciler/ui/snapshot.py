"""What the dashboard shows of a project at one moment: each resource's node (phase, progress,
model version, the plan's action and reason), computed from the plan and the actual state that
`tuneops status` reads, and kept so that every page and poll reads the same moment.

`nodes_of` is pure; `SnapshotSource` is the one place that reads the world, at most once every
few seconds however many browsers poll, and never twice at a time.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from reconciler.errors import TuneopsError
from reconciler.plan.plan import Action, Plan
from reconciler.plan.report import reason_for_people
from reconciler.specs.base import ResourceId, team_of
from reconciler.state import ActualState
from reconciler.status import status_rows

UNKNOWN = "Unknown"  # the phase of a resource whose state could not be read
REFRESH_S = 2.0  # a snapshot older than this is read again when a page or a poll asks
IDLE_AFTER = 3  # refresh periods without a reader: the next one waits for fresh numbers...
WAIT_AFTER_IDLE_S = 15.0  # ...for at most this long, then gets the old ones
READS_AT_MOST = 3  # a read is followed by at least twice its time without one (a third of a CPU)


@dataclass(frozen=True)
class Node:
    resource: ResourceId
    phase: str  # status.PHASES
    progress: float | None  # 0..1 while a job runs, else None
    progress_text: str  # "40% (step 12), ETA 1m30s"
    model_version: str
    detail: str  # a dataset's digest, a verdict, or why it is not Ready
    action: str  # the plan's action: noop, create, rebuild, wait, blocked, ...
    reason: str  # the plan's reason, as `tuneops plan` words it
    fingerprint: str
    file: str | None
    url: str
    depends_on: tuple[ResourceId, ...]
    trials: tuple[tuple[int, str], ...] = ()  # a Sweep's trials: (number, state)

    @property
    def team(self) -> str | None:
        return team_of(self.resource.name)

    def to_json(self) -> dict[str, Any]:
        return {"id": str(self.resource), "kind": self.resource.kind, "name": self.resource.name,
                "phase": self.phase, "progress": self.progress, "progressText": self.progress_text,
                "modelVersion": self.model_version, "detail": self.detail, "action": self.action,
                "reason": self.reason, "fingerprint": self.fingerprint}


def nodes_of(plan: Plan, state: ActualState, now: float) -> tuple[Node, ...]:
    """One node per resource the plan keeps (deletes are left out: they have no spec to show)."""
    rows = {(row.kind, row.name): row for row in status_rows(plan, state, now)}
    nodes = []
    for planned in plan.actions:
        rid = planned.resource
        row = rows.get((rid.kind, rid.name))
        if row is None:
            continue
        progress = None
        if row.phase == "Running":
            running = state.unfinished.get((rid.kind, rid.name, planned.fingerprint or ""))
            progress = running.progress if running is not None else None
        trials = tuple((trial.number, trial.state) for trial in planned.sweep.trials) if planned.sweep else ()
        reason = reason_for_people(planned) if planned.action != Action.NOOP else ""
        nodes.append(Node(rid, row.phase, progress, row.progress, row.model_version, row.result,
                          planned.action.value, reason, planned.fingerprint or "", planned.file, row.url,
                          tuple(planned.depends_on), trials))
    return tuple(nodes)


@dataclass(frozen=True)
class Snapshot:
    """The project as read at `taken_at`: its nodes, the plan and state they came from, and what
    the pages link to. `problem` says why the newest read failed (the nodes are then the last good
    ones)."""

    nodes: tuple[Node, ...]
    taken_at: float
    project: Any = None  # reconciler.project.Project
    planned: Any = None  # reconciler.plan.project_plan.PlannedProject
    commit: str | None = None
    dirty: bool = False
    remote: str | None = None
    problem: str = ""
    context: Mapping[str, str] = field(default_factory=dict)  # the daemon's: last applied, next
    changed_at: float = 0.0  # when a read first saw what this one sees (its taken_at when new)

    @cached_property
    def by_id(self) -> dict[ResourceId, Node]:
        return {node.resource: node for node in self.nodes}

    def shows(self) -> str:
        """What the graph and plan pages show of this snapshot, as a digest: two reads that
        show the same answer a poll with 304, before anything is rendered."""
        warnings = self.planned.plan.warnings if self.planned is not None else ()
        shown = repr((self.nodes, self.problem, self.commit, self.dirty, sorted(self.context.items()),
                      tuple(warnings)))
        return hashlib.sha256(shown.encode()).hexdigest()[:24]

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.shows()}@{self.changed_at}".encode()).hexdigest()[:24]

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for node in self.nodes:
            found[node.phase] = found.get(node.phase, 0) + 1
        return found


ProjectLoader = Callable[[], Any]  # () -> reconciler.project.Project; raises TuneopsError


class SnapshotSource:
    """Snapshots of one project, read again when older than `refresh` seconds. A reader gets the
    newest snapshot at once while another thread reads the next (only the very first read is
    waited for), so a slow MLflow slows the numbers, never the pages."""

    def __init__(self, load: ProjectLoader, *, refresh: float = REFRESH_S,
                 context: Callable[[], Mapping[str, str]] = dict):
        self.load, self.refresh, self.context = load, refresh, context
        self._snapshot: Snapshot | None = None
        self._read_s = 0.0  # how long the last read took
        self._read_done = -math.inf  # monotonic time the last read ended
        self._asked = -math.inf  # monotonic time of the last request
        self._lock = threading.Lock()
        self._reading: threading.Thread | None = None
        self._first = threading.Event()

    def period(self) -> float:
        """Seconds between reads: `refresh`, or three times what the last read took when longer
        (a project that takes long to read is read with at most a third of a CPU)."""
        return max(self.refresh, READS_AT_MOST * self._read_s)

    def current(self) -> Snapshot:
        now = time.monotonic()
        with self._lock:
            period = self.period()
            idle = now - self._asked >= IDLE_AFTER * period  # nobody asked for a while
            self._asked = now
            if now - self._read_done >= period and (self._reading is None or not self._reading.is_alive()):
                self._reading = threading.Thread(target=self._read, daemon=True, name="tuneops-ui-read")
                self._reading.start()
            reading = self._reading
        self._first.wait()
        if idle and reading is not None:
            reading.join(WAIT_AFTER_IDLE_S)  # the numbers held are old: worth waiting for fresh ones
        assert self._snapshot is not None
        return self._snapshot

    def _read(self) -> None:
        started = time.monotonic()
        try:
            self._snapshot = read_snapshot(self.load, self._snapshot, dict(self.context()))
        finally:
            self._read_done = time.monotonic()
            self._read_s = self._read_done - started
            self._first.set()


def read_snapshot(load: ProjectLoader, previous: Snapshot | None, context: Mapping[str, str]) -> Snapshot:
    """Load the project, plan it against the actual state, and make the nodes. A failure (specs
    that do not validate, MLflow down) keeps the previous nodes and says why."""
    from reconciler import redaction
    from reconciler.git.info import git_origin

    now = time.time()
    project = None
    try:
        project = load()
        redaction.remember_credentials_of(project.tracking_uri)
        planned = project.plan()
        origin = git_origin(project.root)
        nodes = nodes_of(planned.plan, planned.state, now)
        read = Snapshot(nodes, now, project, planned, origin.commit, origin.dirty, origin.repo, "", context)
    except TuneopsError as error:
        read = _failed(previous, project, now, redaction.redact(_problem_text(error)), context)
    except Exception as error:  # noqa: BLE001 - a bug in reading must not take the dashboard down
        read = _failed(previous, project, now,
                       redaction.redact(f"internal error: {type(error).__name__}: {error}"), context)
    same = previous is not None and previous.shows() == read.shows()
    return replace(read, changed_at=previous.changed_at if same and previous else now)


def _failed(previous: Snapshot | None, project: Any, now: float, problem: str,
            context: Mapping[str, str]) -> Snapshot:
    """A read that failed keeps the previous nodes and says why. With none (the first read), the
    specs that loaded are still shown, in phase Unknown: MLflow being down hides no resource."""
    if previous is not None:
        return Snapshot(previous.nodes, now, previous.project, previous.planned, previous.commit,
                        previous.dirty, previous.remote, problem, context)
    if project is None:
        return Snapshot((), now, problem=problem, context=context)
    graph = project.graph

    def unknown(rid: ResourceId) -> Node:
        spec_file = getattr(project.specs.get(rid), "file", None)
        upstream = tuple(graph.depends_on.get(rid, ()))
        return Node(rid, UNKNOWN, None, "", "", "", "", "", "", spec_file, "", upstream)

    nodes = tuple(unknown(rid) for rid in graph.order)
    return Snapshot(nodes, now, project, None, problem=problem, context=context)


def _problem_text(error: TuneopsError) -> str:
    """A validation failure lists its problems as `tuneops validate` prints them; anything else
    is its one line."""
    result = getattr(error, "result", None)
    errors = getattr(result, "errors", None)
    if errors:
        shown = [problem.text() for problem in errors[:20]]
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        return f"the specs do not validate ({len(errors)} error(s)):\n" + "\n".join(shown) + more
    return str(error)
