"""Content fingerprints: one sha256 per resource over everything that changes what it produces.

A fingerprint covers the spec with defaults applied (minus the fields the models mark
operational), the fingerprints of the resources it depends on, the content digests of its
local sources, and a recipe version per kind. So a description edit changes nothing, a changed
data file changes everything downstream of it, and reverting a commit gives back fingerprints
that are already built. Pure: source digests are read at the edge (`sources_digest`) and passed in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel as PydanticModel

from reconciler.graph import DependencyGraph
from reconciler.specs.base import Resource, ResourceId
from reconciler.specs.specset import SpecSet

RECIPE_VERSIONS: dict[str, int] = {
    "Dataset": 1, "BaseModel": 1, "FineTune": 2, "Evaluation": 1, "Sweep": 1, "Deployment": 1,
}
"""Bump a kind's number when the runtime changes what the same spec produces (a new split rule,
a different default in training): every resource of that kind is then rebuilt once. Say what
changed, and how to keep the old behaviour, in RECIPE_CHANGES and docs/release-notes.md."""

RECIPE_CHANGES: dict[str, dict[int, tuple[str, ...]]] = {
    "FineTune": {
        2: ("chat SFT now trains every assistant turn, not only the last (set training.trainOn: "
            "lastAssistantTurn to keep the old behaviour)",
            "training.warmupRatio is now a share of the optimizer steps on transformers 4 too, where "
            "it warmed up for a single step (set training.warmupRatio: 0 for no warm-up; on "
            "transformers 5 the warm-up is unchanged)",
            "on a model whose output head shares the embedding weights, adapter.modulesToSave keeps "
            "the two tied (one trained copy, as the planner counts), where it trained two copies",
            "the llama3 chat template trims message contents, as Meta's does (no change for contents "
            "without leading or trailing whitespace)"),
    },
}
"""What each recipe version changed, in a user's words: kind -> {version: changes since the one
before}. The plan names them when it rebuilds a resource built under an older recipe."""


def recipe_changes(kind: str, before: int, after: int) -> tuple[str, ...]:
    """What changed for `kind` from recipe `before` to `after` (nothing when going back)."""
    notes = RECIPE_CHANGES.get(kind, {})
    return tuple(note for version in range(before + 1, after + 1) for note in notes.get(version, ()))

SourceDigests = Mapping[tuple[ResourceId, str], str]
"""(resource, field path such as "spec.source") -> "sha256:..." of a local file or folder."""


def canonical_json(value: Any) -> str:
    """One spelling per meaning: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _is_operational(model: type[PydanticModel], name: str) -> bool:
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("x-operational"))


def _left_out_at_default(model: PydanticModel, name: str) -> bool:
    """A field added after resources were built with what its default does: at that default it
    is not part of the fingerprint, so a release that adds it rebuilds nothing."""
    info = type(model).model_fields[name]
    extra = info.json_schema_extra
    if not (isinstance(extra, dict) and extra.get("x-fingerprint-omits-default")):
        return False
    default = info.get_default(call_default_factory=True)
    return getattr(model, name) == default


def _split(model: PydanticModel, dumped: Any, keep_operational: bool) -> Any:
    """The dumped model with operational fields dropped (or, with keep_operational, only those)."""
    if not isinstance(model, PydanticModel) or not isinstance(dumped, dict):
        return dumped
    cls = type(model)
    out: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        key = info.serialization_alias or info.alias or name  # the key model_dump wrote
        if key not in dumped:
            continue
        operational = _is_operational(cls, name)
        value = getattr(model, name)
        if keep_operational:
            if operational:
                out[key] = dumped[key]
            elif isinstance(value, PydanticModel):
                inner = _split(value, dumped[key], True)
                if inner:
                    out[key] = inner
            continue
        if operational or _left_out_at_default(model, name):
            continue
        if isinstance(value, PydanticModel):
            out[key] = _split(value, dumped[key], False)
        elif isinstance(value, tuple | list) and value and isinstance(value[0], PydanticModel):
            out[key] = [_split(item, item_dumped, False) for item, item_dumped in zip(value, dumped[key],
                                                                                       strict=True)]
        else:
            out[key] = dumped[key]
    return out


