"""Training behaviour that users rely on: the same seed gives the same loss, a killed job resumes
from its checkpoint in the same MLflow run, and DeepSpeed ZeRO runs under torchrun on CPU.

These use MLflow's default local SQLite URI (no server), the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.jobs.jobfile import JobFile
from tests.support.runtime_support import (
    FRUIT_DATA,
    Prepared,
    base_model,
    dataset_job,
    finetune_job,
    free_port,
    kill_at_checkpoint,
    needs_training,
    prepared,
    run_job,
    write_job,
)

pytestmark = [pytest.mark.slow, needs_training]

SHORT = {
    "adapter": {"r": 4},
    "training": {
        "maxSteps": 6,
        "learningRate": 1e-2,
        "microBatchSize": 4,
        "maxSeqLength": 64,
        "precision": "fp32",
    },
}


@pytest.fixture(scope="module")
def prepared_fruit(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    root = tmp_path_factory.mktemp("training")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    job = dataset_job(root / "store", uri, "fruit-colors", FRUIT_DATA, {"schema": {"type": "instruction"}})
    result = run_job("dataset", write_job(job, root / "jobs"))
    assert result.exit_code == 0, result.output[-3000:]
    return root, uri, prepared(job)


def _results(job: JobFile) -> dict:
    return json.loads((job.output_dir / "training_results.json").read_text())


def _runs(uri: str, fingerprint: str, experiment: str = "tuneops-tests") -> list:
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment)
    return client.search_runs([experiment.experiment_id], f"tags.`tuneops.fingerprint` = '{fingerprint}'")


def test_same_seed_gives_the_same_final_loss(prepared_fruit: Prepared, tiny_model: Path) -> None:
    root, uri, data = prepared_fruit
    losses = []
    for attempt in ("a", "b"):
        job = finetune_job(root / f"store-{attempt}", uri, "seeded", base_model(tiny_model), [data], SHORT)
        result = run_job("finetune", write_job(job, root / f"jobs-{attempt}"))
        assert result.exit_code == 0, result.output[-3000:]
        losses.append(_results(job)["train_loss"])
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert (root / "artifacts").is_dir(), "artifacts belong beside the SQLite database, not in ./mlruns"
    other_seed = dict(SHORT, training=dict(SHORT["training"], seed=7))
    job = finetune_job(root / "store-c", uri, "seeded", base_model(tiny_model), [data], other_seed)
    assert run_job("finetune", write_job(job, root / "jobs-c")).exit_code == 0
    assert _results(job)["train_loss"] != pytest.approx(losses[0], abs=1e-6)  # the seed matters


def test_a_killed_job_resumes_from_its_checkpoint_in_the_same_run(prepared_fruit: Prepared,
                                                                  tiny_model: Path) -> None:
    root, uri, data = prepared_fruit
    spec = {
        "adapter": {"r": 4},
        "checkpoint": {"everySteps": 4, "keep": 2},
        "training": {
            # Enough steps after checkpoint-8 that the job cannot finish before it is killed,
            # however fast the machine: the kill must land mid-training.
            "maxSteps": 96,
            "learningRate": 1e-2,
            "microBatchSize": 4,
            "maxSeqLength": 64,
            "precision": "fp32",
        },
    }
    job = finetune_job(root / "store-resume", uri, "resumable", base_model(tiny_model), [data], spec)
    job_file = write_job(job, root / "jobs-resume")
    checkpoints = kill_at_checkpoint(job, job_file, 8)
    assert not job.output_dir.exists()
    saved = checkpoints.glob("checkpoint-*/trainer_state.json")
    complete = max(int(state.parent.name.split("-")[1]) for state in saved)

    result = run_job("finetune", job_file)
    assert result.exit_code == 0, result.output[-3000:]
    assert _results(job)["global_step"] == 96
    runs = _runs(uri, job.fingerprint)
    assert len(runs) == 1, "the restarted job started a second MLflow run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["tuneops.resumed_from"] == f"checkpoint-{complete}"
    assert 8 <= complete < 96
    import mlflow

    steps = {m.step for m in mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, "loss")}
    assert {1, 96} <= steps  # both attempts logged into the one run


@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_deepspeed_under_torchrun_with_two_cpu_processes(
    prepared_fruit: Prepared,
    tiny_model: Path,
    strategy: str,
) -> None:
    root, uri, data = prepared_fruit
    spec = dict(SHORT, distributed={"strategy": strategy})
    job = finetune_job(
        root / f"store-{strategy}", uri, f"ds-{strategy}", base_model(tiny_model), [data], spec
    )
    result = run_job(
        "finetune",
        write_job(job, root / f"jobs-{strategy}"),
        processes=2,
        env={"MASTER_PORT": str(free_port())},
    )
    assert result.exit_code == 0, result.output[-5000:]
    assert (job.output_dir / "adapter_model.safetensors").is_file()
    config = json.loads((job.output_dir / "deepspeed_config.json").read_text())
    assert config["zero_optimization"]["stage"] == (2 if strategy == "zero2" else 3)
    assert config["train_micro_batch_size_per_gpu"] == "auto"
    runs = _runs(uri, job.fingerprint)
    assert len(runs) == 1  # only rank 0 talks to MLflow
    assert runs[0].data.params["resolved.processes"] == "2"
    assert runs[0].data.params["resolved.strategy"] == strategy


def test_two_nodes_of_one_process_each_train_as_one_job(prepared_fruit: Prepared, tiny_model: Path) -> None:
    """Multi-node as the Kubernetes launchers run it: one torchrun per node, node ranks 0 and 1,
    rendezvous at node 0. Here both "nodes" are processes on this machine."""
    root, uri, data = prepared_fruit
    spec = dict(SHORT, distributed={"strategy": "ddp"})
    job = finetune_job(root / "store-nodes", uri, "two-nodes", base_model(tiny_model), [data], spec)
    job_file = write_job(job, root / "jobs-nodes")
    port = str(free_port())
    env = {**os.environ, "NO_COLOR": "1", "DS_ACCELERATOR": "cpu", "TUNEOPS_MLFLOW_RETRY_DELAYS": "0.2"}
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
             "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port,
             "-m", "reconciler", "run", "finetune", "--job", str(job_file)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert (job.output_dir / "adapter_model.safetensors").is_file()
    runs = _runs(uri, job.fingerprint)
    assert len(runs) == 1  # only global rank 0 talks to MLflow
    assert runs[0].data.params["resolved.processes"] == "2"


def test_packing_keeps_attention_within_each_example(prepared_fruit: Prepared, tiny_model: Path) -> None:
    """Each example of a packed row gets the logits it gets alone. A control (the same row
    without position_ids, so one causal sequence) must differ, or the check could not see a leak."""
    import torch

    from reconciler.runtime import loading
    from reconciler.runtime.finetune import build_trainer, peft_config, training_arguments
    from reconciler.runtime.training_data import load_records
    from reconciler.specs.finetune import FineTuneSpec

    root, uri, data = prepared_fruit
    packed_training = dict(SHORT["training"], packing=True, microBatchSize=1, maxSeqLength=256)
    spec_dict = dict(SHORT, training=packed_training)
    job = finetune_job(root / "store-packing", uri, "packed", base_model(tiny_model), [data], spec_dict)
    spec = FineTuneSpec.model_validate(job.spec)
    model = loading.load_base_model(job.base_model)
    records = load_records(job.datasets, "train", spec.method, spec.training.seed)[:40]
    arguments = training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=False)
    trainer = build_trainer(spec, model, loading.load_tokenizer(job.base_model), peft_config(spec),
                            arguments, records, [])
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model.eval()
    assert "position_ids" in batch, "packed rows carry no position_ids: examples would attend to each other"
    positions = batch["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist() + [positions.numel()]
    assert len(starts) > 3, "the row packs several examples"
    ids = batch["input_ids"]
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=batch["position_ids"], use_cache=False).logits[0]
        control = model(input_ids=ids, use_cache=False).logits[0]
        leak = 0.0
        for start, end in zip(starts[:-1], starts[1:], strict=True):
            alone = model(input_ids=ids[:, start:end], use_cache=False).logits[0]
            assert (packed[start:end] - alone).abs().max() < 1e-3, f"example at {start} saw its neighbours"
            if start > 0:
                leak = max(leak, float((control[start:end] - alone).abs().max()))
    assert leak > 1e-2, "the control did not differ: this check could not see a leak"


def _bf16_copy(model: Path, into: Path) -> Path:
    """The tiny model stored in bf16, as most published checkpoints are."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16).save_pretrained(into)
    for name in model.iterdir():
        if name.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(name, into / name.name)
    return into


