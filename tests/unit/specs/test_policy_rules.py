"""Policies: CEL rules checked by validate against the specs they match, the violation at the
spec's line, approvals from the command line and from Git, and every way a rule can be broken
reported at the policy's own line (never a silent pass)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from reconciler.graph import DependencyGraph
from reconciler.specs.policy import Approval
from reconciler.specs.problems import Problem
from reconciler.specs.validate import validate_path
from tests.conftest import API, VALID_SPECS, write_repo

PRODUCTION = f"""
{API}
kind: Policy
metadata: {{name: gated-production}}
spec:
  match: {{kinds: [Deployment], teams: ["*"]}}
  rule: "spec.alias != 'production' || (spec.requires.size() > 0 && spec.replicas >= 2)"
  message: "production deployments need two replicas and a gating evaluation"
  severity: error
"""
APPROVED = Approval(frozenset({"gated-production"}), "a demo bot", "ada@laptop (--approve)")


def policy(**replace: str) -> str:
    text = PRODUCTION
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def check(tmp_path: Path, files: dict[str, str], *, strict: bool = False,
          approval: Approval | None = None) -> list[Problem]:
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, **files})
    kwargs = {"approval": approval} if approval is not None else {}
    return list(validate_path(repo, strict=strict, **kwargs).problems)


def only(found: list[Problem], code: str) -> Problem:
    assert [p.code for p in found] == [code], "\n".join(p.text() for p in found)
    return found[0]


def deployment(extra: str) -> dict[str, str]:
    return {"deployment.yaml": textwrap.dedent(VALID_SPECS["deployment.yaml"]).rstrip() + "\n" + extra}


def test_a_violation_is_an_error_at_the_line_of_the_field_the_rule_names(tmp_path: Path):
    found = only(check(tmp_path, {"policies/production.yaml": PRODUCTION}), "policy-violated")
    assert found.severity == "error" and found.resource == "Deployment/bot"
    assert (Path(found.position.file).name, found.position.line) == ("deployment.yaml", 8)  # requires
    assert "violates Policy 'gated-production': production deployments need two replicas" in found.message
    assert "policies/production.yaml:6" in found.hint and "--approve gated-production" in found.hint


def test_a_spec_that_complies_passes(tmp_path: Path):
    assert check(tmp_path, {"policies/production.yaml": PRODUCTION, **deployment("  replicas: 2")}) == []
    staging = deployment("  alias: staging")
    assert check(tmp_path / "b", {"policies/production.yaml": PRODUCTION, **staging}) == []


def test_match_narrows_by_kind_and_name(tmp_path: Path):
    other_name = policy(**{"kinds: [Deployment]": "kinds: [Deployment], names: ['support-*']"})
    assert check(tmp_path, {"p.yaml": other_name}) == []
    rule = "spec.alias != 'production' || (spec.requires.size() > 0 && spec.replicas >= 2)"
    every_fine_tune = policy(**{"kinds: [Deployment]": "kinds: [FineTune]",
                                rule: "spec.training.learningRate <= 1.0e-4"})
    found = only(check(tmp_path / "b", {"p.yaml": every_fine_tune}), "policy-violated")
    assert found.resource == "FineTune/sft" and found.path == "spec.training.learningRate"


def test_a_warning_policy_warns_and_strict_makes_it_an_error(tmp_path: Path):
    warning = {"p.yaml": policy(**{"severity: error": "severity: warning"})}
    assert only(check(tmp_path, warning), "policy-violated").severity == "warning"
    assert only(check(tmp_path / "b", warning, strict=True), "policy-violated").severity == "error"


def test_an_approval_on_the_command_line_lets_it_through_as_a_visible_warning(tmp_path: Path):
    found = only(check(tmp_path, {"p.yaml": PRODUCTION}, approval=APPROVED, strict=True), "policy-approved")
    assert found.severity == "warning"  # even under --strict: approving it is the point
    assert found.message.endswith("approved by ada@laptop (--approve): a demo bot")
    other = Approval(frozenset({"another-policy"}), "why", "ada")
    assert only(check(tmp_path / "b", {"p.yaml": PRODUCTION}, approval=other), "policy-violated")


def test_an_approval_in_git_needs_a_reason_and_a_policy_that_exists(tmp_path: Path):
    annotated = textwrap.dedent(VALID_SPECS["deployment.yaml"]).replace(
        "  name: bot\n", "  name: bot\n  annotations:\n    tuneops.dev/approved-by: gated-production\n"
                        "    tuneops.dev/approval-reason: the demo bot needs one replica\n")
    assert annotated != VALID_SPECS["deployment.yaml"]
    found = only(check(tmp_path, {"p.yaml": PRODUCTION, "deployment.yaml": annotated}), "policy-approved")
    assert "deployment.yaml: the demo bot needs one replica" in found.message, found.message
    unexplained = annotated.replace("    tuneops.dev/approval-reason: the demo bot needs one replica\n", "")
    found = check(tmp_path / "b", {"p.yaml": PRODUCTION, "deployment.yaml": unexplained})
    codes = sorted(p.code for p in found)
    assert codes == ["approval-without-reason", "policy-violated"]
    typo = annotated.replace("approved-by: gated-production",
                             "approved-by: gated-production, gatedproduction")
    found = check(tmp_path / "c", {"p.yaml": PRODUCTION, "deployment.yaml": typo})
    unknown = next(p for p in found if p.code == "approval-of-unknown-policy")
    assert "'gatedproduction'" in unknown.message and "gated-production" in (unknown.hint or "")


@pytest.mark.parametrize("rule, code, message", [
    ("spec.alias == ", "policy-rule-invalid", "the rule does not compile: "),
    ("plan.gpuHours < 10.0 || spec.replicas > 1", "policy-rule-invalid", "reads plan, spec: a rule is about"),
    ("plan.gpuHour < 10.0", "policy-unknown-field", "names plan.gpuHour, which the plan does not have "
                                                    "(did you mean 'gpuHours'?"),
    ("nope == 1", "policy-rule-invalid", "reads nope, which is not defined"),
    ("spec.replica >= 2", "policy-unknown-field",
     "names spec.replica, which no Deployment has (did you mean 'replicas'?)"),
    ("metadata.labels.team == 'nlp'", "policy-rule-failed", "deployment.yaml:4): no such key 'team'"),
    ("spec.replicas", "policy-rule-failed", "the rule gave 1, not true or false"),
    ("spec.replicas / 0 == 1", "policy-rule-failed", "failed on Deployment/bot"),
    ("'a' + 1 == 'a1'", "policy-rule-failed", "CEL does not coerce between types"),
    # what a comment or a string holds is not read as a field, and does not hide one
    ("kind == 'Deployment' // don't\n || spec.replica == 3 // it's", "policy-unknown-field",
     "names spec.replica"),
    ("spec.replicas >= 2 // spec.foo.bar is not read", "policy-violated", "violates Policy"),
    ("r'\\' == 'x' || spec.replica == 1", "policy-unknown-field", "names spec.replica"),
    # a macro's variable is bound inside its parentheses only
    ("spec.requires.exists(plan, plan == 'x') || plan.gpuHours < 10.0", "policy-rule-invalid",
     "reads plan, spec: a rule is about the whole plan (plan) or about one spec"),
    ("[1, 2].all(a, [3].all(b, [4].all(c, a + b + c > 0)))", "policy-rule-invalid", "loops nest 3 deep"),
    (" && ".join(["spec.alias != 'x'"] * 40) + " && spec.replicas >", "policy-rule-invalid",
     "Syntax error: mismatched input '<EOF>'"),
])
def test_a_broken_rule_is_an_error_at_the_policys_line(tmp_path: Path, rule: str, code: str, message: str):
    text = policy(**{"\"spec.alias != 'production' || (spec.requires.size() > 0 && spec.replicas >= 2)\"":
                     json.dumps(rule)})
    found = only(check(tmp_path, {"p.yaml": text}), code)
    if code == "policy-violated":  # a sound rule: the violation is the spec's
        assert found.resource == "Deployment/bot"
        return
    assert found.severity == "error" and found.resource == "Policy/gated-production"
    assert (Path(found.position.file).name, found.position.line) == ("p.yaml", 6)
    assert message in found.message, found.message
    assert "Traceback" not in found.text()


def test_match_teams_other_than_every_team_is_refused_until_teams_exist(tmp_path: Path):
    found = check(tmp_path, {"p.yaml": policy(**{'teams: ["*"]': "teams: [nlp]"})})
    assert [p.code for p in found] == ["policy-unknown-team"], [p.text() for p in found]
    assert "no team 'nlp'" in found[0].message and "defines no teams" in (found[0].hint or "")
    assert found[0].severity == "error" and found[0].path.startswith("spec.match.teams")


def test_a_policy_is_checked_not_built(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "p.yaml": PRODUCTION.replace("severity: error",
                                                                                      "severity: warning")})
    result = validate_path(repo)
    assert result.valid
    assert all(rid.kind != "Policy" for rid in DependencyGraph.from_specs(result.specs).order)


@pytest.mark.parametrize("match, field", [("kinds: [], teams: ['*']", "kinds"),
                                          ("kinds: [Deployment], names: []", "names")])
def test_a_match_that_matches_nothing_is_refused(tmp_path: Path, match: str, field: str):
    found = check(tmp_path, {"p.yaml": policy(**{'kinds: [Deployment], teams: ["*"]': match})})
    assert len(found) == 1 and found[0].severity == "error", [p.text() for p in found]
    assert found[0].path == f"spec.match.{field}"


def test_a_kind_listed_twice_reports_each_violation_once(tmp_path: Path):
    twice = policy(**{"kinds: [Deployment]": "kinds: [Deployment, Deployment]"})
    assert only(check(tmp_path, {"p.yaml": twice}), "policy-violated")


def test_an_approval_of_an_undefined_policy_on_the_command_line_is_a_usage_error(tmp_path: Path):
    from click.testing import CliRunner

    from reconciler.cli.main import cli

    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "p.yaml": PRODUCTION})
    typo = CliRunner().invoke(cli, ["validate", str(repo), "--approve", "gated-productio", "--reason", "x"])
    assert typo.exit_code == 2 and "no Policy named 'gated-productio' (did you mean 'gated-production'?)" \
        in typo.output
    unexplained = CliRunner().invoke(cli, ["validate", str(repo), "--approve", "gated-production"])
    assert unexplained.exit_code == 2 and "--approve needs --reason" in unexplained.output
    approved = CliRunner().invoke(cli, ["validate", str(repo), "--approve", "gated-production",
                                        "--reason", "x"])
    assert approved.exit_code == 0, approved.output


def test_a_rule_about_the_plan_is_checked_by_the_plan_not_against_the_specs(tmp_path: Path):
    rule = "spec.alias != 'production' || (spec.requires.size() > 0 && spec.replicas >= 2)"
    plan_rule = "plan.gpuHours < 1.0 && plan.actions.all(a, a.kind != 'Sweep')"
    about_the_plan = policy(**{json.dumps(rule): json.dumps(plan_rule)})
    matched = only(check(tmp_path, {"p.yaml": about_the_plan}), "policy-rule-invalid")
    assert matched.severity == "warning" and "kinds and names do not apply" in matched.message
    unmatched = about_the_plan.replace('  match: {kinds: [Deployment], teams: ["*"]}\n', "")
    assert unmatched != about_the_plan
    assert check(tmp_path / "b", {"p.yaml": unmatched}) == []
    per_team = about_the_plan.replace('match: {kinds: [Deployment], teams: ["*"]}', 'match: {teams: ["*"]}')
    assert check(tmp_path / "c", {"p.yaml": per_team}) == []  # teams say which teams' shares it checks
