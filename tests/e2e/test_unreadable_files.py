"""Files the user's to fix: unreadable, damaged, or something else in their place.

Each is named, with what is wrong with it, exit 1 and no traceback, never "internal error ...
This is a bug in tuneops". Tests that need `chmod 000` to stop reads take `file_modes_can_apply`:
the tests run as root, and the CLI under test then runs without root's override of file modes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, CliResult, run_tuneops

FAST_MLFLOW = {"TUNEOPS_MLFLOW_RETRY_DELAYS": "0"}


def assert_users_problem(result: CliResult, *said: str) -> None:
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output, result.output
    for words in said:
        assert words in result.output, result.output


@pytest.mark.usefixtures("file_modes_can_apply")
def test_an_unreadable_data_file_is_reported_by_validate_at_its_spec(valid_repo: Path):
    (valid_repo / "data" / "chats.jsonl").chmod(0)
    result = run_tuneops("validate", cwd=valid_repo, file_modes_apply=True)
    assert_users_problem(result, "dataset.yaml:6:11 error spec.source: dataset file cannot be read: "
                                 "Permission denied")
    assert_users_problem(run_tuneops("plan", "--offline", cwd=valid_repo, file_modes_apply=True),
                         "dataset file cannot be read")


@pytest.mark.usefixtures("file_modes_can_apply")
def test_an_unreadable_file_in_a_model_folder_is_named_with_its_spec(valid_repo: Path):
    weights = valid_repo / "models" / "tiny" / "model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"\0" * 16)
    weights.chmod(0)
    result = run_tuneops("plan", "--offline", cwd=valid_repo, file_modes_apply=True)
    assert_users_problem(result, f"error: cannot read {weights} (spec.source of BaseModel/tiny): "
                                 "Permission denied")


def test_a_fifo_in_a_model_folder_does_not_hang_the_plan(valid_repo: Path):
    (valid_repo / "models" / "tiny").mkdir(parents=True)
    os.mkfifo(valid_repo / "models" / "tiny" / "pipe")  # reading it would wait for a writer forever
    result = run_tuneops("plan", "--offline", cwd=valid_repo, timeout=20)
    assert_users_problem(result, "models/tiny/pipe (spec.source of BaseModel/tiny): not a regular file")


@pytest.mark.usefixtures("file_modes_can_apply")
def test_an_unreadable_spec_file_is_one_error_without_its_consequences(valid_repo: Path):
    (valid_repo / "fine-tune.yaml").chmod(0)
    result = run_tuneops("validate", cwd=valid_repo, file_modes_apply=True)
    assert_users_problem(result, "fine-tune.yaml:1:1 error: cannot read file: Permission denied",
                         "note: 2 references to specs in files that did not parse were not checked")
    assert "which is not defined" not in result.output


@pytest.mark.usefixtures("file_modes_can_apply")
def test_an_unreadable_settings_file_stops_logs_and_stop(valid_repo: Path):
    # Which backend to ask is in tuneops.yaml: without it, the defaults would be a guess.
    (valid_repo / "tuneops.yaml").write_text("backend: local\n")
    (valid_repo / "tuneops.yaml").chmod(0)
    for command in (["logs", "FineTune/sft"], ["stop"]):
        result = run_tuneops(*command, cwd=valid_repo, file_modes_apply=True)
        assert_users_problem(result, "error: tuneops.yaml:1:1: cannot read file: Permission denied")


@pytest.mark.slow
@pytest.mark.usefixtures("file_modes_can_apply")
def test_an_unreadable_state_folder_is_named_at_once(valid_repo: Path):
    (valid_repo / ".tuneops").mkdir()
    (valid_repo / ".tuneops").chmod(0)
    state = valid_repo / ".tuneops"
    for command, said in ((["status"], f"cannot use MLflow's database: cannot read {state}/mlflow.db"),
                          (["logs", "FineTune/sft"], f"cannot use the process table: cannot read {state}"),
                          (["stop"], f"cannot use the process table: cannot read {state}/processes.db")):
        result = run_tuneops(*command, cwd=valid_repo, file_modes_apply=True, env=FAST_MLFLOW, timeout=30)
        assert_users_problem(result, said, "Permission denied")


@pytest.mark.slow  # MLflow opens the database
@pytest.mark.parametrize("content", [b"garbage, not a database\n", None], ids=["garbage", "a folder"])
def test_a_damaged_mlflow_database_is_named(valid_repo: Path, content: bytes | None):
    database = valid_repo / ".tuneops" / "mlflow.db"
    database.parent.mkdir()
    if content is None:
        database.mkdir()
    else:
        database.write_bytes(content)
    for command in (["status"], ["plan"]):
        result = run_tuneops(*command, cwd=valid_repo, env=FAST_MLFLOW, timeout=30)
        assert_users_problem(result, f"error: cannot use MLflow's database: {database} is "
                             + ("a folder, not a database" if content is None else "not a SQLite database"))
    if content is not None:
        assert "move it aside" in result.output


def test_a_damaged_process_table_is_named(valid_repo: Path):
    table = valid_repo / ".tuneops" / "processes.db"
    table.parent.mkdir()
    table.write_bytes(b"garbage, not a database\n")
    for command in (["logs", "FineTune/sft"], ["stop"]):
        result = run_tuneops(*command, cwd=valid_repo)
        assert_users_problem(result, f"error: cannot use the process table: {table} is not a SQLite database",
                             "move it aside")


def test_a_file_error_no_command_expected_is_named_not_called_a_bug(tmp_path: Path):
    # The net in main(): `render --out` under a file fails in a place no command catches.
    (tmp_path / "a-file").write_text("")
    result = run_tuneops("render", "specs-example", "--out", str(tmp_path / "a-file" / "manifests"),
                         cwd=REPO_ROOT)
    assert_users_problem(result, f"error: cannot use {tmp_path}/a-file/manifests: Not a directory")
