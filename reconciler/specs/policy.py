"""`Policy`: a rule every matching spec must satisfy, written in CEL (the language of
Kubernetes' ValidatingAdmissionPolicy), checked by `validate` and so by every plan, every CI run
and the daemon before it applies.

Only the spec lives here (pure): what a policy matches, its rule, its message and severity, and
how a violation is approved. The rule is compiled and evaluated by specs/rules/policies.py.
"""

from __future__ import annotations

import fnmatch
import typing
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from reconciler.specs.base import (
    APPROVAL_REASON,
    APPROVED_BY,
    Resource,
    SpecModel,
    Str,
    bare_name,
    field,
    team_of,
)

POLICY_KIND = "Policy"
MAX_RULE_LENGTH = 4096


# The kinds a policy may match: every spec kind but Policy itself.
MatchableKind = Literal["Dataset", "BaseModel", "FineTune", "Evaluation", "Sweep", "Deployment"]
MATCHABLE_KINDS: tuple[str, ...] = typing.get_args(MatchableKind)


class PolicyMatch(SpecModel):
    kinds: tuple[MatchableKind, ...] = field(
        MATCHABLE_KINDS, "The kinds of spec the rule applies to (default: all).",
        example=["Deployment"], min_length=1)
    names: tuple[Annotated[Str, Field(min_length=1, max_length=253)], ...] = field(
        ("*",), "Glob patterns of the names it applies to (default: every name).",
        example=["support-*"], min_length=1)
    teams: tuple[Annotated[Str, Field(min_length=1, max_length=63)], ...] = field(
        ("*",), "The teams (of tuneops.yaml) whose specs it applies to; `*`: every spec.",
        example=["*"], min_length=1)

    def matches(self, kind: str, name: str) -> bool:
        """Names are matched as written (`support-*`) and with their team (`nlp.*`)."""
        if kind not in self.kinds:
            return False
        team, bare = team_of(name), bare_name(name)
        return (("*" in self.teams or team in self.teams)
                and any(fnmatch.fnmatchcase(bare, p) or fnmatch.fnmatchcase(name, p) for p in self.names))

    def covers_team(self, team: str | None) -> bool:
        return "*" in self.teams or team in self.teams


class PolicySpec(SpecModel):
    match: PolicyMatch = field(default_factory=PolicyMatch,
                               doc="Which specs the rule applies to (default: every spec).")
    rule: Annotated[Str, Field(min_length=1, max_length=MAX_RULE_LENGTH)] = field(
        doc="A CEL expression that is true for a spec that complies. It sees `spec` (the spec with "
            "its defaults, fields as written: camelCase), `metadata`, `kind`, `name` and `team`.",
        example="spec.alias != 'production' || (spec.requires.size() > 0 && spec.replicas >= 2)")
    message: Annotated[Str, Field(min_length=1, max_length=1024)] = field(
        doc="What a violation means and what to do, shown with the spec's file and line.",
        example="production deployments need two replicas and a gating evaluation")
    severity: Literal["error", "warning"] = field(
        "error", "`error` fails validate, plan and apply; `warning` is shown and passes.")


class PolicyResource(Resource):
    """A rule in CEL that the specs it matches must satisfy."""

    KIND: ClassVar[str] = POLICY_KIND
    kind: Literal["Policy"] = field(doc="`Policy`.")
    spec: PolicySpec = field(doc="What it matches, the rule, and what a violation says.")


@dataclass(frozen=True)
class Approval:
    """Violations of these policies let through by the command line (`--approve POLICY`, as a
    pull-request label would ask), with who approved them and why."""

    policies: frozenset[str] = frozenset()
    reason: str = ""
    by: str = ""

    def covers(self, policy: str) -> bool:
        return policy in self.policies


NO_APPROVAL = Approval()


def annotated_approval(policy: str, annotations: dict[str, str], file: str) -> Approval | None:
    """The approval a spec's annotations give `policy` (tuneops.dev/approved-by naming it, with
    tuneops.dev/approval-reason saying why), else None: an approval without a reason is none."""
    named = {name.strip() for name in annotations.get(APPROVED_BY, "").split(",")}
    reason = annotations.get(APPROVAL_REASON, "").strip()
    if policy in named and reason:
        return Approval(frozenset({policy}), reason, f"the annotation {APPROVED_BY} in {file}")
    return None