def test_weights_train_in_the_precision_the_spec_asks_for(prepared_fruit: Prepared, tiny_model: Path) -> None:
    """A full fine-tune of a bf16 checkpoint keeps fp32 master weights (pure bf16 Adam rounds
    small updates away) and is saved back in bf16; under DeepSpeed the model is handed over
    in bf16, as loaded. A LoRA base under bf16 is held in bf16 even when stored in fp32, which
    is what the planner counts."""
    import mlflow
    from safetensors import safe_open

    root, uri, data = prepared_fruit
    bf16_model = _bf16_copy(tiny_model, root / "tiny-bf16")
    bf16 = {"training": dict(SHORT["training"], maxSteps=2, precision="bf16")}
    zero2 = {"adapter": {"type": "none"}, **bf16, "distributed": {"strategy": "zero2"}}
    cases = {"full": (bf16_model, {"adapter": {"type": "none"}, **bf16}, ("float32", "none"), "model"),
             "lora": (tiny_model, {"adapter": {"r": 4}, **bf16}, ("float32", "bfloat16"), "adapter_model"),
             # DeepSpeed's engine runs the module in bf16 and keeps the fp32 masters itself
             "zero2": (bf16_model, zero2, ("bfloat16", "none"), "model")}
    for name, (model, spec, dtypes, weights) in cases.items():
        job = finetune_job(root / f"store-{name}", uri, f"dtype-{name}", base_model(model), [data], spec)
        processes = 2 if name == "zero2" else 1
        result = run_job("finetune", write_job(job, root / f"jobs-dtype-{name}"), processes=processes,
                         env={"MASTER_PORT": str(free_port())})
        assert result.exit_code == 0, result.output[-3000:]
        params = mlflow.MlflowClient(uri).get_run(_runs(uri, job.fingerprint)[0].info.run_id).data.params
        assert (params["resolved.trained_weights_dtype"], params["resolved.frozen_weights_dtype"]) == dtypes
        with safe_open(job.output_dir / f"{weights}.safetensors", "pt") as saved:
            stored = {str(saved.get_slice(key).get_dtype()) for key in saved.keys()}  # noqa: SIM118 - safe_open is not iterable
        assert stored == ({"F32"} if name == "lora" else {"BF16"}), stored  # the adapter stays fp32


