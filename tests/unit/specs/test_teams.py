"""Teams in tuneops.yaml: every spec belongs to the one team whose paths hold its file, its names
are the team's own (two teams' `sft` are two resources everywhere), and it names another team's
spec only as `team.name` and only when that team exports it. Each mistake is an error at the
file and line that makes it."""

from __future__ import annotations

import textwrap
from pathlib import Path

from reconciler.graph import DependencyGraph
from reconciler.specs.problems import Problem
from reconciler.specs.validate import validate_path
from tests.conftest import VALID_SPECS, write_repo

TEAMS = """
teams:
  a:
    paths: ["teams/a/**"]
  b:
    paths: [teams/b]
"""


def team_repo(tmp_path: Path, settings: str = TEAMS, **extra: str) -> Path:
    """VALID_SPECS twice, once per team (their data shared at the root), plus `extra` files."""
    files: dict[str, str] = {"tuneops.yaml": settings, "data/chats.jsonl": VALID_SPECS["data/chats.jsonl"]}
    for team in ("a", "b"):
        for name, text in VALID_SPECS.items():
            if name.endswith(".yaml"):
                files[f"teams/{team}/{name}"] = textwrap.dedent(text).replace(
                    "file://data/", "file://../../data/").replace("file://models/", "file://../../models/")
    files.update(extra)
    root = write_repo(tmp_path / "specs", files)
    (root / "models" / "tiny").mkdir(parents=True)
    (root / "models" / "tiny" / "config.json").write_text("{}")
    return root


def upstream(specs, resource: str) -> list[str]:
    edges = DependencyGraph.from_specs(specs).depends_on
    return sorted(str(rid) for rid in next(deps for rid, deps in edges.items() if str(rid) == resource))


def problems(root: Path) -> list[Problem]:
    return list(validate_path(root).problems)


def only(found: list[Problem], code: str) -> Problem:
    assert [p.code for p in found if p.severity == "error"] == [code], "\n".join(p.text() for p in found)
    return next(p for p in found if p.code == code)


def edit(root: Path, file: str, old: str, new: str) -> None:
    path = root / file
    assert old in path.read_text(), old
    path.write_text(path.read_text().replace(old, new, 1))


def test_two_teams_own_specs_of_the_same_names_as_two_resources(tmp_path: Path):
    result = validate_path(team_repo(tmp_path))
    assert [p.text() for p in result.problems if p.severity == "error"] == []
    ids = sorted(str(loaded.id) for loaded in result.specs)
    assert "FineTune/a.sft" in ids and "FineTune/b.sft" in ids and "FineTune/sft" not in ids
    # each team's FineTune trains on its own Dataset and BaseModel: nothing is shared by accident
    assert upstream(result.specs, "FineTune/b.sft") == ["BaseModel/b.tiny", "Dataset/b.chats"]
    assert upstream(result.specs, "Deployment/a.bot") == ["Evaluation/a.sft-quality", "FineTune/a.sft"]


def test_a_spec_in_no_team_is_an_error_at_its_name(tmp_path: Path):
    root = team_repo(tmp_path, **{"stray/dataset.yaml": VALID_SPECS["dataset.yaml"].replace("chats", "loose"),
                                  "stray/data/loose.jsonl": VALID_SPECS["data/chats.jsonl"]})
    found = only(problems(root), "team-unknown")
    assert (found.position.file.endswith("stray/dataset.yaml"), found.position.line) == (True, 4)
    assert "in no team's paths" in found.message and "a: teams/a/**; b: teams/b" in (found.hint or "")


def test_a_spec_in_two_teams_is_an_error(tmp_path: Path):
    root = team_repo(tmp_path, TEAMS.replace("paths: [teams/b]", "paths: [teams/b, 'teams/a/dataset.yaml']"))
    (found,) = [p for p in problems(root) if p.code == "team-ambiguous"]
    assert found.position.file.endswith("teams/a/dataset.yaml") and found.position.line == 4
    assert "2 teams (a, b)" in found.message


def test_another_teams_spec_is_named_as_team_dot_name_and_only_when_exported(tmp_path: Path):
    root = team_repo(tmp_path)
    edit(root, "teams/b/fine-tune.yaml", "- name: chats", "- name: a.chats")
    found = only(problems(root), "team-not-exported")
    assert found.position.file.endswith("teams/b/fine-tune.yaml") and found.position.line == 8
    assert "Dataset 'a.chats' of team 'a', which team 'a' does not export" in found.message
    assert "add Dataset/chats to teams.a.exports" in (found.hint or "")

    edit(root, "tuneops.yaml", 'paths: ["teams/a/**"]', 'paths: ["teams/a/**"]\n    exports: [Dataset/chats]')
    result = validate_path(root)
    assert [p.text() for p in result.problems if p.severity == "error"] == []
    assert upstream(result.specs, "FineTune/b.sft") == ["BaseModel/b.tiny", "Dataset/a.chats"]


