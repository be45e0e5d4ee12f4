"""The plan's contamination warning: from the Evaluation's logged count, or before anything is
evaluated from the row hashes the Dataset jobs wrote; shown in text, Markdown and JSON."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reconciler.contamination import ROW_HASHES_FILE, read_row_hashes, row_hashes_document
from reconciler.plan.contamination import contamination_warnings
from reconciler.plan.plan import Action
from reconciler.plan.report import plan_json, plan_markdown, plan_text
from tests.unit.plan.test_plan import (
    DATASET,
    DEPLOYMENT,
    EVALUATION,
    FINE_TUNE,
    Project,
    everything_built,
    server,
    state_of,
)


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _counted(project: Project, rows: float, checked: float = 36.0, **run) -> list:
    built = everything_built(project, **run)
    built[2] = replace(built[2], run_id="a1b2c3d4e5f60718", metrics={
        "rougeL": 0.5, "perplexity": 3.0, "contaminated_rows": rows, "contamination_checked_rows": checked,
        "contaminated_fraction": rows / checked})
    return built


def test_a_counted_contamination_is_a_warning_at_the_evaluations_dataset_line(tmp_path: Path) -> None:
    project = Project(tmp_path / "specs")
    state = state_of(*_counted(project, 3.0))
    (warning,) = contamination_warnings(project.specs, project.inputs, state, read_row_hashes)
    assert warning.resource == str(EVALUATION) and warning.code == "contamination"
    assert (warning.position.file.endswith("evaluation.yaml"), warning.position.line) == (True, 8)
    assert warning.text().endswith(
        "evaluation.yaml:8:3 warning spec.dataset: contamination: 3 of 36 test rows of Dataset 'chats' "
        "appear in the training data of FineTune 'sft' (counted by its run a1b2c3d4) (deduplicate: remove "
        "those rows from 'chats' or from the training data; the evaluation's results.json and its MLflow "
        "run list examples; or set failOnContamination: true to block deployment while they remain)")

    assert list(contamination_warnings(project.specs, project.inputs, state_of(*_counted(project, 0.0)),
                                       read_row_hashes)) == []


def test_before_evaluating_exact_prompts_are_found_in_the_prepared_row_hashes(tmp_path: Path) -> None:
    project = Project(tmp_path / "specs")
    prepared = tmp_path / "store" / "chats"
    prepared.mkdir(parents=True)
    # The test split asks one question the train split asks too (in other case and punctuation).
    (prepared / ROW_HASHES_FILE).write_text(row_hashes_document(
        {"train": [chat("Hi, how are you?", "Fine.")], "validation": [],
         "test": [chat("HI how are you", "ok"), chat("Bye!", "See you.")]}, "chat"))
    dataset = project.built(DATASET, dataset_digest="sha256:" + "a" * 64)
    state = state_of(replace(dataset, output=str(prepared)))  # nothing else built yet
    (warning,) = contamination_warnings(project.specs, project.inputs, state, read_row_hashes)
    assert "at least 1 of 2 test rows of Dataset 'chats'" in warning.message
    assert "exact prompt matches in the prepared datasets" in warning.message

    # Prepared before row hashes existed: nothing is known, nothing is said.
    (prepared / ROW_HASHES_FILE).unlink()
    assert list(contamination_warnings(project.specs, project.inputs, state, read_row_hashes)) == []


def test_the_plan_shows_the_warning_in_every_format(tmp_path: Path) -> None:
    project = Project(tmp_path / "specs")
    state = state_of(*_counted(project, 3.0), servers=[server(project)])
    warnings = contamination_warnings(project.specs, project.inputs, state, read_row_hashes)
    plan = replace(project.plan(state), warnings=tuple(warning.text() for warning in warnings))
    assert "evaluation.yaml:8:3 warning spec.dataset: contamination: 3 of 36 test rows" in plan_text(plan)
    markdown = plan_markdown(plan)
    assert "**Warnings**" in markdown and "3 of 36 test rows" in markdown
    (shown,) = plan_json(plan)["warnings"]
    assert "evaluation.yaml:8:3 warning spec.dataset: contamination: 3 of 36" in shown


def test_fail_on_contamination_explains_the_blocked_deployment(tmp_path: Path) -> None:
    fail = ("    name: chats\n", "    name: chats\n  failOnContamination: true\n")
    project = Project(tmp_path / "specs", {"evaluation.yaml": fail})
    state = state_of(*_counted(project, 3.0, verdict="failed",
                               summary="failed: contamination: 3 of 36 test rows appear in training data"))
    plan = project.plan(state)
    deployment = plan.get(DEPLOYMENT)
    assert deployment.action == Action.BLOCKED
    (failed,) = deployment.blocked_by.evaluations
    assert [check.describe() for check in failed.failures] == [
        "contamination: 3 of 36 test rows appear in training data"]
    (warning,) = contamination_warnings(project.specs, project.inputs, state, read_row_hashes)
    assert "failOnContamination is on" in warning.hint
    assert plan.get(FINE_TUNE).action == Action.NOOP
