"""Bad input to `tuneops run`: one clear line, exit 1, no traceback, and nothing left at the
output path that a later run could mistake for a result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.runtime_support import (
    FRUIT_DATA,
    base_model,
    dataset_job,
    finetune_job,
    free_port,
    needs_training,
    prepared,
    run_job,
    write_job,
)

pytestmark = needs_training
INSTRUCTION = {"schema": {"type": "instruction"}}


def _refused(result, *phrases: str) -> None:  # noqa: ANN001
    assert result.exit_code == 1, result.output[-3000:]
    assert "Traceback" not in result.output, result.output[-3000:]
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr[-3000:]


def _nothing_at(output: Path) -> None:
    assert not output.exists(), f"{output} was left behind"
    if output.parent.exists():
        assert not list(output.parent.glob(f".{output.name}*")), "a temporary folder was left behind"


@pytest.fixture
def local(tmp_path: Path):
    return tmp_path / "store", f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "jobs"


def test_missing_dataset_file(local, tmp_path: Path) -> None:  # noqa: ANN001
    store, uri, jobs = local
    job = dataset_job(store, uri, "gone", tmp_path / "nowhere.jsonl", INSTRUCTION)
    _refused(run_job("dataset", write_job(job, jobs)), "nowhere.jsonl", "does not exist")
    _nothing_at(job.output_dir)


def test_malformed_jsonl_line_names_the_line(local, tmp_path: Path) -> None:  # noqa: ANN001
    store, uri, jobs = local
    data = tmp_path / "broken.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n')
    job = dataset_job(store, uri, "broken", data, INSTRUCTION)
    _refused(run_job("dataset", write_job(job, jobs)), f"{data}:2")
    _nothing_at(job.output_dir)


def test_missing_column_names_it(local, tmp_path: Path) -> None:  # noqa: ANN001
    store, uri, jobs = local
    data = tmp_path / "columns.jsonl"
    data.write_text('{"question": "a", "output": "b"}\n')
    job = dataset_job(store, uri, "columns", data, INSTRUCTION)
    _refused(run_job("dataset", write_job(job, jobs)), "'instruction'", "question")
    _nothing_at(job.output_dir)


def test_empty_split_after_cleaning(local, tmp_path: Path) -> None:  # noqa: ANN001
    store, uri, jobs = local
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": "a"}) + "\n" for i in range(3)))
    job = dataset_job(
        store, uri, "tiny", data, {**INSTRUCTION, "split": {"train": 0.5, "validation": 0.25, "test": 0.25}}
    )
    _refused(run_job("dataset", write_job(job, jobs)), "empty after cleaning")
    _nothing_at(job.output_dir)


def test_sha256_mismatch(local) -> None:  # noqa: ANN001
    store, uri, jobs = local
    job = dataset_job(store, uri, "pinned", FRUIT_DATA, {**INSTRUCTION, "sha256": "0" * 64})
    _refused(run_job("dataset", write_job(job, jobs)), "sha256", "0" * 64)
    _nothing_at(job.output_dir)


def test_unreachable_mlflow_is_retried_then_named(local) -> None:  # noqa: ANN001
    store, _, jobs = local
    uri = f"http://127.0.0.1:{free_port()}"
    job = dataset_job(store, uri, "fruit", FRUIT_DATA, INSTRUCTION)
    result = run_job("dataset", write_job(job, jobs))
    _refused(result, f"cannot reach MLflow at {uri}", "after 3 attempts")
    _nothing_at(job.output_dir)


def test_a_job_file_for_another_command(local) -> None:  # noqa: ANN001
    store, uri, jobs = local
    job_file = write_job(dataset_job(store, uri, "fruit", FRUIT_DATA, INSTRUCTION), jobs)
    _refused(run_job("finetune", job_file), "is a Dataset job", f"tuneops run dataset --job {job_file}")


@pytest.fixture(scope="module")
def fruit(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bad-input")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    job = dataset_job(root / "store", uri, "fruit-colors", FRUIT_DATA, INSTRUCTION)
    assert run_job("dataset", write_job(job, root / "jobs")).exit_code == 0
    return root, uri, prepared(job)


def test_base_model_folder_without_weights(fruit, tiny_model: Path, tmp_path: Path) -> None:  # noqa: ANN001
    root, uri, data = fruit
    hollow = tmp_path / "hollow"
    shutil.copytree(tiny_model, hollow, ignore=shutil.ignore_patterns("*.safetensors"))
    job = finetune_job(root / "store", uri, "hollow", base_model(hollow), [data], {})
    _refused(run_job("finetune", write_job(job, root / "jobs")), f"{hollow} has no weights")
    _nothing_at(job.output_dir)


def test_adapter_rank_above_hidden_size(fruit, tiny_model: Path) -> None:  # noqa: ANN001
    root, uri, data = fruit
    job = finetune_job(
        root / "store", uri, "huge-rank", base_model(tiny_model), [data], {"adapter": {"r": 128}}
    )
    _refused(
        run_job("finetune", write_job(job, root / "jobs")),
        "adapter.r 128 is larger than the model's hidden size 64",
    )
    _nothing_at(job.output_dir)


def test_qlora_is_refused_without_cuda(fruit, tiny_model: Path) -> None:  # noqa: ANN001
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: QLoRA is allowed here (see the gpu-marked tests)")
    root, uri, data = fruit
    job = finetune_job(
        root / "store", uri, "qlora", base_model(tiny_model), [data], {"adapter": {"type": "qlora"}}
    )
    _refused(run_job("finetune", write_job(job, root / "jobs")), "qlora needs a CUDA GPU")
    _nothing_at(job.output_dir)
