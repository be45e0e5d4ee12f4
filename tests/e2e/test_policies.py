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
           "3 things (to let this through: --approve small-plans --reason '...', or the annotations " \
           "tuneops.dev/approved-by: small-plans and tuneops.dev/approval-reason on a spec the plan " \
           "changes)" in planned.stdout
    assert "apply will refuse it" in planned.stdout and "breaks 1 policy" in planned.stderr
    document = json.loads(repo.tuneops("plan", ".", "--offline", "--format", "json").stdout)
    assert len(document["policy_errors"]) == 1 and document["actions"]  # the plan is still shown
    comment = repo.tuneops("plan", ".", "--offline", "--format", "markdown").stdout
    assert "**Policy violations**" in comment

    refused = repo.tuneops("apply", ".", "--yes")
    assert refused.exit_code == 1 and "so nothing was applied" in refused.stderr
    assert not list(repo.root.glob(".tuneops/logs/*.log"))  # no job started
    approved = repo.tuneops("plan", ".", "--offline", "--approve", "small-plans", "--reason", "first build",
                            env={"TUNEOPS_APPLIED_BY": "ada"})
    assert approved.exit_code == 0, approved.output
    assert "policies/small.yaml:6 warning: the plan violates Policy 'small-plans': a change creates at " \
           "most 3 things; approved by ada (--approve): first build" in approved.stdout


def plan_rule(name: str, rule: str, severity: str = "error") -> str:
    return (f"apiVersion: tuneops.dev/v1alpha1\nkind: Policy\nmetadata: {{name: {name}}}\nspec:\n"
            f"  rule: {json.dumps(rule)}\n  message: keep plans small\n  severity: {severity}\n")


def test_a_plan_rule_that_fails_says_how_to_fix_it_and_follows_its_severity(tmp_path):
    repo = SpecRepo(tmp_path / "specs", None)
    (repo.root / "p.yaml").write_text(plan_rule("priced", "plan.dollars < 100.0"))  # nothing is priced
    repo.commit("a rule that fails on an unpriced plan")
    failed = repo.tuneops("plan", ".", "--offline")
    assert failed.exit_code == 1
    assert "p.yaml:5 error: Policy 'priced' failed on the plan: a value it compares is null" in failed.stdout
    assert "fix the rule" in failed.stdout
    assert "--approve priced" not in failed.stdout  # approving cannot help
    (repo.root / "p.yaml").write_text(plan_rule("priced", "plan.dollars < 100.0", "warning"))
    warned = repo.tuneops("plan", ".", "--offline")
    assert warned.exit_code == 0 and "p.yaml:5 warning: Policy 'priced' failed on the plan" in warned.stdout


def test_an_approval_in_git_on_a_changed_spec_lets_a_plan_rule_through(tmp_path):
    repo = SpecRepo(tmp_path / "specs", None)
    (repo.root / "p.yaml").write_text(plan_rule("tiny-plans", "plan.actions.size() <= 1"))
    repo.edit("fine-tune.yaml", "  name: fruit-sft\n", "  name: fruit-sft\n  annotations:\n"
              "    tuneops.dev/approved-by: tiny-plans\n    tuneops.dev/approval-reason: the first build\n")
    repo.commit("approve the first build in Git")
    approved = repo.tuneops("plan", ".", "--offline")
    assert approved.exit_code == 0, approved.output
    assert "approved by the annotation tuneops.dev/approved-by in fine-tune.yaml: the first build" \
        in approved.stdout


def test_a_sweeps_remaining_trials_count_in_the_plans_gpu_hours(tmp_path):
    """The example project trains on H100s: its sweep's trials are priced like its fine-tunes."""
    import shutil

    from tests.conftest import REPO_ROOT, run_tuneops

    repo = tmp_path / "specs"
    shutil.copytree(REPO_ROOT / "specs-example", repo,
                    ignore=shutil.ignore_patterns("quickstart", ".tuneops"))
    (repo / "budget.yaml").write_text(plan_rule("budget", "plan.gpuHours < 1.0e9"))
    sweeps = repo / "sweep.yaml"
    sweeps.write_text("apiVersion: tuneops.dev/v1alpha1\nkind: Sweep\nmetadata: {name: sft-lr}\nspec:\n"
                      "  fineTune: support-sft\n"
                      "  objective: {evaluation: support-sft-quality, metric: rougeL}\n"
                      "  parameters:\n    training.learningRate: {logUniform: [1.0e-5, 1.0e-3]}\n"
                      "  maxTrials: 4\n")
    without = json.loads(run_tuneops("plan", str(repo), "--offline", "--format", "json").stdout)
    sweep = next(a for a in without["actions"] if a["kind"] == "Sweep")
    hours = sweep["sweep"]["estimate"]["gpu_hours"]
    assert hours and hours > 0, sweep
    fine_tunes = without["gpu_hours_at_most"]
    limit = fine_tunes + hours / 2  # the fine-tunes fit; with the sweep's trials, the plan does not
    (repo / "budget.yaml").write_text(plan_rule("budget", f"plan.gpuHours < {limit:.6f}"))
    over = run_tuneops("plan", str(repo), "--offline")
    assert over.exit_code == 1 and "the plan violates Policy 'budget'" in over.stdout, over.output