def test_a_bare_name_of_another_teams_spec_says_how_to_name_it(tmp_path: Path):
    root = team_repo(tmp_path)
    (root / "teams" / "a" / "dataset.yaml").write_text(
        (root / "teams" / "a" / "dataset.yaml").read_text().replace("name: chats", "name: only-a"))
    edit(root, "teams/a/fine-tune.yaml", "- name: chats", "- name: only-a")
    edit(root, "teams/a/evaluation.yaml", "name: chats", "name: only-a")
    edit(root, "teams/b/fine-tune.yaml", "- name: chats", "- name: only-a")
    found = only(problems(root), "missing-reference")
    assert found.position.file.endswith("teams/b/fine-tune.yaml")
    assert "name it 'a.only-a' (its team must export it)" in (found.hint or ""), found.text()


def test_a_team_qualified_name_must_fit_a_label(tmp_path: Path):
    long = "x" * 62
    root = team_repo(tmp_path)
    edit(root, "teams/a/deployment.yaml", "name: bot", f"name: {long}")
    found = only(problems(root), "invalid-value")
    assert found.position.file.endswith("teams/a/deployment.yaml") and found.position.line == 4
    assert "with its team" in found.message and "64 characters" in found.message


def test_registered_model_names_are_the_teams_own(tmp_path: Path):
    root = team_repo(tmp_path)
    for team in ("a", "b"):
        edit(root, f"teams/{team}/fine-tune.yaml", "learningRate: 2e-4",
             "learningRate: 2e-4\n  register:\n    model: bot-model")
    result = validate_path(root)
    models = sorted(loaded.resource.registered_model for loaded in result.specs.of_kind("FineTune"))
    assert models == ["a.bot-model", "b.bot-model"]


def test_servers_that_would_share_a_name_in_one_namespace_are_refused(tmp_path: Path):
    settings = TEAMS.replace("  a:\n", "  x:\n").replace("teams/a/**", "teams/x/**") + \
        "  x-bot:\n    paths: [teams/x-bot]\n"
    root = team_repo(tmp_path, settings)
    (root / "teams" / "a").rename(root / "teams" / "x")
    edit(root, "teams/x/deployment.yaml", "name: bot", "name: bot-c")
    write_repo(root, {"teams/x-bot/deployment.yaml": VALID_SPECS["deployment.yaml"].replace(
        "name: bot", "name: c").replace("fineTune: sft", "fineTune: x.sft").replace(
        "[sft-quality]", "[x.sft-quality]\n          alias: staging")})
    edit(root, "tuneops.yaml", 'paths: ["teams/x/**"]',
         'paths: ["teams/x/**"]\n    exports: [FineTune/sft, Evaluation/sft-quality]')
    found = only(problems(root), "team-name-collision")
    assert "'x-bot-c' in namespace default" in found.message
    edit(root, "tuneops.yaml", "  x-bot:\n", "  x-bot:\n    namespace: x-bot\n")
    assert [p.code for p in problems(root) if p.severity == "error"] == []


def test_policies_belong_to_no_team_and_match_teams_by_name(tmp_path: Path):
    policy = """
        apiVersion: tuneops.dev/v1alpha1
        kind: Policy
        metadata: {name: small-adapters}
        spec:
          match: {kinds: [FineTune], teams: [b]}
          rule: "spec.adapter.r <= 4 && team == 'b' && name == 'sft'"
          message: "team b trains small adapters"
        """
    root = team_repo(tmp_path, **{"policies/small.yaml": policy})
    found = only(problems(root), "policy-violated")
    assert found.resource == "FineTune/b.sft" and found.position.file.endswith("teams/b/fine-tune.yaml")
    edit(root, "policies/small.yaml", "teams: [b]", "teams: [bb]")
    unknown = only(problems(root), "policy-unknown-team")
    assert unknown.position.file.endswith("policies/small.yaml")
    assert "did you mean 'b'" in (unknown.hint or "")


def test_team_settings_are_checked_at_their_line(tmp_path: Path):
    root = team_repo(tmp_path, TEAMS.replace("paths: [teams/b]", "paths: [/etc]"))
    (found,) = [p for p in problems(root) if p.position.file.endswith("tuneops.yaml")]
    assert (found.position.line, found.path) == (5, "teams.b.paths[0]")
    assert "relative to the spec root" in found.message


