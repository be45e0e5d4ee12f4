"""What a plan costs, per action and per team, and the team budgets it would go over.

Pure: the planner's estimates (sizing/) and the month-to-date spend (tracking/spend.py) are
read by the caller. An action costs what the planner estimates its training takes: a FineTune
that trains, or a Sweep's remaining trials; Datasets, Evaluations and servers are not priced.
A team over its budget gets its costly actions blocked (`blocked: budget`, plan/blocked.py)
unless the budget is approved like a policy: `--approve budget`, or the annotations
tuneops.dev/approved-by: budget and tuneops.dev/approval-reason on the spec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler.config import PricingSettings, ProjectSettings, TeamBudget
from reconciler.plan.blocked import BudgetBlock
from reconciler.plan.plan import Action, Plan
from reconciler.specs.base import ResourceId, team_of
from reconciler.specs.finetune import FineTuneResource
from reconciler.specs.policy import Approval, annotated_approval
from reconciler.specs.rules.policies import BUDGET
from reconciler.specs.specset import SpecSet
from reconciler.specs.sweep import SweepResource
from reconciler.tracking.spend import Spend


def hours_text(hours: float) -> str:
    """GPU-hours as people read them: `1,234.50`, and a tiny model's `3.7e-08`, not `0.00`."""
    return f"{hours:,.2f}" if hours == 0 or hours >= 0.01 else f"{hours:.2g}"


def dollars_text(dollars: float) -> str:
    return f"${dollars:,.2f}" if dollars == 0 or dollars >= 0.01 else "<$0.01"




def action_cost(specs: SpecSet, planned: Any, estimates: Mapping[ResourceId, Any],
                pricing: PricingSettings) -> tuple[float | None, float | None, bool]:
    """(GPU-hours, on-demand dollars, whether it trains) of one action."""
    if planned.resource.kind == "Sweep" and planned.action not in (Action.SUSPENDED, Action.BLOCKED):
        estimate = planned.sweep_estimate
        if estimate is None or not estimate.remaining:
            return None, None, False
        hours = estimate.total
        sweep = specs.resource(planned.resource, SweepResource)
        template = (specs.resource(ResourceId("FineTune", sweep.spec.fine_tune), FineTuneResource)
                    if sweep is not None else None)
        gpus = template is not None and template.spec.resources.gpus_per_node > 0
        price = pricing.price_of(template.spec.resources.gpu_product) if gpus and template else None
        return hours, (hours * price.on_demand if hours is not None and price is not None else None), True
    found = estimates.get(planned.resource)
    if found is None:
        return None, None, False
    hours = found.gpu_hours if found.gpus else None
    return hours, (found.dollars[0] if found.dollars is not None else None), bool(found.gpus)


@dataclass(frozen=True)
class TeamCost:
    """One team's share of a plan, what it spent this month, and its budget."""

    team: str
    owners: tuple[str, ...]
    gpu_hours: float  # this plan's, over the actions with an estimate
    dollars: float | None  # None when nothing of it is priced
    unestimated: int  # trainings without a figure
    costly: tuple[ResourceId, ...]  # the actions that train
    spent: Spend | None  # None: not read (offline, or nothing recorded yet)
    budget: TeamBudget | None
    approval: Approval | None = None
    changes: int = 0  # the plan's actions on the team's specs that do something
    unpriced: int = 0  # trainings with GPU-hours but no price

    @property
    def over_budget(self) -> str | None:
        """Why the plan takes the team over its budget; None when it does not. Trainings
        without a figure count for nothing, unless the month's spend has already reached the
        limit: then any training goes over it."""
        budget, spent = self.budget, self.spent or Spend()
        if budget is None or not self.costly:
            return None
        why = [
            _over(spent.gpu_hours, self.gpu_hours, budget.gpu_hours_per_month, hours_text, " GPU-hours",
                  self._unknown("estimated")),
            _over(spent.dollars, self.dollars or 0.0, budget.dollars_per_month, dollars_text, "",
                  self._unknown("priced")),
        ]
        return "; ".join(reason for reason in why if reason) or None

    def _unknown(self, what: str) -> str:
        missing = self.unestimated if what == "estimated" else self.unpriced
        return f", {missing} training{'s' if missing != 1 else ''} not {what}" if missing else ""

    @property
    def blocks(self) -> bool:
        return self.over_budget is not None and self.approval is None

    def plan_text(self) -> str:
        """`3.00 GPU-hours, $12.00 on demand`: what this plan trains for the team."""
        if not self.gpu_hours and self.unestimated:
            plural = "s" if self.unestimated != 1 else ""
            return f"GPU-hours not estimated ({self.unestimated} training{plural})"
        said = f"{hours_text(self.gpu_hours)} GPU-hours"
        if self.dollars is not None:
            said += f", {dollars_text(self.dollars)} on demand"
        unknown = [f"{self.unestimated} not estimated"] if self.unestimated else []
        unknown += [f"{self.unpriced} not priced"] if self.unpriced and self.dollars is not None else []
        return said + (f" ({', '.join(unknown)}; not counted)" if unknown else "")

    def spent_text(self) -> str:
        if self.spent is None:
            return "not read (offline)"
        return f"{hours_text(self.spent.gpu_hours)} GPU-hours, {dollars_text(self.spent.dollars)}"

    def budget_text(self) -> str:
        """`100.00 GPU-hours and $500.00`; empty without a budget."""
        budget = self.budget
        if budget is None:
            return ""
        limits = []
        if budget.gpu_hours_per_month is not None:
            limits.append(f"{hours_text(budget.gpu_hours_per_month)} GPU-hours")
        if budget.dollars_per_month is not None:
            limits.append(dollars_text(budget.dollars_per_month))
        return " and ".join(limits)

    def verdict(self) -> str:
        """`over budget (...): its trainings are blocked`, or who approved it; empty within budget."""
        if not self.over_budget:
            return ""
        if self.approval is not None:
            return f"over budget ({self.over_budget}), approved by {self.approval.by}: {self.approval.reason}"
        return f"over budget ({self.over_budget}): its trainings are blocked"

    def line(self) -> str:
        """`team a (@org/a): this plan 3.00 GPU-hours, $12.00 on demand; spent this month ...`"""
        owners = f" ({', '.join(self.owners)})" if self.owners else ""
        said = f"team {self.team}{owners}: this plan {self.plan_text()}; spent this month {self.spent_text()}"
        if self.budget_text():
            said += f"; budget {self.budget_text()} a month"
        return said + (f" - {self.verdict()}" if self.over_budget else "")

    def to_json(self) -> dict[str, Any]:
        return {"owners": list(self.owners), "gpu_hours": self.gpu_hours, "dollars": self.dollars,
                "not_estimated": self.unestimated, "costly": [str(rid) for rid in self.costly],
                "changes": self.changes, "not_priced": self.unpriced,
                "spent": None if self.spent is None else {"gpu_hours": self.spent.gpu_hours,
                                                          "dollars": self.spent.dollars,
                                                          "runs": self.spent.runs},
                "budget": None if self.budget is None else self.budget.model_dump(by_alias=True),
                "over_budget": self.over_budget,
                "approved_by": None if self.approval is None else self.approval.by,
                "approval_reason": None if self.approval is None else self.approval.reason}


