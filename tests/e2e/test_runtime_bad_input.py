"""Bad input to `tuneops run`: one clear line, exit 1, no traceback, and nothing left at the
output path that a later run could mistake for a result."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from reconciler.specs.confinement import FILE_ROOTS_ENV
from tests.conftest import CliResult
from tests.support.runtime_support import (
    FRUIT_DATA,
    Prepared,
    base_model,
    dataset_job,
    finetune_job,
    free_port,
    needs_training,
    prepared,
    run_job,
    write_job,
)

pytestmark = [needs_training, pytest.mark.slow]  # every case starts a job that imports torch
INSTRUCTION = {"schema": {"type": "instruction"}}
Local = tuple[Path, str, Path]  # the store, the MLflow URI, the folder of job files


def _refused(result: CliResult, *phrases: str) -> None:
    assert result.exit_code == 1, result.output[-3000:]
    assert "Traceback" not in result.output, result.output[-3000:]
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr[-3000:]


def _nothing_at(output: Path) -> None:
    assert not output.exists(), f"{output} was left behind"
    if output.parent.exists():
        assert not list(output.parent.glob(f".{output.name}*")), "a temporary folder was left behind"


@pytest.fixture
def local(tmp_path: Path) -> Local:
    return tmp_path / "store", f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "jobs"


def test_missing_dataset_file(local: Local, tmp_path: Path) -> None:
    store, uri, jobs = local
    job = dataset_job(store, uri, "gone", tmp_path / "nowhere.jsonl", INSTRUCTION)
    _refused(run_job("dataset", write_job(job, jobs)), "nowhere.jsonl", "does not exist")
    _nothing_at(job.output_dir)


def test_malformed_jsonl_line_names_the_line(local: Local, tmp_path: Path) -> None:
    store, uri, jobs = local
    data = tmp_path / "broken.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n')
    job = dataset_job(store, uri, "broken", data, INSTRUCTION)
    _refused(run_job("dataset", write_job(job, jobs)), f"{data}:2")
    _nothing_at(job.output_dir)


def test_missing_column_names_it(local: Local, tmp_path: Path) -> None:
    store, uri, jobs = local
    data = tmp_path / "columns.jsonl"
    data.write_text('{"question": "a", "output": "b"}\n')
    job = dataset_job(store, uri, "columns", data, INSTRUCTION)
    _refused(run_job("dataset", write_job(job, jobs)), "'instruction'", "question")
    _nothing_at(job.output_dir)


def test_empty_split_after_cleaning(local: Local, tmp_path: Path) -> None:
    store, uri, jobs = local
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": "a"}) + "\n" for i in range(3)))
    job = dataset_job(
        store, uri, "tiny", data, {**INSTRUCTION, "split": {"train": 0.5, "validation": 0.25, "test": 0.25}}
    )
    _refused(run_job("dataset", write_job(job, jobs)), "empty after cleaning")
    _nothing_at(job.output_dir)


def test_sha256_mismatch(local: Local) -> None:
    store, uri, jobs = local
    job = dataset_job(store, uri, "pinned", FRUIT_DATA, {**INSTRUCTION, "sha256": "0" * 64})
    _refused(run_job("dataset", write_job(job, jobs)), "sha256", "0" * 64)
    _nothing_at(job.output_dir)


def test_unreachable_mlflow_is_retried_then_named(local: Local) -> None:
    store, _, jobs = local
    uri = f"http://127.0.0.1:{free_port()}"
    job = dataset_job(store, uri, "fruit", FRUIT_DATA, INSTRUCTION)
    result = run_job("dataset", write_job(job, jobs))
    _refused(result, f"cannot reach MLflow at {uri}", "after 3 attempts")
    _nothing_at(job.output_dir)


def test_a_job_file_for_another_command(local: Local) -> None:
    store, uri, jobs = local
    job_file = write_job(dataset_job(store, uri, "fruit", FRUIT_DATA, INSTRUCTION), jobs)
    _refused(run_job("finetune", job_file), "is a Dataset job", f"tuneops run dataset --job {job_file}")


@pytest.fixture(scope="module")
def fruit(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    root = tmp_path_factory.mktemp("bad-input")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    job = dataset_job(root / "store", uri, "fruit-colors", FRUIT_DATA, INSTRUCTION)
    assert run_job("dataset", write_job(job, root / "jobs")).exit_code == 0
    return root, uri, prepared(job)


def test_base_model_folder_without_weights(fruit: Prepared, tiny_model: Path, tmp_path: Path) -> None:
    root, uri, data = fruit
    hollow = tmp_path / "hollow"
    shutil.copytree(tiny_model, hollow, ignore=shutil.ignore_patterns("*.safetensors"))
    job = finetune_job(root / "store", uri, "hollow", base_model(hollow), [data], {})
    _refused(run_job("finetune", write_job(job, root / "jobs")), f"{hollow} has no weights")
    _nothing_at(job.output_dir)


def test_adapter_rank_above_hidden_size(fruit: Prepared, tiny_model: Path) -> None:
    root, uri, data = fruit
    job = finetune_job(
        root / "store", uri, "huge-rank", base_model(tiny_model), [data], {"adapter": {"r": 128}}
    )
    _refused(
        run_job("finetune", write_job(job, root / "jobs")),
        "adapter.r 128 is larger than the model's hidden size 64",
    )
    _nothing_at(job.output_dir)


def test_qlora_is_refused_without_cuda(fruit: Prepared, tiny_model: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: QLoRA is allowed here (see the gpu-marked tests)")
    root, uri, data = fruit
    job = finetune_job(
        root / "store", uri, "qlora", base_model(tiny_model), [data], {"adapter": {"type": "qlora"}}
    )
    _refused(run_job("finetune", write_job(job, root / "jobs")), "qlora needs a CUDA GPU")
    _nothing_at(job.output_dir)


# --- file:// paths a job reads stay inside the roots the starting process names ------------------
# A job file is only data: these jobs are told their roots in TUNEOPS_FILE_ROOTS, as a backend
# does, and the job file is written as someone editing it would.


def test_a_job_file_pointing_outside_its_roots_is_refused(local: Local, tmp_path: Path) -> None:
    store, uri, jobs = local
    repo = tmp_path / "repo"
    repo.mkdir()
    job = dataset_job(store, uri, "passwd", Path("/etc/passwd"), {**INSTRUCTION, "format": "csv"})
    result = run_job("dataset", write_job(job, jobs), env={FILE_ROOTS_ENV: str(repo)})
    _refused(result, "/etc/passwd is outside the folders this job may read", f"{FILE_ROOTS_ENV}={repo}")
    assert "root:" not in result.output
    _nothing_at(job.output_dir)


def test_a_symlink_swapped_after_validation_is_refused(local: Local, tmp_path: Path) -> None:
    store, uri, jobs = local
    data = tmp_path / "repo" / "data" / "train.csv"
    data.parent.mkdir(parents=True)
    data.symlink_to("/etc/passwd")
    job = dataset_job(store, uri, "swapped", data, INSTRUCTION)
    result = run_job("dataset", write_job(job, jobs), env={FILE_ROOTS_ENV: str(tmp_path / "repo")})
    _refused(result, f"{data} resolves to /etc/passwd, outside the folders this job may read")
    assert "root:" not in result.output
    _nothing_at(job.output_dir)


def test_a_job_started_without_roots_reads_no_file(local: Local) -> None:
    store, uri, jobs = local
    job = dataset_job(store, uri, "fruit", FRUIT_DATA, INSTRUCTION)
    _refused(run_job("dataset", write_job(job, jobs), env={FILE_ROOTS_ENV: ""}),
             f"this job was started without {FILE_ROOTS_ENV}")
    _nothing_at(job.output_dir)


def test_a_missing_column_names_columns_not_data(local: Local, tmp_path: Path) -> None:
    """A CSV without a header row makes its first row the column names: they are cut short."""
    store, uri, jobs = local
    secret = "s3cr3t-" + "x" * 60
    data = tmp_path / "rows.csv"
    data.write_text(f"{secret},b\nc,d\n")
    job = dataset_job(store, uri, "rows", data, INSTRUCTION)
    result = run_job("dataset", write_job(job, jobs))
    _refused(result, "no column 'instruction'", "s3cr3t-")
    assert secret not in result.output


def test_a_model_folder_holding_a_symlink_out_is_refused(fruit: Prepared, tiny_model: Path,
                                                         tmp_path: Path) -> None:
    root, uri, data = fruit
    folder = tmp_path / "repo" / "models" / "tiny"
    shutil.copytree(tiny_model, folder)
    (folder / "extra.json").symlink_to("/etc/passwd")
    job = finetune_job(root / "store", uri, "linked", base_model(folder), [data], {})
    result = run_job("finetune", write_job(job, root / "jobs"), env={FILE_ROOTS_ENV: str(tmp_path / "repo")})
    _refused(result, f"{folder}/extra.json resolves to /etc/passwd, outside the folders this job may read")
    _nothing_at(job.output_dir)


def test_a_chat_template_outside_the_roots_is_refused(fruit: Prepared, tiny_model: Path,
                                                      tmp_path: Path) -> None:
    root, uri, data = fruit
    base = base_model(tiny_model).model_copy(update={"chat_template": "/etc/passwd.jinja"})
    job = finetune_job(root / "store", uri, "template", base, [data], {})
    roots = f"{tiny_model}{os.pathsep}{tmp_path}"
    _refused(run_job("finetune", write_job(job, root / "jobs"), env={FILE_ROOTS_ENV: roots}),
             "chat template /etc/passwd.jinja is outside the folders this job may read")
    _nothing_at(job.output_dir)


def test_a_job_whose_spec_does_not_validate_names_the_field(local: Local) -> None:
    from reconciler.jobs.jobfile import BaseModelRef, PreparedDataset

    store, uri, jobs = local
    data = PreparedDataset(name="d", location="/nowhere", digest="sha256:0", schema_type="instruction")
    job = finetune_job(store, uri, "steep", BaseModelRef(name="tiny", source="file:///nowhere"), [data],
                       {"training": {"learningRate": 5.0}})
    result = run_job("finetune", write_job(job, jobs))
    _refused(result, "the FineTune spec in it does not validate: spec.training.learningRate")
    assert "internal error" not in result.output
    _nothing_at(job.output_dir)
