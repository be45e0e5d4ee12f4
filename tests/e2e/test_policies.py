"""A Policy as a team would use it: `validate` refuses the violating spec at its line, `plan
--approve` lets it through showing who approved it and why, and the apply records the override
in MLflow, where `tuneops history Policy/NAME` reads it back. Real MLflow, a real Git repository,
a real dataset job."""

from __future__ import annotations

import json

from tests.support.reconcile_support import SpecRepo

HELD_OUT = """\
apiVersion: tuneops.dev/v1alpha1
kind: Policy
metadata:
  name: enough-test-rows
spec:
  match: {kinds: [Dataset]}
  rule: "spec.split.test >= 0.2"
  message: "hold out at least a fifth of the rows to test on"
"""


def test_a_violation_is_refused_then_approved_and_the_override_recorded(tmp_path, mlflow_server):
    repo = SpecRepo(tmp_path / "specs", mlflow_server.uri)
    (repo.root / "policies").mkdir()
    (repo.root / "policies" / "held-out.yaml").write_text(HELD_OUT)
    commit = repo.commit("policy: hold out a fifth of the rows")

    refused = repo.tuneops("validate", ".")
    assert refused.exit_code == 1
    assert "dataset.yaml:14:11 error spec.split.test: violates Policy 'enough-test-rows': hold out at " \
           "least a fifth of the rows to test on" in refused.stdout, refused.stdout
    assert "Traceback" not in refused.output
    not_planned = repo.tuneops("plan", ".", "--offline")
    assert not_planned.exit_code == 1 and "nothing was planned" in not_planned.stderr

    why = "36 rows: a fifth would leave too little to train on"
    env = {"TUNEOPS_APPLIED_BY": "ada"}
    planned = repo.tuneops("plan", ".", "--approve", "enough-test-rows", "--reason", why, "--format", "json",
                           env=env)
    assert planned.exit_code == 0, planned.output
    shown = json.loads(planned.stdout)["warnings"]
    assert any("violates Policy 'enough-test-rows'" in line and f"approved by ada (--approve): {why}" in line
               for line in shown), shown
    markdown = repo.tuneops("plan", ".", "--approve", "enough-test-rows", "--reason", why,
                            "--format", "markdown", env=env).stdout
    assert "approved by ada (--approve)" in markdown  # the pull-request comment says so too

    applied = repo.tuneops("apply", ".", "--yes", "--target", "Dataset/fruit-colors",
                           "--approve", "enough-test-rows", "--reason", why, env=env)
    assert applied.exit_code == 0, applied.output
    again = repo.tuneops("apply", ".", "--yes", "--target", "Dataset/fruit-colors",
                         "--approve", "enough-test-rows", "--reason", why, env=env)
    assert again.exit_code == 0 and "Nothing to do" in again.stdout  # recorded once, not per apply
    history = repo.tuneops("history", "Policy/enough-test-rows", "--format", "json")
    assert history.exit_code == 0, history.output
    (override,) = json.loads(history.stdout)["overrides"]
    assert override["resource"] == "Dataset/fruit-colors" and override["where"].endswith("dataset.yaml:14")
    assert (override["approved_by"], override["reason"], override["commit"], override["applied_by"]) == \
        ("ada (--approve)", why, commit, "ada")
    assert "approved by ada (--approve): 36 rows" in repo.tuneops("history", "Policy/enough-test-rows").stdout


SMALL_PLANS = """\
apiVersion: tuneops.dev/v1alpha1
kind: Policy
metadata:
  name: small-plans
spec:
  rule: >-
    plan.actions.filter(a, a.action == 'create').size() <= 3
    && (plan.dollars == null || plan.dollars < 100.0)
  message: "a change creates at most 3 things"
"""


def test_a_rule_about_the_whole_plan_stops_the_apply_until_approved(tmp_path):
    repo = SpecRepo(tmp_path / "specs", None)
    (repo.root / "policies").mkdir()
    (repo.root / "policies" / "small.yaml").write_text(SMALL_PLANS)
    repo.commit("policy: small plans")
    assert repo.tuneops("validate", ".").exit_code == 0  # no spec breaks it: the plan does

    planned = repo.tuneops("plan", ".", "--offline")
    assert planned.exit_code == 1, planned.output
    assert "policies/small.yaml:6 error: the plan violates Policy 'small-plans': a change creates at most " \
           "3 things (to let this through: --approve small-plans --reason '...')" in planned.stdout
    assert "apply will refuse it" in planned.stdout and "violates 1 policy" in planned.stderr
    document = json.loads(repo.tuneops("plan", ".", "--offline", "--format", "json").stdout)
    assert len(document["policy_errors"]) == 1 and document["actions"]  # the plan is still shown
    comment = repo.tuneops("plan", ".", "--offline", "--format", "markdown").stdout
    assert "**Policy violations**" in comment

    refused = repo.tuneops("apply", ".", "--yes")
    assert refused.exit_code == 1 and "the plan violates a policy, so nothing was applied" in refused.stderr
    assert not list(repo.root.glob(".tuneops/logs/*.log"))  # no job started
    approved = repo.tuneops("plan", ".", "--offline", "--approve", "small-plans", "--reason", "first build",
                            env={"TUNEOPS_APPLIED_BY": "ada"})
    assert approved.exit_code == 0, approved.output
    assert "policies/small.yaml:6 warning: the plan violates Policy 'small-plans': a change creates at " \
           "most 3 things; approved by ada (--approve): first build" in approved.stdout
