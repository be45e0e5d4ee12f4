"""The dependency graph: datasets and base models -> fine-tunes -> evaluations -> sweeps ->
deployments.

Pure: built from a SpecSet, no I/O. The reconciler walks it in topological order and uses
`downstream` to say what a change reaches; `tuneops graph` prints it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from reconciler.specs.base import ResourceId
from reconciler.specs.dependencies import topological_order
from reconciler.specs.specset import SpecSet


@dataclass(frozen=True)
class DependencyGraph:
    order: tuple[ResourceId, ...]  # dependencies first
    depends_on: dict[ResourceId, tuple[ResourceId, ...]]

    @classmethod
    def from_specs(cls, specs: SpecSet) -> DependencyGraph:
        edges = {rid: tuple(sorted(set(deps))) for rid, deps in specs.depends_on().items()}
        return cls(tuple(topological_order(edges)), edges)

    def dependents(self) -> dict[ResourceId, tuple[ResourceId, ...]]:
        out: dict[ResourceId, list[ResourceId]] = {rid: [] for rid in self.order}
        for rid, deps in self.depends_on.items():
            for dep in deps:
                out[dep].append(rid)
        return {rid: tuple(sorted(children)) for rid, children in out.items()}

    def downstream(self, changed: set[ResourceId]) -> list[ResourceId]:
        """Everything that depends, directly or not, on any of `changed`, in topological order."""
        dependents = self.dependents()
        reached: set[ResourceId] = set()
        frontier = [rid for rid in changed if rid in dependents]
        while frontier:
            for child in dependents[frontier.pop()]:
                if child not in reached:
                    reached.add(child)
                    frontier.append(child)
        return [rid for rid in self.order if rid in reached and rid not in changed]

    def to_text(self) -> str:
        width = max((len(str(rid)) for rid in self.order), default=0)
        lines = []
        for rid in self.order:
            deps = self.depends_on.get(rid, ())
            line = str(rid) if not deps else f"{str(rid):<{width}}  <- {', '.join(map(str, deps))}"
            lines.append(line)
        return "\n".join(lines)

    def to_mermaid(self) -> str:
        lines = ["flowchart LR"]
        for rid in self.order:
            lines.append(f"  {_node_id(rid)}[\"{rid.kind}<br/>{rid.name}\"]:::{rid.kind.lower()}")
        for rid in self.order:
            for dep in self.depends_on.get(rid, ()):
                lines.append(f"  {_node_id(dep)} --> {_node_id(rid)}")
        lines += [f"  classDef {kind.lower()} {style}" for kind, style in _MERMAID_STYLES.items()]
        return "\n".join(lines)

    def to_dot(self) -> str:
        lines = ["digraph tuneops {", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
        for rid in self.order:
            lines.append(f"  {json.dumps(str(rid))} [label={json.dumps(rid.kind + chr(10) + rid.name)}];")
        for rid in self.order:
            for dep in self.depends_on.get(rid, ()):
                lines.append(f"  {json.dumps(str(dep))} -> {json.dumps(str(rid))};")
        lines.append("}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "version": 1,
            "nodes": [{"kind": rid.kind, "name": rid.name} for rid in self.order],
            "edges": [{"from": str(dep), "to": str(rid)}
                      for rid in self.order for dep in self.depends_on.get(rid, ())],
        }


_MERMAID_STYLES = {
    "Dataset": "fill:#e8f4fd,stroke:#1f6feb",
    "BaseModel": "fill:#f0f0f0,stroke:#57606a",
    "FineTune": "fill:#fff4e5,stroke:#bc4c00",
    "Evaluation": "fill:#f3e8fd,stroke:#8250df",
    "Sweep": "fill:#fdf2f8,stroke:#bf3989",
    "Deployment": "fill:#e6f6ea,stroke:#1a7f37",
}


def _node_id(rid: ResourceId) -> str:
    """A Mermaid-safe id, one per resource: names are lowercase, so a team's dot becomes `_X_`
    and `a.b-c` stays apart from `a-b.c`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{rid.kind}_{rid.name}".replace(".", "_X_"))