def test_a_job_that_fails_after_training_retrains_exactly_the_same_steps(
        prepared_fruit: Prepared, tiny_model: Path, tmp_path: Path) -> None:
    """MLflow refuses the model's upload after the last step. The retry resumes from the
    checkpoint before the end (none is kept at the last step: resuming there would make the
    Trainer take one step too many) and ends with the weights of a run never interrupted."""
    import mlflow
    import torch
    from safetensors.torch import load_file

    root, uri, data = prepared_fruit
    spec = {"adapter": {"r": 4}, "checkpoint": {"everySteps": 4, "keep": 3},
            "training": dict(SHORT["training"], maxSteps=10, scheduler="constant")}
    reference = finetune_job(root / "store-whole", uri, "retrained", base_model(tiny_model), [data], spec)
    assert run_job("finetune", write_job(reference, root / "jobs-whole")).exit_code == 0

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("artifacts cannot be written under a file\n")
    blocked = (blocker / "artifacts").as_uri()
    mlflow.MlflowClient(uri).create_experiment("blocked-upload", artifact_location=blocked)
    job = finetune_job(root / "store-retry", uri, "retrained", base_model(tiny_model), [data], spec,
                       experiment="blocked-upload")
    job_file = write_job(job, root / "jobs-retry")
    failed = run_job("finetune", job_file, env={"TUNEOPS_MLFLOW_RETRY_DELAYS": "0"})
    assert failed.exit_code != 0
    checkpoints = job.output_dir.with_name(job.output_dir.name + ".checkpoints")
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]

    blocker.unlink()
    blocker.mkdir()
    result = run_job("finetune", job_file)
    assert result.exit_code == 0, result.output[-3000:]
    assert _results(job)["global_step"] == 10
    runs = _runs(uri, job.fingerprint, "blocked-upload")
    resumed = [(r.info.status, r.data.tags.get("tuneops.resumed_from")) for r in runs]
    assert resumed == [("FINISHED", "checkpoint-8")]  # the failed run, continued
    trained, whole = (load_file(j.output_dir / "adapter_model.safetensors") for j in (job, reference))
    assert trained.keys() == whole.keys()
    for name, tensor in whole.items():
        torch.testing.assert_close(trained[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
