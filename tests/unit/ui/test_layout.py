"""The graph page's layout: build order left to right, one lane per team, chains kept straight."""

from __future__ import annotations

from reconciler.specs.base import ResourceId
from reconciler.ui.layout import NODE_WIDTH, columns, lay_out

DATA, BASE = ResourceId("Dataset", "d"), ResourceId("BaseModel", "b")
SFT, DPO = ResourceId("FineTune", "sft"), ResourceId("FineTune", "dpo")
EVAL, DEPLOY = ResourceId("Evaluation", "e"), ResourceId("Deployment", "bot")
EDGES = {SFT: (BASE, DATA), DPO: (DATA, SFT), EVAL: (DATA, DPO), DEPLOY: (DPO, EVAL)}
ORDER = (BASE, DATA, SFT, DPO, EVAL, DEPLOY)


def test_each_resource_sits_right_of_what_it_depends_on_in_build_order():
    column = columns(ORDER, EDGES)
    assert column == {BASE: 0, DATA: 0, SFT: 1, DPO: 2, EVAL: 3, DEPLOY: 4}
    layout = lay_out(ORDER, EDGES)
    for rid, deps in EDGES.items():
        for dep in deps:
            assert layout.placed[dep].x + NODE_WIDTH < layout.placed[rid].x, (dep, rid)
    assert layout.placed[DATA].y < layout.placed[BASE].y  # data above the base model in column 0


def test_a_team_gets_a_lane_of_its_own_below_the_shared_resources():
    team_tune = ResourceId("FineTune", "search.sft")
    edges = {**EDGES, team_tune: (BASE, DATA)}
    layout = lay_out((*ORDER, team_tune), edges)
    assert [lane.team for lane in layout.lanes] == [None, "search"]
    shared, search = layout.lanes
    assert shared.y <= layout.placed[SFT].y < shared.y + shared.height
    assert search.y <= layout.placed[team_tune].y < search.y + search.height
    assert layout.height >= search.y + search.height


def test_a_thousand_resources_are_laid_out_without_overlaps():
    order, edges = [], {}
    for i in range(200):
        data, tune = ResourceId("Dataset", f"d{i}"), ResourceId("FineTune", f"t{i}")
        evaluation, bot = ResourceId("Evaluation", f"e{i}"), ResourceId("Deployment", f"p{i}")
        order += [data, tune, evaluation, bot]
        edges.update({tune: (data, BASE), evaluation: (tune, data), bot: (tune, evaluation)})
    order = [BASE, *order]
    layout = lay_out(tuple(order), edges)
    spots = {(p.x, p.y) for p in layout.placed.values()}
    assert len(spots) == len(order)
    assert all(0 <= p.x < layout.width and 0 <= p.y < layout.height for p in layout.placed.values())
