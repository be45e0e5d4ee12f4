"""SpecSet: the validated desired state, every resource by kind and name.

This is what the graph, the planner and the reconciler consume. It is built only from specs
that passed their own schema; whole-repository rules decide whether the set as a whole is valid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TypeVar

from reconciler.config import ProjectSettings
from reconciler.specs.base import Resource, ResourceId, bare_name
from reconciler.specs.dependencies import implied_dependencies
from reconciler.specs.kinds import RULE_KINDS
from reconciler.specs.loader import LoadedSpec
from reconciler.specs.schema_errors import suggest

R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class SpecSet:
    root: Path
    settings: ProjectSettings
    by_id: dict[ResourceId, LoadedSpec] = field(default_factory=dict)
    # tuneops.yaml's `policy:` settings as Policies (specs/builtin_policies.py): checked with the
    # repository's Policies, never built, not counted as specs
    builtin_policies: tuple[LoadedSpec, ...] = ()

    def __iter__(self) -> Iterator[LoadedSpec]:
        return iter(self.by_id.values())

    def __len__(self) -> int:
        return len(self.by_id)

    def __contains__(self, resource_id: object) -> bool:
        return resource_id in self.by_id

    def get(self, resource_id: ResourceId) -> LoadedSpec | None:
        return self.by_id.get(resource_id)

    def resource(self, resource_id: ResourceId, kind: type[R]) -> R | None:
        loaded = self.by_id.get(resource_id)
        resource = loaded.resource if loaded else None
        return resource if isinstance(resource, kind) else None

    @cached_property
    def _by_kind(self) -> dict[str, list[LoadedSpec]]:
        index: dict[str, list[LoadedSpec]] = {}
        for resource_id, spec in self.by_id.items():
            index.setdefault(resource_id.kind, []).append(spec)
        return index

    def of_kind(self, kind: str) -> list[LoadedSpec]:
        return self._by_kind.get(kind, [])

    def policies(self) -> list[LoadedSpec]:
        """The repository's Policies, then the built-in ones."""
        return [*self.of_kind("Policy"), *self.builtin_policies]

    def names(self, kind: str) -> list[str]:
        return [spec.resource.name for spec in self.of_kind(kind)]

    def unknown_target_hint(self, target: ResourceId) -> str:
        """Why `--target KIND/NAME` names no spec, and the likely one: in a project with teams,
        the team-qualified name of a spec written with that name."""
        same_kind = self.names(target.kind)
        teams = [name for name in same_kind if bare_name(name) == target.name and name != target.name]
        if teams:
            return f"did you mean {', '.join(f'{target.kind}/{name}' for name in teams)}? A team's specs " \
                   "are named with their team"
        close = suggest(target.name, same_kind)
        return close or "`tuneops graph` lists them"

    def depends_on(self) -> dict[ResourceId, list[ResourceId]]:
        """Resource -> the resources it references that exist in this set, and those another
        spec makes it depend on (specs/dependencies.py implied_dependencies)."""
        implied = implied_dependencies(spec.resource for spec in self.by_id.values())
        out: dict[ResourceId, list[ResourceId]] = {}
        for resource_id, spec in self.by_id.items():
            if resource_id.kind in RULE_KINDS:  # a Policy is a check on the others, not a build
                continue
            targets = [ref.target for ref in spec.resource.references()]
            targets += sorted(target for target in implied.get(resource_id, ()) if target not in targets)
            out[resource_id] = [target for target in targets if target in self.by_id]
        return out
