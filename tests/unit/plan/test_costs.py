"""A team's budget against its spend and a plan's trainings: what goes over, what cannot be
counted, and a budget already used up, which any training goes over."""

from __future__ import annotations

from reconciler.config import TeamBudget
from reconciler.plan.costs import TeamCost, dollars_text, hours_text
from reconciler.specs.base import ResourceId
from reconciler.tracking.spend import Spend

SFT = ResourceId("FineTune", "a.sft")


def cost(hours: float = 0.0, dollars: float | None = None, *, spent: Spend | None = None,
         budget: TeamBudget | None = None, unestimated: int = 0, unpriced: int = 0) -> TeamCost:
    return TeamCost("a", ("@org/a",), hours, dollars, unestimated, (SFT,), spent, budget, unpriced=unpriced)


def test_a_plan_over_the_hours_or_the_dollars_left_is_over_budget():
    budget = TeamBudget(gpuHoursPerMonth=100.0, dollarsPerMonth=1000.0)
    assert cost(10.0, 40.0, spent=Spend(89.0, 356.0), budget=budget).over_budget is None
    over = cost(12.0, 48.0, spent=Spend(89.0, 356.0), budget=budget).over_budget
    assert over == "101.00 GPU-hours this month (89.00 spent + 12.00 planned) > its 100.00"
    pricey = cost(1.0, 700.0, spent=Spend(10.0, 400.0), budget=budget).over_budget
    assert pricey == "$1,100.00 this month ($400.00 spent + $700.00 planned) > its $1,000.00"


def test_a_budget_used_up_stops_even_trainings_without_a_figure():
    budget = TeamBudget(gpuHoursPerMonth=800.0)
    unknown = cost(0.0, None, spent=Spend(900.0, 3600.0), budget=budget, unestimated=1)
    assert unknown.over_budget == "900.00 GPU-hours spent this month: its 800.00 are used up"
    assert unknown.blocks
    within = cost(0.0, None, spent=Spend(10.0, 40.0), budget=budget, unestimated=1)
    assert within.over_budget is None and within.plan_text() == "GPU-hours not estimated (1 training)"
    some = cost(2.0, None, spent=Spend(10.0, 40.0), budget=budget, unestimated=1)
    assert some.over_budget is None and some.plan_text() == "2.00 GPU-hours (1 not estimated; not counted)"


def test_offline_the_plan_alone_is_compared_and_the_line_says_so():
    over = cost(3.0, 12.0, budget=TeamBudget(dollarsPerMonth=10.0))
    assert over.over_budget == "$12.00 this month ($0.00 spent + $12.00 planned) > its $10.00"
    assert over.line() == (
        "team a (@org/a): this plan 3.00 GPU-hours, $12.00 on demand; spent this month not read "
        "(offline); budget $10.00 a month - over budget ($12.00 this month ($0.00 spent + $12.00 planned) "
        "> its $10.00): its trainings are blocked")
    assert cost(3.0, 12.0).over_budget is None  # no budget, nothing to go over


def test_tiny_figures_are_not_shown_as_zero():
    assert (hours_text(3.7e-08), hours_text(0.0), hours_text(1234.5)) == ("3.7e-08", "0.00", "1,234.50")
    assert (dollars_text(0.001), dollars_text(0.0), dollars_text(12.0)) == ("<$0.01", "$0.00", "$12.00")
