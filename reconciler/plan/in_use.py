"""Which built version of each resource is in use: what a plan diffs against, what `status` and
`logs` speak of.

"Current" is not "newest". After a rollback the newest FineTune run is the version rolled back
from, while the one serving is older; diffing against the newest would show the rollback's
own change again. The version in use is, in order:

1. for a FineTune, the version a live Deployment serves;
2. for anything else in the chain, the version that an in-use downstream was built from
   (its lineage names the upstream's fingerprint): the Dataset the serving model was trained
   on, the Evaluation run that scored it;
3. failing both, the newest complete run.

Pure: it reads an ActualState snapshot and the dependency graph, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.graph import DependencyGraph
from reconciler.specs.base import ResourceId
from reconciler.state import ActualState, BuiltRun

SERVING = "serving"
NEWEST = "newest built"


@dataclass(frozen=True)
class InUse:
    """A built run and why it counts as the one in use."""

    run: BuiltRun
    why: str  # "serving", "what fruit-sft/1 was built from", "scored fruit-sft/1", "newest built"

    @property
    def label(self) -> str:
        """How a person names this version: the model version, else a short fingerprint."""
        return self.run.model_version if self.run.kind == "FineTune" and self.run.model_version \
            else self.run.fingerprint[:12]

    def describe(self) -> str:
        """`fruit-sft/1, serving`: what a plan line says it compared with."""
        return f"{self.label}, {self.why}"


def versions_in_use(graph: DependencyGraph, state: ActualState) -> dict[ResourceId, InUse]:
    """The version in use of every built resource of the graph (resources never built are absent)."""
    found: dict[ResourceId, InUse] = {}
    dependents = graph.dependents()
    for rid in graph.order:  # 1. served fine-tunes
        if rid.kind == "Deployment":
            served = _served(graph, state, rid)
            if served is not None and served[0] not in found:
                found[served[0]] = InUse(served[1], SERVING)
    changed = True
    while changed:  # 2. follow lineage from what is in use, both ways, until nothing moves
        changed = False
        for rid in graph.order:
            if rid in found or rid.kind in ("Deployment", "BaseModel"):
                continue
            in_use = _built_from_by(rid, dependents.get(rid, ()), found, state) \
                or _scored(rid, graph.depends_on.get(rid, ()), found, state)
            if in_use is not None:
                found[rid] = in_use
                changed = True
    for rid in graph.order:  # 3. the newest, for what nothing in use reaches
        if rid not in found and rid.kind not in ("Deployment", "BaseModel"):
            newest = state.newest(rid.kind, rid.name)
            if newest is not None:
                found[rid] = InUse(newest, NEWEST)
    return found


def _served(graph: DependencyGraph, state: ActualState, deployment: ResourceId,
            ) -> tuple[ResourceId, BuiltRun] | None:
    server = state.server(deployment.name)
    if server is None or not server.is_live or not server.model_fingerprint:
        return None
    for dep in graph.depends_on.get(deployment, ()):
        if dep.kind == "FineTune":
            run = state.built_run(dep.kind, dep.name, server.model_fingerprint)
            if run is not None:
                return dep, run
    return None


def _built_from_by(rid: ResourceId, dependents: tuple[ResourceId, ...], found: Mapping[ResourceId, InUse],
                   state: ActualState) -> InUse | None:
    """The upstream version an in-use downstream's lineage names."""
    for child in dependents:
        user = found.get(child)
        if user is None or user.why == NEWEST or not user.run.lineage:
            continue
        fingerprint = (user.run.lineage.get("inputs") or {}).get(str(rid))
        run = state.built_run(rid.kind, rid.name, fingerprint) if isinstance(fingerprint, str) else None
        if run is not None:
            return InUse(run, f"what {user.label} was built from")
    return None


def _scored(rid: ResourceId, upstreams: tuple[ResourceId, ...], found: Mapping[ResourceId, InUse],
            state: ActualState) -> InUse | None:
    """The newest run of a downstream (an Evaluation) built from an upstream version in use."""
    anchors = {str(up): found[up] for up in upstreams if up in found and found[up].why != NEWEST}
    if not anchors:
        return None
    for run in state.history.get((rid.kind, rid.name), ()):  # newest first
        inputs = (run.lineage or {}).get("inputs") or {}
        if all(inputs.get(name) == anchor.run.fingerprint for name, anchor in anchors.items()):
            scored = next((a for a in anchors.values() if a.run.kind == "FineTune"), None)
            return InUse(run, f"scored {scored.label}" if scored else
                         "built from " + ", ".join(a.label for a in anchors.values()))
    return None
