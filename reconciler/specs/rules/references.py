"""Rules on references between specs: each names a spec that is defined, and none go round in
a circle. DefinedNames also gives `tuneops logs` its hint for a name that is not defined.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from reconciler.specs.base import ResourceId, bare_name, team_of
from reconciler.specs.dependencies import find_cycles
from reconciler.specs.problems import Problem
from reconciler.specs.rules.registry import ERROR, RuleContext, problem, rule
from reconciler.specs.schema_errors import suggest


class DefinedNames:
    """The names defined per kind, to say why one is not: `tuneops logs` and the reference rule
    give the same hint."""

    def __init__(self, defined: Iterable[ResourceId]):
        self.names_by_kind: dict[str, list[str]] = {}
        self.kinds_by_name: dict[str, list[str]] = {}
        for rid in sorted(defined):
            self.names_by_kind.setdefault(rid.kind, []).append(rid.name)
            self.kinds_by_name.setdefault(rid.name, []).append(rid.kind)

    def hint(self, target: ResourceId) -> str | None:
        other = self.kinds_by_name.get(target.name)
        if other:  # the name exists, as another kind: that says more than a near spelling
            return f"'{target.name}' is a {other[0]}, not a {target.kind}"
        same = self.names_by_kind.get(target.kind, [])
        written = bare_name(target.name)
        elsewhere = [name for name in same
                     if team_of(name) is not None and bare_name(name) == written and name != target.name]
        if elsewhere:  # another team's: say how to name it across teams
            return (f"{target.kind} '{written}' is defined by another team: name it "
                    f"'{elsewhere[0]}' (its team must export it)")
        if team_of(target.name) and not any(team_of(name) for name in same):
            return "a name with '.' names another team's spec, and this project defines no teams"
        return suggest(target.name, same)


@rule
def references_exist(ctx: RuleContext) -> Iterator[Problem]:
    defined: DefinedNames | None = None  # built on the first miss only
    for spec in ctx.specs:
        for ref in spec.resource.references():
            if ref.target in ctx.specs or ref.target in ctx.declared:
                continue
            if defined is None:
                defined = DefinedNames(ctx.declared | set(ctx.specs.by_id))
            yield problem(spec, ERROR, "missing-reference",
                          f"{ref.role} refers to {ref.target.kind} '{ref.target.name}', "
                          "which is not defined", ref.path, hint=defined.hint(ref.target))


@rule
def no_cycles(ctx: RuleContext) -> Iterator[Problem]:
    for cycle in find_cycles(ctx.specs.depends_on()):
        first = ctx.specs.by_id[cycle[0]]
        ref = next((r for r in first.resource.references() if r.target == cycle[1]), None)
        # an implied edge (a Sweep on the Evaluations its Deployments require) has no field
        yield problem(first, ERROR, "dependency-cycle",
                      "dependency cycle: " + " -> ".join(str(node) for node in cycle),
                      ref.path if ref else ("spec",), key=ref is None)
