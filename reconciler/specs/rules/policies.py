"""Policies: each Policy's CEL rule checked against every spec it matches.

A violation is reported at the violating spec's file and line (the line of the first field the
rule names that the spec writes), with the policy's message and severity. It is let through,
as a warning that stays visible, when approved: on the command line (`--approve POLICY
--reason ...`, as CI does for a pull-request label) or in Git, by the spec's annotations
`tuneops.dev/approved-by: POLICY` and `tuneops.dev/approval-reason: ...`.

A rule that does not compile, reads a variable or a field that does not exist, fails on a spec
or gives something other than true or false is an error at the policy's own line: never a
silent pass.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel as PydanticModel

from reconciler.specs.base import APPROVAL_REASON, APPROVED_BY, Metadata, bare_name, team_of
from reconciler.specs.builtin_policies import BUILTIN_PREFIX, BuiltinPolicy
from reconciler.specs.cel import CelError, CompiledRule, compile_rule, evaluate
from reconciler.specs.kinds import KINDS
from reconciler.specs.loader import LoadedSpec
from reconciler.specs.policy import Approval, PolicyResource, annotated_approval
from reconciler.specs.problems import Problem
from reconciler.specs.rules.registry import ERROR, WARNING, RuleContext, problem, rule
from reconciler.specs.schema_errors import suggest
from reconciler.specs.specset import SpecSet

VARIABLES = ("spec", "metadata", "kind", "name", "team")  # what a rule about one spec sees
# What a rule about the whole plan sees: `plan`, checked by every plan (plan/policies.py).
PLAN_VARIABLES = ("plan",)
PLAN_FIELDS = ("actions", "gpuHours", "dollars", "team")
PLAN_ACTION_FIELDS = ("kind", "name", "action", "reason", "gpuHours", "dollars")
APPROVED = "policy-approved"  # the code of an approved violation: a warning, even under --strict
VIOLATED = "policy-violated"
POLICY_CODES = (APPROVED, VIOLATED)


@dataclass(frozen=True)
class Violation:
    """A spec that breaks a policy, and the approval that lets it through (None: not approved)."""

    policy: LoadedSpec
    target: LoadedSpec
    path: tuple[str, ...]  # where in the target the violation is shown
    approval: Approval | None


@dataclass(frozen=True)
class Checked:
    """One policy checked against the specs it matches: each rule is run once per spec."""

    policy: LoadedSpec
    problem: Problem | None  # the rule is unusable, or failed on a spec (the first one)
    violations: tuple[Violation, ...] = ()


@rule
def policies_hold(ctx: RuleContext) -> Iterator[Problem]:
    for checked in checked_policies(ctx):
        if checked.problem is not None:
            yield checked.problem
        for violation in checked.violations:
            yield _reported(violation)


def violations(ctx: RuleContext) -> list[Violation]:
    """Each spec that breaks a policy whose rule is sound, in the order policies and specs load."""
    return [violation for checked in checked_policies(ctx) for violation in checked.violations]


def checked_policies(ctx: RuleContext) -> Iterator[Checked]:
    for spec in ctx.specs.policies():
        policy = spec.resource
        assert isinstance(policy, PolicyResource)
        compiled = _compiled(spec, policy)
        if isinstance(compiled, Problem):
            yield Checked(spec, compiled)
            continue
        if is_plan_rule(compiled):  # checked against each plan, not against the specs
            ignored = None
            if "match" in policy.spec.model_fields_set and policy.spec.match.model_fields_set - {"teams"}:
                ignored = problem(spec, WARNING, "policy-rule-invalid",
                                  "spec.match's kinds and names do not apply to a rule about the whole plan: "
                                  "it is checked once per plan (per team, of the teams it matches)",
                                  ("spec", "match"), key=True)
            yield Checked(spec, ignored)
            continue
        found: list[Violation] = []
        failed = None
        for target in _targets(ctx, policy):
            try:
                complies = evaluate(compiled, policy_variables(target))
            except CelError as error:
                line = target.position(("metadata", "name")).line
                failed = problem(spec, ERROR, "policy-rule-failed",
                                 f"the rule failed on {target.id} ({target.file}:{line}): {error}",
                                 ("spec", "rule"), hint="a rule must give true or false for every spec it "
                                                        "matches: narrow spec.match, or guard the field "
                                                        "(an unset optional field is null: x == null || ...; "
                                                        "a map key: 'k' in m)")
                break
            if not complies:
                found.append(Violation(spec, target, _shown_path(target, compiled),
                                       _approval(ctx, policy.name, target)))
        yield Checked(spec, failed, tuple(found) if failed is None else ())


def _compiled(spec: LoadedSpec, policy: PolicyResource) -> CompiledRule | Problem:
    """The policy's compiled rule, or the problem that makes it unusable."""
    try:
        compiled = compile_rule(policy.spec.rule)
    except CelError as error:
        return problem(spec, ERROR, "policy-rule-invalid", f"the rule does not compile: {error}",
                       ("spec", "rule"))
    unknown = sorted(compiled.variables - set(VARIABLES) - set(PLAN_VARIABLES))
    if unknown:
        return problem(spec, ERROR, "policy-rule-invalid",
                       f"the rule reads {', '.join(unknown)}, which is not defined: a rule about a spec "
                       f"sees {', '.join(VARIABLES)}; a rule about the plan sees plan", ("spec", "rule"))
    if is_plan_rule(compiled) and compiled.variables - set(PLAN_VARIABLES) - {"team"}:
        both = ", ".join(sorted(compiled.variables - {"team"}))
        return problem(spec, ERROR, "policy-rule-invalid",
                       f"the rule reads {both}: a rule is about the whole plan (plan) or about one spec "
                       f"({', '.join(VARIABLES)}), not both", ("spec", "rule"))
    for path in compiled.paths:
        missing = _missing_plan_field(path) if path[0] == "plan" else _missing_field(policy, path)
        if missing is not None:
            return problem(spec, ERROR, "policy-unknown-field", missing, ("spec", "rule"))
    return compiled


