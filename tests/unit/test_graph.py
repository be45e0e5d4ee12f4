"""The dependency graph and the algorithms under it."""

from __future__ import annotations

from pathlib import Path

from reconciler.graph import DependencyGraph
from reconciler.specs.base import ResourceId
from reconciler.specs.dependencies import find_cycles, topological_order
from reconciler.specs.validate import validate_path
from tests.conftest import REPO_ROOT


def rid(text: str) -> ResourceId:
    kind, name = text.split("/")
    return ResourceId(kind, name)


def test_topological_order_is_stable_and_puts_dependencies_first():
    edges = {"c": ["a", "b"], "b": ["a"], "a": [], "d": []}
    assert topological_order(edges) == ["a", "b", "c", "d"]


def test_cycles_are_found_with_their_path():
    edges = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["d"], "e": ["a"]}
    assert sorted(find_cycles(edges)) == [["a", "b", "c", "a"], ["d", "d"]]
    assert find_cycles({"a": ["b"], "b": []}) == []


def test_a_long_chain_does_not_exhaust_the_stack():
    chain = {i: [i + 1] for i in range(20_000)}
    chain[20_000] = [0]
    [cycle] = find_cycles(chain)
    assert len(cycle) == 20_002
    assert len(topological_order({i: [i + 1] for i in range(20_000)})) == 20_000


def example_graph() -> DependencyGraph:
    result = validate_path(REPO_ROOT / "specs-example")
    assert result.valid
    return DependencyGraph.from_specs(result.specs)


def test_downstream_of_a_dataset_reaches_everything_built_from_it():
    graph = example_graph()
    reached = graph.downstream({rid("Dataset/support-tickets")})
    assert reached == [rid("FineTune/support-sft"), rid("Evaluation/support-sft-quality"),
                       rid("FineTune/support-dpo"), rid("Evaluation/support-dpo-quality"),
                       rid("Deployment/support-bot"), rid("FineTune/support-grpo"),
                       rid("FineTune/support-kto")]
    # a GRPO fine-tune waits for the reward model it scores with
    assert rid("FineTune/support-grpo") in graph.downstream({rid("FineTune/support-rm")})
    assert graph.downstream({rid("Dataset/product-docs")}) == [rid("FineTune/docs-cpt")]
    assert graph.downstream({rid("Deployment/support-bot")}) == []


def test_every_edge_goes_forward_in_the_order():
    graph = example_graph()
    position = {node: index for index, node in enumerate(graph.order)}
    for node, deps in graph.depends_on.items():
        assert all(position[dep] < position[node] for dep in deps)


def test_mermaid_node_ids_are_safe(tmp_path: Path):
    mermaid = example_graph().to_mermaid()
    assert "FineTune_support_sft --> Evaluation_support_sft_quality" in mermaid
    assert "-->" in mermaid and "support-sft[" not in mermaid


def test_mermaid_ids_keep_team_qualified_names_apart():
    from reconciler.graph import _node_id

    names = ("a.fruit-colors", "a-fruit.colors", "a-fruit-colors")
    ids = {_node_id(ResourceId("Dataset", name)) for name in names}
    assert len(ids) == 3
