"""A Git base (e.g. `origin/main`) read as actual state, for `tuneops plan --base REF`.

A pull request's plan answers "what does this change do, compared with the base?". So the
base's specs are taken as built, passing their gates and serving: a plan of the head against
that state lists exactly the resources the change touches (rebuilt directly or via an
upstream, updated in place, created) and leaves everything else `noop`. The built runs carry
the base's spec and lineage, so the plan names the fields and upstreams that changed. Pure:
no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from reconciler.fingerprint import FingerprintInput, resolved_spec
from reconciler.plan.plan import Action, Plan, PlannedAction
from reconciler.specs.base import ResourceId
from reconciler.specs.deployment import DeploymentResource
from reconciler.specs.specset import SpecSet
from reconciler.state import ActualState, BackendState, BuiltRun, ServerObservation

BASE = "base"  # what stands for a run id, model version or handle of the base


def state_from_base(specs: SpecSet, inputs: Mapping[ResourceId, FingerprintInput]) -> ActualState:
    built: dict[tuple[str, str, str], BuiltRun] = {}
    servers: list[ServerObservation] = []
    for rid, item in inputs.items():
        loaded = specs.get(rid)
        if loaded is None:
            continue
        lineage = {"inputs": dict(item.inputs), "sources": dict(item.sources), "recipe": item.recipe}
        if rid.kind in ("Dataset", "FineTune", "Evaluation"):
            built[(rid.kind, rid.name, item.fingerprint)] = BuiltRun(
                rid.kind, rid.name, item.fingerprint, run_id=BASE, started_at=0.0,
                spec=resolved_spec(loaded.resource), lineage=lineage,
                model_version=f"{rid.name}@{BASE}" if rid.kind == "FineTune" else None,
                verdict="passed" if rid.kind == "Evaluation" else None)
        elif rid.kind == "Deployment" and isinstance(loaded.resource, DeploymentResource):
            # sweep: a Deployment of a Sweep is taken to serve the sweep itself at the base; which
            # trial it served there is the sweep engine's to say
            source = loaded.resource.spec.model.source
            served = inputs.get(source)
            servers.append(ServerObservation(
                name=rid.name, fingerprint=item.fingerprint,
                model_fingerprint=served.fingerprint if served else "",
                model_version=f"{source.name}@{BASE}", phase="serving", url=None,
                started_at=0.0, message="", handle=BASE, log=None,
                job={"spec": loaded.resource.spec.model_dump(mode="json", by_alias=True),
                     "lineage": lineage}))
    history = {(kind, name): (run,) for (kind, name, _), run in built.items()}
    return ActualState(built=built, history=history, unfinished={},
                       backend=BackendState(servers=tuple(servers)), tracking_uri=None, read=True)


def against_base(plan: Plan, base_inputs: Mapping[ResourceId, FingerprintInput], head: SpecSet,
                 built: ActualState | None = None) -> Plan:
    """The head's plan against the base's state, completed: specs removed since the base are
    listed as deletes (their built runs stay in MLflow), and, when the real state was read,
    a change that lands on a fingerprint already built (a revert) costs nothing."""
    actions = list(plan.actions)
    if built is not None:
        for index, planned in enumerate(actions):
            if planned.action in (Action.CREATE, Action.REBUILD) and planned.fingerprint and \
                    built.built_run(planned.resource.kind, planned.resource.name, planned.fingerprint):
                why = f"already built at this fingerprint ({planned.reason or 'new'}): nothing to train"
                actions[index] = replace(planned, action=Action.NOOP, reason=why)
    listed = {planned.resource for planned in actions}
    for rid in base_inputs:
        if rid not in head and rid not in listed and rid.kind != "BaseModel":
            actions.append(PlannedAction(rid, Action.DELETE, None, previous=base_inputs[rid].fingerprint,
                                         reason="its spec was removed (built runs and model versions stay "
                                                "in MLflow)"))
    return replace(plan, actions=tuple(actions))