def is_plan_rule(compiled: CompiledRule) -> bool:
    return "plan" in compiled.variables


def _missing_plan_field(path: tuple[str, ...]) -> str | None:
    if len(path) > 1 and path[1] not in PLAN_FIELDS:
        return (f"the rule names {'.'.join(path)}, which the plan does not have "
                f"({_did_you_mean(path[1], list(PLAN_FIELDS), 'fields')}; each of plan.actions has "
                f"{', '.join(PLAN_ACTION_FIELDS)})")
    return None


def _reported(violation: Violation) -> Problem:
    policy = violation.policy.resource
    assert isinstance(policy, PolicyResource)
    text = f"violates Policy '{policy.name}': {policy.spec.message}"
    approval = violation.approval
    if approval is not None:
        return problem(violation.target, WARNING, "policy-approved",
                       f"{text}; approved by {approval.by}: {approval.reason}", violation.path)
    where = violation.policy.where() if isinstance(violation.policy, BuiltinPolicy) else \
        f"rule at {violation.policy.file}:{violation.policy.position(('spec', 'rule')).line}"
    found = problem(violation.target, ERROR, "policy-violated", text, violation.path,
                    hint=f"{where}: `{_short(policy.spec.rule)}`; "
                         f"to let this through, approve it: --approve {policy.name} --reason '...', "
                         f"or the annotations {APPROVED_BY}: {policy.name} and {APPROVAL_REASON}")
    return found if policy.spec.severity == "error" else replace(found, severity=WARNING)


def _targets(ctx: RuleContext, policy: PolicyResource) -> Iterator[LoadedSpec]:
    for kind in dict.fromkeys(policy.spec.match.kinds):  # a kind listed twice is checked once
        for spec in ctx.specs.of_kind(kind):
            if policy.spec.match.matches(kind, spec.resource.name):
                yield spec


def policy_variables(target: LoadedSpec) -> dict[str, Any]:
    """What a rule sees of a spec: its spec with every default, fields named as written."""
    resource = target.resource
    spec = getattr(resource, "spec", None)
    metadata = resource.metadata.model_dump(mode="json", by_alias=True)
    metadata["name"] = bare_name(resource.name)  # as written; the team is `team`
    return {
        "spec": spec.model_dump(mode="json", by_alias=True) if spec is not None else {},
        "metadata": metadata, "kind": resource.KIND, "name": metadata["name"],
        "team": team_of(resource.name),
    }


def _shown_path(target: LoadedSpec, compiled: CompiledRule) -> tuple[str, ...]:
    """The first field the rule names that the spec writes; else the spec's name."""
    for path in compiled.paths:
        if path[0] in ("spec", "metadata") and target.document.has(path):
            return path
    return ("metadata", "name")


def _approval(ctx: RuleContext, policy: str, target: LoadedSpec) -> Approval | None:
    if ctx.approval.covers(policy):
        return ctx.approval
    return annotated_approval(policy, target.resource.metadata.annotations, target.file)


BUDGET = "budget"  # a team budget is approved as a policy of this name (plan/costs.py)


