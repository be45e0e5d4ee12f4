"""Policies about the whole plan: a Policy whose rule reads `plan` is checked once per plan,
against what it would do (its actions with their estimated GPU-hours and dollars, and the
totals), where CI reviews a pull request and again before apply runs it. A violation of an
`error` policy stops the apply unless approved, like a violation by a spec (specs/rules/policies.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.config import PricingSettings
from reconciler.plan.costs import action_cost
from reconciler.plan.plan import Action, Plan
from reconciler.specs.base import APPROVAL_REASON, APPROVED_BY, ResourceId, team_of
from reconciler.specs.cel import CelError, compile_rule, evaluate
from reconciler.specs.policy import Approval, PolicyResource, annotated_approval
from reconciler.specs.rules.policies import is_plan_rule
from reconciler.specs.specset import SpecSet

# CEL's words when a value in an operation is null (or of another type).
_NO_OVERLOAD = "No such overload"


@dataclass(frozen=True)
class PlanPolicyResult:
    """A plan-level policy the plan breaks, or whose rule failed on it, and what lets it through."""

    policy: str
    where: str  # the policy's rule: "policies/budget.yaml:7"
    message: str
    severity: str  # "error" | "warning", the policy's
    approval: Approval | None = None
    failed: bool = False  # the rule itself failed: only fixing it helps, no approval

    @property
    def stops_apply(self) -> bool:
        return self.severity == "error" and self.approval is None

    def text(self) -> str:
        said = f"{self.where} {self.severity if self.approval is None else 'warning'}: {self.message}"
        if self.approval is not None:
            said += f"; approved by {self.approval.by}: {self.approval.reason}"
        elif self.failed:
            said += " (fix the rule: it must give true or false for every plan)"
        elif self.severity == "error":
            said += (f" (to let this through: --approve {self.policy} --reason '...', or the annotations "
                     f"{APPROVED_BY}: {self.policy} and {APPROVAL_REASON} on a spec the plan changes)")
        return " ".join(said.split())


def plan_variable(specs: SpecSet, plan: Plan, estimates: Mapping[ResourceId, Any],
                  pricing: PricingSettings, team: str | None = None) -> dict[str, Any]:
    """What a plan-level rule sees: the actions that do something, each with the planner's
    GPU-hours and on-demand dollars where known (null otherwise: `unestimated` counts the
    trainings without a figure), and the totals. A Sweep counts its remaining trials. In a
    project with teams, a rule is checked once per team, on that team's share of the plan."""
    actions = []
    hours_total, dollars_total, priced, unestimated = 0.0, 0.0, False, 0
    for planned in plan.actions:
        if planned.action == Action.NOOP or (team is not None and team_of(planned.resource.name) != team):
            continue
        hours, dollars, trains = action_cost(specs, planned, estimates, pricing)
        unestimated += trains and hours is None
        hours_total += hours or 0.0
        if dollars is not None:
            dollars_total, priced = dollars_total + dollars, True
        actions.append({"kind": planned.resource.kind, "name": planned.resource.name,
                        "action": str(planned.action), "reason": planned.reason,
                        "gpuHours": hours, "dollars": dollars})
    return {"actions": actions, "gpuHours": hours_total, "dollars": dollars_total if priced else None,
            "unestimated": unestimated, "team": team}


def check_plan_policies(specs: SpecSet, approval: Approval, plan: Plan, estimates: Mapping[ResourceId, Any],
                        ) -> tuple[PlanPolicyResult, ...]:
    """The plan-level policies this plan breaks, or whose rule failed on it. A plan that does
    nothing is not checked: there is nothing to let through."""
    if not plan.has_changes and not any(a.action == Action.WAIT for a in plan.actions):
        return ()
    found = []
    teams: list[str | None] = list(specs.settings.teams) or [None]
    variables: dict[str | None, dict[str, Any]] = {}
    for loaded in specs.policies():
        policy = loaded.resource
        assert isinstance(policy, PolicyResource)
        try:
            compiled = compile_rule(policy.spec.rule)
        except CelError:
            continue  # validation reported it, and the plan was not made
        if not is_plan_rule(compiled):
            continue
        for team in teams:
            if team is not None and not policy.spec.match.covers_team(team):
                continue
            if team not in variables:
                share = plan_variable(specs, plan, estimates, specs.settings.pricing, team)
                variables[team] = {"plan": share, "team": team}
            result = _checked(loaded, policy, compiled, variables[team], team, specs, approval, plan)
            if result is not None:
                found.append(result)
    return tuple(found)


def _checked(loaded: Any, policy: PolicyResource, compiled: Any, variables: dict[str, Any], team: str | None,
             specs: SpecSet, approval: Approval, plan: Plan) -> PlanPolicyResult | None:
    """The result of one plan-level rule on the plan (or one team's share): None when it holds."""
    where = f"{loaded.file}:{loaded.position(('spec', 'rule')).line}"
    of = f" (team {team}'s share)" if team is not None else ""
    try:
        complies = evaluate(compiled, variables)
    except CelError as error:
        why = str(error)
        if _NO_OVERLOAD in why:
            why = ("a value it compares is null or of another type (plan.dollars is null when nothing "
                   "is priced, an action's gpuHours and dollars when it trains nothing: test for null "
                   "first)")
        return PlanPolicyResult(policy.name, where, f"Policy '{policy.name}' failed on the plan{of}: {why}",
                                policy.spec.severity, failed=True)
    if complies:
        return None
    return PlanPolicyResult(policy.name, where, f"the plan{of} violates Policy '{policy.name}': "
                            f"{policy.spec.message}", policy.spec.severity,
                            _approval(specs, approval, policy.name, plan))


def _approval(specs: SpecSet, approval: Approval, policy: str, plan: Plan) -> Approval | None:
    """The command line's approval, else the annotations of a spec this plan changes."""
    if approval.covers(policy):
        return approval
    for planned in plan.actions:
        if not planned.is_change:
            continue
        loaded = specs.get(planned.resource)
        found = (annotated_approval(policy, loaded.resource.metadata.annotations, loaded.file)
                 if loaded is not None else None)
        if found is not None:
            return found
    return None
