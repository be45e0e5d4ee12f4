"""Graph algorithms over "depends on" edges: cycles and a stable topological order; and the
edges no single spec names (implied_dependencies).

The algorithms are pure and generic (nodes are any hashable, sortable values) so the validation
rules and the dependency graph share one implementation.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

from reconciler.specs.base import Resource, ResourceId
from reconciler.specs.deployment import DeploymentResource

Node = TypeVar("Node", bound=Hashable)


def implied_dependencies(resources: Iterable[Resource]) -> dict[ResourceId, set[ResourceId]]:
    """Edges that come from another spec than the dependent's: a Sweep depends on every
    Evaluation a Deployment serving it requires, because its trials are scored by them to
    choose the one served."""
    implied: dict[ResourceId, set[ResourceId]] = {}
    for resource in resources:
        if isinstance(resource, DeploymentResource) and resource.spec.model.sweep is not None:
            implied.setdefault(resource.spec.model.source, set()).update(
                ResourceId("Evaluation", name) for name in resource.spec.requires)
    return implied


def find_cycles(depends_on: Mapping[Node, Iterable[Node]]) -> list[list[Node]]:
    """One cycle per strongly connected component that has one, as [a, b, ..., a].

    Iterative Tarjan, so a long dependency chain cannot exhaust the Python stack.
    """
    index: dict[Node, int] = {}
    low: dict[Node, int] = {}
    on_stack: set[Node] = set()
    stack: list[Node] = []
    components: list[list[Node]] = []
    counter = 0
    for start in sorted(depends_on):  # type: ignore[type-var]
        if start in index:
            continue
        work = [(start, iter(sorted(depends_on.get(start, ()))))]  # type: ignore[type-var]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in depends_on:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(depends_on.get(child, ())))))  # type: ignore[type-var]
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in set(depends_on.get(node, ())):
                    components.append(component)
    return [_cycle_in(component, depends_on) for component in components]


def _cycle_in(component: list[Node], depends_on: Mapping[Node, Iterable[Node]]) -> list[Node]:
    members = set(component)
    start = min(component)  # type: ignore[type-var]
    path, seen, node = [start], {start}, start
    while True:
        node = min(c for c in depends_on.get(node, ()) if c in members)  # type: ignore[type-var]
        if node in seen:
            return path[path.index(node):] + [node]
        path.append(node)
        seen.add(node)


def topological_order(depends_on: Mapping[Node, Iterable[Node]]) -> list[Node]:
    """Dependencies before dependents; ties broken by sort order, so output is stable.

    Edges to nodes outside the mapping are ignored. Assumes no cycles (validation refuses them).
    """
    import heapq

    remaining = {node: {d for d in deps if d in depends_on and d != node}
                 for node, deps in depends_on.items()}
    dependents: dict[Node, list[Node]] = {node: [] for node in remaining}
    for node, deps in remaining.items():
        for dep in deps:
            dependents[dep].append(node)
    ready = [node for node, deps in remaining.items() if not deps]
    heapq.heapify(ready)
    order = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        for dependent in dependents[node]:
            remaining[dependent].discard(node)
            if not remaining[dependent]:
                heapq.heappush(ready, dependent)
    return order
