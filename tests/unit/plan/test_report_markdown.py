"""The pull-request comment: valid Markdown, and under GitHub's comment limit however large
the change (a 1,000-resource change is cut, and says where the rest is)."""

from __future__ import annotations

from markdown_it import MarkdownIt

from reconciler.plan.plan import Action, FieldChange, Plan, PlannedAction
from reconciler.plan.report import COMMENT_LIMIT, plan_markdown
from reconciler.specs.base import ResourceId


def big_plan(count: int) -> Plan:
    root = ResourceId("Dataset", "shared-corpus")
    actions = [PlannedAction(root, Action.REBUILD, "a" * 64, previous="b" * 64, reason="spec changed",
                             changes=(FieldChange("clean.maxChars", 8000, 4000),))]
    for index in range(count - 1):
        actions.append(PlannedAction(
            ResourceId("FineTune", f"customer-{index:04d}-support-assistant"), Action.REBUILD, "c" * 64,
            previous="d" * 64, reason="upstream changed: Dataset/shared-corpus | and a pipe",
            upstream=(root,), depends_on=(root,)))
    return Plan(tuple(actions), {root: tuple(a.resource for a in actions[1:])})


def parse(text: str) -> list:
    return MarkdownIt("commonmark").enable("table").parse(text)


def test_a_thousand_resource_change_fits_in_one_comment_and_says_where_the_rest_is():
    text = plan_markdown(big_plan(1000), header="specs at abc; compared with origin/main (def)")
    assert len(text) <= COMMENT_LIMIT
    rows = [t for t in parse(text) if t.type == "tr_open"]
    assert 100 < len(rows) - 1 < 1000  # the header row, then as many actions as fit
    assert f"{1000 - (len(rows) - 1)} more action(s) not listed" in text
    assert "`tuneops plan --format json`" in text
    assert "```mermaid" not in text  # 1,000 nodes: no graph anyone could read


def test_a_small_change_is_shown_whole_with_its_graph_and_escaped_cells():
    text = plan_markdown(big_plan(3))
    tokens = parse(text)
    assert sum(t.type == "tr_open" for t in tokens) == 4
    cells = [t.content for t in tokens if t.type == "inline"]
    assert "upstream changed: Dataset/shared-corpus | and a pipe" in cells  # the pipe stayed in its cell
    mermaid = next(t.content for t in tokens if t.type == "fence" and t.info == "mermaid")
    assert mermaid.count(" --> ") == 2 and "not listed" not in text