def resolved_spec(resource: Resource) -> dict[str, Any]:
    """The spec as written (camelCase, what a job file and its MLflow run carry). Defaults are
    left to the model that reads it, because a dump with every default does not validate again
    (`epochs` beside `maxSteps` reads as both set)."""
    spec = resource.spec  # type: ignore[attr-defined]
    return spec.model_dump(mode="json", by_alias=True, exclude_unset=True)


def produced_spec(resource: Resource) -> dict[str, Any]:
    """The part of the spec that decides what is produced (operational fields removed)."""
    spec = resource.spec  # type: ignore[attr-defined]
    return _split(spec, spec.model_dump(mode="json", by_alias=True), keep_operational=False)


def operational_spec(resource: Resource) -> dict[str, Any]:
    """Only the operational fields (replicas, resources, alias, suspend, ...): a change to them
    is an in-place `update`, never a rebuild."""
    spec = resource.spec  # type: ignore[attr-defined]
    return _split(spec, spec.model_dump(mode="json", by_alias=True), keep_operational=True)


def _recorded_view(kind: str, spec: Mapping[str, Any], keep_operational: bool) -> dict[str, Any] | None:
    from reconciler.specs.kinds import KINDS

    spec_model = KINDS[kind].model_fields["spec"].annotation
    try:
        parsed = spec_model.model_validate(dict(spec))  # type: ignore[union-attr]
    except (TypeError, ValueError):  # pydantic's ValidationError is a ValueError
        return None
    return _split(parsed, parsed.model_dump(mode="json", by_alias=True), keep_operational)


def produced_view(kind: str, spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """`produced_spec` of a spec dict recorded earlier (an MLflow tag, a live server's job file),
    or None when it no longer parses (the spec language changed since)."""
    return _recorded_view(kind, spec, keep_operational=False)


def operational_view(kind: str, spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """`operational_spec` of a spec dict recorded earlier."""
    return _recorded_view(kind, spec, keep_operational=True)


@dataclass(frozen=True)
class FingerprintInput:
    """What a fingerprint is computed from, kept so a plan can say *why* one changed."""

    kind: str
    name: str
    recipe: int
    spec: dict[str, Any]
    inputs: dict[str, str]  # "Kind/name" of each dependency -> its fingerprint
    sources: dict[str, str]  # field path -> content digest

    def document(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "recipe": self.recipe, "spec": self.spec,
                "inputs": self.inputs, "sources": self.sources}

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(canonical_json(self.document()).encode("utf-8")).hexdigest()


def fingerprint_inputs(specs: SpecSet, graph: DependencyGraph,
                       source_digests: SourceDigests) -> dict[ResourceId, FingerprintInput]:
    """Every resource's fingerprint input, dependencies first (each needs its upstreams')."""
    out: dict[ResourceId, FingerprintInput] = {}
    for rid in graph.order:
        loaded = specs.get(rid)
        if loaded is None:
            continue
        resource = loaded.resource
        inputs = {str(dep): out[dep].fingerprint for dep in graph.depends_on.get(rid, ()) if dep in out}
        sources = {path: digest for (owner, path), digest in source_digests.items() if owner == rid}
        out[rid] = FingerprintInput(rid.kind, rid.name, RECIPE_VERSIONS[rid.kind],
                                    produced_spec(resource), inputs, sources)
    return out


def fingerprints(specs: SpecSet, graph: DependencyGraph,
                 source_digests: SourceDigests) -> dict[ResourceId, str]:
    return {rid: item.fingerprint for rid, item in fingerprint_inputs(specs, graph, source_digests).items()}
