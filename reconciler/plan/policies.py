"""Policies about the whole plan: a Policy whose rule reads `plan` is checked once per plan,
against what it would do (its actions with their estimated GPU-hours and dollars, and the
totals), where CI reviews a pull request and again before apply runs it. A violation of an
`error` policy stops the apply unless approved, like a violation by a spec (specs/rules/policies.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.plan.plan import Action, Plan
from reconciler.specs.base import ResourceId
from reconciler.specs.cel import CelError, compile_rule, evaluate
from reconciler.specs.policy import Approval, PolicyResource
from reconciler.specs.rules.policies import is_plan_rule
from reconciler.specs.specset import SpecSet


@dataclass(frozen=True)
class PlanPolicyResult:
    """A plan-level policy the plan breaks (or that failed on it), and what lets it through."""

    policy: str
    where: str  # the policy's rule: "policies/budget.yaml:7"
    message: str
    severity: str  # "error" | "warning"
    approval: Approval | None = None

    @property
    def stops_apply(self) -> bool:
        return self.severity == "error" and self.approval is None

    def text(self) -> str:
        said = f"{self.where} {self.severity if self.approval is None else 'warning'}: {self.message}"
        if self.approval is not None:
            said += f"; approved by {self.approval.by}: {self.approval.reason}"
        elif self.severity == "error":
            said += f" (to let this through: --approve {self.policy} --reason '...')"
        return said


def plan_variable(plan: Plan, estimates: Mapping[ResourceId, Any]) -> dict[str, Any]:
    """What a plan-level rule sees: the actions that do something, each with the planner's
    GPU-hours and on-demand dollars where known (null otherwise), and the totals."""
    actions = []
    hours_total, dollars_total, priced = 0.0, 0.0, False
    for planned in plan.actions:
        if planned.action == Action.NOOP:
            continue
        found = estimates.get(planned.resource)
        hours = found.gpu_hours if found is not None and found.gpus else None
        dollars = found.dollars[0] if found is not None and found.dollars is not None else None
        hours_total += hours or 0.0
        if dollars is not None:
            dollars_total, priced = dollars_total + dollars, True
        actions.append({"kind": planned.resource.kind, "name": planned.resource.name,
                        "action": str(planned.action), "reason": planned.reason,
                        "gpuHours": hours, "dollars": dollars})
    return {"actions": actions, "gpuHours": hours_total, "dollars": dollars_total if priced else None,
            "team": None}


def check_plan_policies(specs: SpecSet, approval: Approval, plan: Plan,
                        estimates: Mapping[ResourceId, Any]) -> tuple[PlanPolicyResult, ...]:
    """The plan-level policies this plan breaks, or whose rule failed on it (an error)."""
    found = []
    variables: dict[str, Any] | None = None
    for loaded in specs.of_kind("Policy"):
        policy = loaded.resource
        assert isinstance(policy, PolicyResource)
        try:
            compiled = compile_rule(policy.spec.rule)
        except CelError:
            continue  # validation reported it, and the plan was not made
        if not is_plan_rule(compiled):
            continue
        variables = variables or {"plan": plan_variable(plan, estimates), "team": None}
        where = f"{loaded.file}:{loaded.position(('spec', 'rule')).line}"
        try:
            complies = evaluate(compiled, variables)
        except CelError as error:
            found.append(PlanPolicyResult(policy.name, where, f"Policy '{policy.name}' failed on the plan: "
                                          f"{error}", "error"))
            continue
        if not complies:
            approved = approval if approval.covers(policy.name) else None
            found.append(PlanPolicyResult(policy.name, where, f"the plan violates Policy '{policy.name}': "
                                          f"{policy.spec.message}", policy.spec.severity, approved))
    return tuple(found)