def test_a_quota_needs_a_queue_of_its_own(tmp_path: Path):
    no_queue = TEAMS.replace('paths: ["teams/a/**"]', 'paths: ["teams/a/**"]\n    quota: {gpus: 4}')
    (found,) = [p for p in problems(team_repo(tmp_path / "1", no_queue)) if p.path.startswith("teams")]
    assert "team a has a quota but no queue" in found.message and found.position.line == 1  # teams:
    shared = ('paths: ["teams/a/**"]\n    queue: gpu\n    quota: {gpus: 4}',
              "paths: [teams/b]\n    queue: gpu\n    quota: {gpus: 2}")
    both = TEAMS.replace('paths: ["teams/a/**"]', shared[0]).replace("paths: [teams/b]", shared[1])
    (found,) = [p for p in problems(team_repo(tmp_path / "2", both)) if p.path.startswith("teams")]
    assert "teams a and b both have a quota on queue gpu in namespace default" in found.message


def test_team_settings_refuse_what_cannot_work(tmp_path: Path):
    for bad, said in (("namespace: kube-system", "kube-* namespaces are Kubernetes' own"),
                      ("paths: [./teams/b]", "without './'"), ("paths: ['teams/[b]']", "'[]'")):
        written = bad if bad.startswith("paths") else f"paths: [teams/b]\n    {bad}"
        settings = TEAMS.replace("paths: [teams/b]", written)
        found = [p for p in problems(team_repo(tmp_path / said[:4].strip("'*.[ "), settings))
                 if p.position.file.endswith("tuneops.yaml")]
        assert found and said in found[0].message, [p.text() for p in found]
    found = problems(team_repo(tmp_path / "name", TEAMS.replace("  b:", "  B_b:")))
    assert any("team name 'B_b' must be lowercase" in p.message and "label" not in p.message for p in found)


def test_an_error_elsewhere_in_tuneops_yaml_keeps_the_teams(tmp_path: Path):
    root = team_repo(tmp_path, TEAMS + "maxAttempts: many\n")
    assert [p.path for p in problems(root) if p.severity == "error"] == ["maxAttempts"]  # no duplicates


def test_exports_name_specs_of_their_team(tmp_path: Path):
    exports = ('paths: ["teams/a/**"]\n'
               "    exports: [Dataset/chats, dataset/chats, Dataset/a.chats, Dataset/nope]")
    found = [p for p in problems(team_repo(tmp_path, TEAMS.replace('paths: ["teams/a/**"]', exports)))
             if p.severity == "error"]
    assert [(p.path, p.position.line) for p in found] == [
        ("teams.a.exports[1]", 4), ("teams.a.exports[2]", 4), ("teams.a.exports[3]", 4)]
    assert "did you mean 'Dataset'" in (found[0].hint or "") and "without a team" in found[1].message
    assert "team a has no Dataset named 'nope'" in found[2].message


def test_a_judge_of_another_team_must_be_exported(tmp_path: Path):
    root = team_repo(tmp_path)
    edit(root, "teams/a/evaluation.yaml", "metrics: [perplexity, rougeL]",
         "metrics: [perplexity, rougeL]\n  judge: {endpoint: {deployment: b.bot}, rubric: be right}")
    found = only(problems(root), "team-not-exported")
    assert "judge names Deployment 'b.bot' of team 'b'" in found.message and found.position.line == 11


def test_policy_names_of_builtins_and_budgets_are_reserved(tmp_path: Path):
    policy = """
        apiVersion: tuneops.dev/v1alpha1
        kind: Policy
        metadata: {name: budget}
        spec: {rule: "true", message: "m"}
        """
    budgets = TEAMS.replace("paths: [teams/b]", "paths: [teams/b]\n    budget: {gpuHoursPerMonth: 10}")
    named = {"policies/b.yaml": policy}
    found = only(problems(team_repo(tmp_path / "1", budgets, **named)), "policy-rule-invalid")
    assert "'budget' is what a team's budget is approved as" in found.message
    assert problems(team_repo(tmp_path / "2", **named)) == []  # no budget to mix it up with


def test_dotted_names_get_hints_that_fit(tmp_path: Path):
    plain = write_repo(tmp_path / "plain", {**VALID_SPECS})
    edit(plain, "fine-tune.yaml", "baseModel: tiny", "baseModel: x.tiny")
    found = only(problems(plain), "missing-reference")
    assert found.hint == "a name with '.' names another team's spec, and this project defines no teams"
    root = team_repo(tmp_path)
    edit(root, "teams/a/dataset.yaml", "name: chats", "name: a.chats")
    assert [p.code for p in problems(root) if p.severity == "error"] == ["invalid-value"]  # no cascade