@rule
def builtin_names_are_reserved(ctx: RuleContext) -> Iterator[Problem]:
    """`builtin-` names the policies tuneops.yaml's settings make, and `budget` the teams' budgets:
    a Policy of such a name would be approved, and read in history, as one of them."""
    for spec in ctx.specs.of_kind("Policy"):
        if spec.resource.name.startswith(BUILTIN_PREFIX):
            yield problem(spec, ERROR, "policy-rule-invalid",
                          f"Policy names starting with {BUILTIN_PREFIX!r} are the built-in policies' (the "
                          "policy: settings of tuneops.yaml)", ("metadata", "name"),
                          hint="give the Policy another name")
        elif spec.resource.name == BUDGET and has_budgets(ctx.specs):
            yield problem(spec, ERROR, "policy-rule-invalid",
                          f"'{BUDGET}' is what a team's budget is approved as (--approve {BUDGET}): a Policy "
                          "of that name would be approved with it", ("metadata", "name"),
                          hint="give the Policy another name")


def has_budgets(specs: SpecSet) -> bool:
    return any(team.budget is not None for team in specs.settings.teams.values())


def approvable(specs: SpecSet) -> set[str]:
    """What `--approve` and tuneops.dev/approved-by may name: the Policies, and `budget` where a
    team has one."""
    return {policy.resource.name for policy in specs.policies()} | ({BUDGET} if has_budgets(specs) else set())


@rule
def approvals_are_explained(ctx: RuleContext) -> Iterator[Problem]:
    """An approval in Git says why, and names policies that exist."""
    policies = approvable(ctx.specs)
    for spec in ctx.specs:
        annotations = spec.resource.metadata.annotations
        if APPROVED_BY not in annotations:
            continue
        path = ("metadata", "annotations", APPROVED_BY)
        if not annotations.get(APPROVAL_REASON, "").strip():
            yield problem(spec, ERROR, "approval-without-reason",
                          f"{APPROVED_BY} approves a violation without saying why", path,
                          hint=f"add {APPROVAL_REASON}: <why this exception is acceptable>")
        named = [n.strip() for n in annotations[APPROVED_BY].split(",")]
        if not any(named):
            choices = ", ".join(sorted(policies))
            yield problem(spec, ERROR, "approval-of-unknown-policy", f"{APPROVED_BY} names no Policy", path,
                          hint=f"name the policies it approves, comma-separated: {choices}" if policies
                          else "no Policy is defined: remove the annotation")
            continue
        for name in sorted(set(named) - policies - {""}):
            yield problem(spec, WARNING, "approval-of-unknown-policy",
                          f"{APPROVED_BY} names Policy '{name}', which is not defined", path,
                          hint=_did_you_mean(name, sorted(policies), "policies"))


def _missing_field(policy: PolicyResource, path: tuple[str, ...]) -> str | None:
    """What is wrong when `path` (spec.x.y or metadata.x) names a field that no kind the policy
    matches has; free-form maps (labels, annotations) are not checked below their name."""
    root = path[0]
    if root not in ("spec", "metadata"):
        return None
    missing: list[str] = []
    for kind in policy.spec.match.kinds:
        model: Any = Metadata if root == "metadata" else KINDS[kind].model_fields["spec"].annotation
        found = _walk(model, path[1:])
        if found is None:
            return None
        missing = found
    part, *fields = missing
    kinds = " or ".join(dict.fromkeys(policy.spec.match.kinds))
    return f"the rule names {'.'.join(path)}, which no {kinds} has ({_did_you_mean(part, fields, 'fields')})"


def _walk(model: Any, parts: tuple[str, ...]) -> list[str] | None:
    """None when the path exists in the model (or leaves it for a free-form value); else
    [the missing part, then the fields that were there to choose from]."""
    current = model
    for part in parts:
        current = _model_class(current)
        if current is None:
            return None  # a map, a list or a scalar: not checked further
        fields = {info.alias or name: info for name, info in current.model_fields.items()}
        if part not in fields:
            return [part, *sorted(fields)]
        current = fields[part].annotation
    return None


def _model_class(annotation: Any) -> type[PydanticModel] | None:
    """The pydantic model an annotation holds (through Optional and Annotated), else None."""
    if isinstance(annotation, type) and issubclass(annotation, PydanticModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_class(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        models = [m for m in (_model_class(a) for a in typing.get_args(annotation)) if m is not None]
        return models[0] if len(models) == 1 else None
    return None


def _did_you_mean(word: str, options: list[str], what: str) -> str:
    listed = f"{what}: {', '.join(options)}" if options else f"no {what} are defined"
    return suggest(word, options) or listed


def _short(text: str, limit: int = 160) -> str:
    """The rule on one line, cut to what a hint can show."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
