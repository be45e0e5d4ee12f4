"""An Evaluation's named benchmarks (`tasks`): the field, the gate that must name a listed task,
and task YAMLs of the repository (parsed with their own file:line, confined, not read as specs)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.specs.evaluation import lower_is_better
from reconciler.specs.problems import Problem
from reconciler.specs.task_files import TaskFileError, read_task_file
from reconciler.specs.validate import validate_path
from tests.conftest import VALID_SPECS, write_repo

TASK_YAML = """\
task: support_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/support-mc.jsonl
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""
DATA = {"evals/support-mc.yaml": TASK_YAML, "evals/data/support-mc.jsonl": '{"question": "q"}\n'}


def evaluation(tasks: str, gates: str = "    - metric: rougeL\n      min: 0.3\n",
               metrics: str = "[perplexity, rougeL]") -> str:
    text = textwrap.dedent(VALID_SPECS["evaluation.yaml"]).lstrip("\n")
    text = text.replace("metrics: [perplexity, rougeL]", f"metrics: {metrics}")
    text = text.replace("  gates:\n    - metric: rougeL\n      min: 0.3\n", f"  gates:\n{gates}")
    return text + "  tasks:\n" + textwrap.indent(textwrap.dedent(tasks).strip("\n"), "    ") + "\n"


def problems(tmp_path: Path, files: dict[str, str], settings: str | None = None) -> list[Problem]:
    extra = {"tuneops.yaml": settings} if settings else {}
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, **files, **extra})
    return list(validate_path(repo).problems)


def texts(found: list[Problem]) -> list[str]:
    return [p.text() for p in found]


def test_named_and_path_tasks_with_gates_on_them_validate(tmp_path):
    spec = evaluation("""
        - name: hellaswag
          limit: 500
          numFewshot: 0
        - path: evals/support-mc.yaml
    """, gates="    - metric: task/hellaswag/acc_norm\n      min: 0.3\n"
               "    - metric: task/support_mc/acc\n      min: 0.5\n")
    assert texts(problems(tmp_path, {"evaluation.yaml": spec, **DATA})) == []


def test_a_gate_on_a_task_that_is_not_listed_names_the_close_one(tmp_path):
    spec = evaluation("- path: evals/support-mc.yaml",
                      gates="    - metric: task/support_mcq/acc\n      min: 0.5\n")
    (found,) = problems(tmp_path, {"evaluation.yaml": spec, **DATA})
    assert found.code == "gate-metric-not-computed" and found.path == "spec.gates[0].metric"
    assert found.position.file.endswith("evaluation.yaml") and found.position.line == 12
    assert "no task 'support_mcq' is listed in tasks" in found.message
    assert found.hint == "did you mean 'support_mc'?"


def test_a_gate_written_with_lm_evals_comma_says_the_recorded_name(tmp_path):
    spec = evaluation("- name: gsm8k", gates="    - metric: task/gsm8k/exact_match,strict-match\n"
                                             "      min: 0.5\n")
    (found,) = problems(tmp_path, {"evaluation.yaml": spec})
    assert found.code == "gate-metric-not-computed"
    assert found.hint == "gate on task/gsm8k/exact_match.strict-match"


def test_only_tasks_may_be_scored_but_not_nothing(tmp_path):
    only_tasks = evaluation("- name: hellaswag", metrics="[]",
                            gates="    - metric: task/hellaswag/acc\n      min: 0.3\n")
    assert texts(problems(tmp_path / "a", {"evaluation.yaml": only_tasks})) == []
    nothing = textwrap.dedent(VALID_SPECS["evaluation.yaml"]).replace("[perplexity, rougeL]", "[]")
    nothing = nothing.replace("- metric: rougeL", "- metric: task/x/acc")
    found = problems(tmp_path / "b", {"evaluation.yaml": nothing})
    assert any("nothing to score" in p.message for p in found), texts(found)


@pytest.mark.parametrize(("task", "message"), [
    ("- {name: hellaswag, path: evals/support-mc.yaml}", "set exactly one of name or path"),
    ("- name: hellaswag\n- name: hellaswag", "task 'hellaswag' is listed twice"),
    ("- {name: 'hella swag'}", "must match ^[A-Za-z0-9_.-]+$"),
    ("- {name: hellaswag, limit: 0}", "must be > 0"),
])
def test_task_entries_are_checked(tmp_path, task, message):
    found = problems(tmp_path, {"evaluation.yaml": evaluation(task), **DATA})
    assert any(message in p.message for p in found), texts(found)