def team_costs(specs: SpecSet, plan: Plan, estimates: Mapping[ResourceId, Any],
               spent: Mapping[str, Spend] | None, approval: Approval) -> tuple[TeamCost, ...]:
    """Every team's share of the plan (teams the plan does not touch included, for their
    spend), with the approval that lets an over-budget team through, if any."""
    settings: ProjectSettings = specs.settings
    if not settings.teams:
        return ()
    shares: dict[str, list[tuple[ResourceId, float | None, float | None]]] = {t: [] for t in settings.teams}
    changes: dict[str, int] = dict.fromkeys(settings.teams, 0)
    for planned in plan.actions:
        team = team_of(planned.resource.name)
        if team not in shares or planned.action == Action.NOOP:
            continue
        changes[team] += 1
        hours, dollars, trains = action_cost(specs, planned, estimates, settings.pricing)
        if trains:
            shares[team].append((planned.resource, hours, dollars))
    costs = []
    for team, share in shares.items():
        priced = [dollars for _, _, dollars in share if dollars is not None]
        cost = TeamCost(team, settings.teams[team].owners, sum(hours or 0.0 for _, hours, _ in share),
                        sum(priced) if priced else None, sum(1 for _, hours, _ in share if hours is None),
                        tuple(rid for rid, *_ in share),
                        None if spent is None else spent.get(team, Spend()), settings.teams[team].budget,
                        changes=changes[team], unpriced=sum(1 for _, hours, dollars in share
                                                            if hours is not None and dollars is None))
        if cost.over_budget:
            cost = replace(cost, approval=_approval(specs, approval, cost.costly))
        costs.append(cost)
    return tuple(costs)


def _approval(specs: SpecSet, approval: Approval, costly: tuple[ResourceId, ...]) -> Approval | None:
    if approval.covers(BUDGET):
        return approval
    for rid in costly:  # every training the budget would block says so in Git
        loaded = specs.get(rid)
        annotations = dict(loaded.resource.metadata.annotations) if loaded else {}
        found = annotated_approval(BUDGET, annotations, loaded.file) if loaded else None
        if found is None:
            return None
    return found if costly else None


def _over(spent: float, planned: float, limit: float | None, number: Callable[[float], str], unit: str,
          unknown: str) -> str | None:
    """Why `spent + planned` goes over `limit` (a month's GPU-hours or dollars), if it does."""
    if limit is None:
        return None
    if spent >= limit:
        return f"{number(spent)}{unit} spent this month: its {number(limit)} are used up"
    if spent + planned > limit:
        return (f"{number(spent + planned)}{unit} this month ({number(spent)} spent + {number(planned)} "
                f"planned{unknown}) > its {number(limit)}")
    return None


def budget_blocks(costs: tuple[TeamCost, ...]) -> dict[ResourceId, BudgetBlock]:
    """The actions a budget blocks: each training of a team the plan takes over it, unapproved."""
    return {rid: BudgetBlock(cost.team, f"team {cost.team}'s budget: {cost.over_budget}", BUDGET)
            for cost in costs if cost.blocks for rid in cost.costly}
