"""GPU-only paths: QLoRA (bitsandbytes 4-bit), bf16 training. Skipped without CUDA; run them
where the device tool lends a GPU, and record what they measured in docs/benchmarks.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.runtime_support import (
    FRUIT_DATA,
    Prepared,
    base_model,
    dataset_job,
    finetune_job,
    needs_training,
    prepared,
    run_job,
    write_job,
)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


pytestmark = [pytest.mark.gpu, pytest.mark.slow, needs_training,
              pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU; none on this machine")]


@pytest.fixture(scope="module")
def fruit(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    root = tmp_path_factory.mktemp("gpu")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    job = dataset_job(root / "store", uri, "fruit-colors", FRUIT_DATA, {"schema": {"type": "instruction"}})
    assert run_job("dataset", write_job(job, root / "jobs")).exit_code == 0
    return root, uri, prepared(job)


@pytest.mark.parametrize("adapter", [{"type": "qlora", "r": 8}, {"type": "lora", "r": 8}])
def test_bf16_training_on_the_gpu(fruit: Prepared, tiny_model: Path, adapter: dict) -> None:
    if adapter["type"] == "qlora":
        pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    root, uri, data = fruit
    spec = {"adapter": adapter, "training": {"maxSteps": 20, "learningRate": 1e-2, "microBatchSize": 8,
                                             "maxSeqLength": 64, "precision": "bf16"}}
    job = finetune_job(root / "store", uri, f"gpu-{adapter['type']}", base_model(tiny_model), [data], spec)
    result = run_job("finetune", write_job(job, root / "jobs"))
    assert result.exit_code == 0, result.output[-4000:]
    config = json.loads((job.output_dir / "tuneops_config.json").read_text())
    assert config["trainingArguments"]["bf16"] is True
    assert (job.output_dir / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("switches", [
    pytest.param({"kernels": "liger"}, id="liger"),
    pytest.param({"tf32": True, "precision": "fp32"}, id="tf32"),
    pytest.param({"attention": "flash_attention_2", "packing": True}, id="flash-attention-packed"),
])
def test_speed_switches_train_on_the_gpu(fruit: Prepared, tiny_model: Path, switches: dict) -> None:
    """The GPU-only speed switches: each trains and lands in the Trainer's arguments. liger needs
    the liger-kernel package and flash-attention the flash_attn package in the environment."""
    if switches.get("kernels") == "liger":
        pytest.importorskip("liger_kernel", reason="needs the liger-kernel package")
    if switches.get("attention") == "flash_attention_2":
        pytest.importorskip("flash_attn", reason="needs the flash_attn package")
    root, uri, data = fruit
    training = {"maxSteps": 10, "learningRate": 1e-2, "microBatchSize": 8, "maxSeqLength": 64,
                "precision": "bf16", **switches}
    name = "gpu-" + "-".join(sorted(switches))
    job = finetune_job(root / "store", uri, name.lower(), base_model(tiny_model), [data],
                       {"adapter": {"type": "lora", "r": 8}, "training": training})
    result = run_job("finetune", write_job(job, root / "jobs"))
    assert result.exit_code == 0, result.output[-4000:]
    arguments = json.loads((job.output_dir / "tuneops_config.json").read_text())["trainingArguments"]
    if "kernels" in switches:
        assert arguments["use_liger_kernel"] is True
    if "tf32" in switches:
        import torch

        assert arguments.get("tf32") is (True if torch.cuda.get_device_capability()[0] >= 8 else None)