def test_a_task_yaml_is_not_read_as_a_spec_even_with_lm_evals_tags(tmp_path):
    """lm-eval's `!function` is no tuneops YAML; in a task YAML it is a warning that Python runs."""
    with_function = TASK_YAML + "process_docs: !function utils.process_docs\n"
    found = problems(tmp_path, {"evaluation.yaml": evaluation("- path: evals/support-mc.yaml"),
                                **DATA, "evals/support-mc.yaml": with_function})
    assert [(p.code, p.severity, p.position.file.endswith("evals/support-mc.yaml"), p.position.line)
            for p in found] == [("trust-remote-code", "warning", True, 12)], texts(found)
    spec = evaluation("- path: evals/support-mc.yaml")
    files = {"evaluation.yaml": spec, **DATA, "evals/support-mc.yaml": with_function}
    denied = problems(tmp_path / "denied", files, settings="policy:\n  trustRemoteCode: deny\n")
    assert [(p.code, p.severity) for p in denied] == [("trust-remote-code", "error")], texts(denied)


def test_a_yaml_that_no_evaluation_names_is_still_read_as_a_spec(tmp_path):
    found = problems(tmp_path, DATA)
    assert {p.code for p in found} == {"missing-field"}, texts(found)


@pytest.mark.parametrize(("files", "code", "where", "line"), [
    ({"evals/support-mc.yaml": "task: [\n"}, "task-file", "evals/support-mc.yaml", 2),
    ({"evals/support-mc.yaml": "dataset_path: json\n"}, "task-file", "evals/support-mc.yaml", 1),
    ({"evals/data/support-mc.jsonl": None}, "missing-file", "evals/support-mc.yaml", 5),
    ({"evals/support-mc.yaml": None}, "missing-file", "evaluation.yaml", 15),
    ({"evals/support-mc.yaml": TASK_YAML.replace("data/support-mc.jsonl", "/etc/hostname")},
     "outside-repository", "evals/support-mc.yaml", 5),
    ({"evals/support-mc.yaml": "include: ../../outside.yaml\ntask: x\n"}, "outside-repository",
     "evals/support-mc.yaml", 1),
], ids=["bad-yaml", "no-task", "missing-data", "missing-yaml", "data-outside", "include-outside"])
def test_task_yaml_problems_point_at_their_own_line(tmp_path, files, code, where, line):
    data = {**DATA, **files}
    repo_files = {name: text for name, text in data.items() if text is not None}
    (tmp_path / "outside.yaml").write_text("dataset_path: json\n")
    spec = evaluation("- path: evals/support-mc.yaml")
    found = problems(tmp_path, {"evaluation.yaml": spec, **repo_files})
    where_found = [(p.code, p.position.file.endswith(where), p.position.line) for p in found]
    assert where_found == [(code, True, line)], texts(found)
    assert found[0].path == "spec.tasks[0].path"


def test_a_task_yaml_reads_its_includes_and_the_data_they_name(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared/base.yaml").write_text("dataset_path: json\ndataset_kwargs:\n  data_files:\n"
                                                "    test: [a.jsonl, b.jsonl]\n    train: c.jsonl\n")
    (tmp_path / "task.yaml").write_text("include: shared/base.yaml\ntask: mine\n")
    read = read_task_file(tmp_path / "task.yaml")
    assert read.names == ("mine",)
    assert [(item.value, item.file.name, item.line) for item in read.files] == [
        ("shared/base.yaml", "task.yaml", 1), ("a.jsonl", "base.yaml", 4), ("b.jsonl", "base.yaml", 4),
        ("c.jsonl", "base.yaml", 5)]
    # Data files are read from the folder of the task YAML the spec names, where the job runs lm-eval.
    expected = [tmp_path / name for name in ("a.jsonl", "b.jsonl", "c.jsonl")]
    assert [item.local_path() for item in read.data_files] == expected
    (tmp_path / "shared/base.yaml").write_text("include: ../task.yaml\n")
    with pytest.raises(TaskFileError, match="includes loop"):
        read_task_file(tmp_path / "task.yaml")


def test_a_groups_name_and_its_tasks_are_what_gates_may_name(tmp_path):
    (tmp_path / "group.yaml").write_text("group: support\ntask: [support_mc, support_qa]\n")
    assert read_task_file(tmp_path / "group.yaml").names == ("support", "support_mc", "support_qa")


def test_lower_is_better_knows_lm_evals_perplexities():
    assert lower_is_better("task/wikitext/word_perplexity")
    assert lower_is_better("task/wikitext/bits_per_byte.none")
    assert not lower_is_better("task/hellaswag/acc") and lower_is_better("perplexity")
