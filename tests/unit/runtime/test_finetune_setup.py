"""Fine-tune setup that needs no training: checkpoint choice, trainer arguments, refusals."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from reconciler.jobs.jobfile import JobFile, MlflowTarget
from reconciler.runtime.finetune import FineTuneError, last_complete_checkpoint, training_arguments
from reconciler.specs.finetune import FineTuneSpec


def _checkpoint(folder: Path, step: int, complete: bool) -> None:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def test_a_checkpoint_cut_off_mid_save_is_skipped(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 8, complete=True)
    _checkpoint(tmp_path, 12, complete=False)  # killed while saving
    _checkpoint(tmp_path, 4, complete=True)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
    (tmp_path / "checkpoint-16").mkdir()
    (tmp_path / "checkpoint-16" / "trainer_state.json").write_text('{"global_step": 1')  # torn write
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
    assert last_complete_checkpoint(tmp_path / "absent") is None


def _job(spec: dict) -> tuple[JobFile, FineTuneSpec]:
    full = {"baseModel": "tiny", "datasets": [{"name": "d"}], **spec}
    job = JobFile(kind="FineTune", name="ft", fingerprint="a" * 64, spec=full, storage_root="/store",
                  mlflow=MlflowTarget(tracking_uri="sqlite:///x.db"))
    return job, FineTuneSpec.model_validate(full)


def test_the_spec_becomes_trainer_arguments() -> None:
    job, spec = _job({"training": {"learningRate": 1e-4, "microBatchSize": 2, "gradientAccumulation": 8,
                                   "warmupRatio": 0.05, "optimizer": "adamw_8bit", "precision": "fp32"},
                      "checkpoint": {"everySteps": 50, "keep": 3}})
    args = training_arguments(job, spec, strategy="zero3", cuda=False, has_validation=True, world_size=2)
    assert args["learning_rate"] == 1e-4 and args["per_device_train_batch_size"] == 2
    assert args["gradient_accumulation_steps"] == 8
    assert args.get("warmup_ratio", args["warmup_steps"]) == 0.05
    assert args["optim"] == "adamw_bnb_8bit"
    assert (args["save_strategy"], args["save_steps"], args["save_total_limit"]) == ("steps", 50, 3)
    assert args["deepspeed"]["zero_optimization"]["stage"] == 3
    assert args["ddp_backend"] == "gloo" and args["use_cpu"] is True
    assert args["output_dir"] == "/store/finetunes/ft/aaaaaaaaaaaaaaaa.checkpoints"


def test_per_epoch_evaluates_and_saves_at_the_end_of_each_epoch() -> None:
    job, spec = _job({"evaluation": {"perEpoch": True}, "checkpoint": {"perEpoch": True}})
    args = training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=True)
    assert (args["eval_strategy"], args["save_strategy"]) == ("epoch", "epoch")
    assert "eval_steps" not in args and "save_steps" not in args
    without_validation = training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=False)
    assert "eval_strategy" not in without_validation  # as with everySteps: nothing to evaluate on
    job, stopping = _job({"evaluation": {"perEpoch": True, "earlyStopping": {"patience": 2}}})
    args = training_arguments(job, stopping, strategy="ddp", cuda=False, has_validation=True)
    assert (args["eval_strategy"], args["save_strategy"]) == ("epoch", "epoch")
    assert args["load_best_model_at_end"] is True
    _, default = _job({})
    assert "eval_strategy" not in training_arguments(job, default, strategy="ddp", cuda=False,
                                                     has_validation=True)


def test_early_stopping_keeps_checkpoints_and_evaluations_aligned() -> None:
    job, spec = _job({"evaluation": {"everySteps": 20, "earlyStopping": {"metric": "eval_loss"}},
                      "checkpoint": {"everySteps": 30}})
    with pytest.raises(FineTuneError, match=r"checkpoint.everySteps \(30\) must be a multiple of "
                                            r"evaluation.everySteps \(20\)"):
        training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=True)
    job, spec = _job({"evaluation": {"everySteps": 20, "earlyStopping": {"metric": "eval_accuracy"}}})
    args = training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=True)
    assert args["greater_is_better"] is True and args["load_best_model_at_end"] is True
    assert (args["eval_steps"], args["save_steps"]) == (20, 20)
    with pytest.raises(FineTuneError, match="needs a validation split"):
        training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=False)


@dataclasses.dataclass
class _TrainingArguments4:
    """transformers 4.46's warm-up fields and how its Trainer reads them (`get_warmup_steps`)."""

    warmup_steps: int = 0
    warmup_ratio: float = 0.0

    def get_warmup_steps(self, num_training_steps: int) -> int:
        ratio = self.warmup_ratio
        return self.warmup_steps if self.warmup_steps > 0 else math.ceil(num_training_steps * ratio)


def _warmup_steps(arguments: type, args: dict, total_steps: int) -> int:
    names = {f.name for f in dataclasses.fields(arguments)}
    kept = {key: value for key, value in args.items() if key in names and key.startswith("warmup")}
    return arguments(**kept).get_warmup_steps(total_steps) if kept else 0


@pytest.mark.parametrize("version", ["4.46", "installed"])
def test_the_warmup_ratio_is_a_share_of_the_steps_on_every_transformers(version, monkeypatch) -> None:
    # 0.05 x 200 steps is 10 warm-up steps on transformers 4 (warmup_ratio) and 5 (warmup_steps < 1);
    # passing the ratio as warmup_steps warmed up for one step on 4.x.
    import transformers

    if version == "4.46":
        monkeypatch.setattr(transformers, "TrainingArguments", _TrainingArguments4)
    arguments = transformers.TrainingArguments
    job, spec = _job({"training": {"warmupRatio": 0.05}})
    args = training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=False)
    if version == "installed":
        built = arguments(**args)
        assert built.get_warmup_steps(200) == 10
    else:
        assert _warmup_steps(arguments, args, 200) == 10


def test_offload_becomes_deepspeed_and_fsdp_settings() -> None:
    def zero(distributed: dict) -> dict:
        job, spec = _job({"distributed": distributed, "resources": {"gpusPerNode": 1}})
        args = training_arguments(job, spec, strategy=distributed["strategy"], cuda=False,
                                  has_validation=False)
        return args["deepspeed"]["zero_optimization"]

    optimizer_only = zero({"strategy": "zero3", "offload": {"optimizer": True}})
    assert optimizer_only["offload_optimizer"]["device"] == "cpu" and "offload_param" not in optimizer_only
    parameters_only = zero({"strategy": "zero3", "offload": {"parameters": True}})
    assert parameters_only["offload_param"]["device"] == "cpu" and "offload_optimizer" not in parameters_only
    both = zero({"strategy": "zero3-offload"})
    assert "offload_param" in both and "offload_optimizer" in both
    zero2 = zero({"strategy": "zero2", "offload": {"optimizer": True}})
    assert zero2["stage"] == 2 and "offload_optimizer" in zero2 and "offload_param" not in zero2
    assert "offload_optimizer" not in zero({"strategy": "zero3"})

    both_offloads = {"parameters": True, "optimizer": True}
    job, spec = _job({"distributed": {"strategy": "fsdp", "offload": both_offloads}})
    args = training_arguments(job, spec, strategy="fsdp", cuda=False, has_validation=False)
    assert args["fsdp"] == "full_shard auto_wrap offload"
    job, spec = _job({"distributed": {"strategy": "fsdp"}})
    assert training_arguments(job, spec, strategy="fsdp", cuda=False, has_validation=False)["fsdp"] \
        == "full_shard auto_wrap"


def test_speed_switches_become_trainer_arguments(caplog: pytest.LogCaptureFixture) -> None:
    job, spec = _job({"training": {"dataloaderWorkers": 3, "kernels": "liger", "tf32": True}})
    with caplog.at_level("WARNING"):
        args = training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=False)
    assert args["dataloader_num_workers"] == 3
    assert args["use_liger_kernel"] is True
    assert "tf32" not in args  # no TF32 tensor cores on a CPU: transformers would refuse the flag
    assert "training.tf32 has no effect here" in caplog.text
    job, spec = _job({})
    args = training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=False)
    assert args["dataloader_num_workers"] == 0 and "use_liger_kernel" not in args


def test_liger_on_a_machine_without_cuda_is_refused_before_loading() -> None:
    from reconciler.runtime.finetune import check_hardware

    _, spec = _job({"training": {"kernels": "liger"}})
    with pytest.raises(FineTuneError, match="kernels liger needs a CUDA GPU"):
        check_hardware(spec, cuda=False)


def test_a_pruned_trial_logs_its_metric_unfiltered_and_where_it_can_be_judged() -> None:
    from reconciler.jobs.jobfile import PruningJob

    job, spec = _job({"evaluation": {"everySteps": 10}})
    plain = training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=True)
    assert plain["logging_steps"] == 1 and "logging_nan_inf_filter" not in plain
    trial = job.model_copy(update={"pruning": PruningJob(metric="eval_loss")})
    args = training_arguments(trial, spec, strategy="ddp", cuda=False, has_validation=True)
    assert args["logging_nan_inf_filter"] is False  # a diverged step logs nan, not a made-up average
    assert (args["logging_steps"], args["eval_strategy"], args["eval_steps"]) == (1, "steps", 10)
    with pytest.raises(FineTuneError, match="pruning.metric eval_loss is logged only at evaluations"):
        training_arguments(trial, spec, strategy="ddp", cuda=False, has_validation=False)
    on_loss = job.model_copy(update={"pruning": PruningJob(metric="loss")})
    assert training_arguments(on_loss, spec, strategy="ddp", cuda=False, has_validation=False)[
        "logging_nan_inf_filter"] is False


LLAMA_8B = {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "tie_word_embeddings": False}


def test_strategy_auto_on_a_gpu_sizes_what_the_method_adds(tmp_path: Path) -> None:
    """`strategy: auto` at job start counts GRPO's reward model and generation, as the plan did:
    a full fine-tune of an 8B model that DDP would hold for SFT needs more with them."""
    from reconciler.jobs.jobfile import BaseModelRef, ModelVersionRef
    from reconciler.runtime.distributed import resolve_strategy
    from reconciler.runtime.finetune import method_shape

    scorer = tmp_path / "rm"
    scorer.mkdir()
    (scorer / "config.json").write_text(json.dumps(LLAMA_8B))
    base = BaseModelRef(name="llama", source="file:///models/llama")
    reward = ModelVersionRef(fine_tune="rm", location=str(scorer), adapter=False, base_model=base)
    job, spec = _job({"method": "grpo", "rewards": [{"rewardModel": {"fineTune": "rm"}}],
                      "adapter": {"type": "lora"}, "training": {"microBatchSize": 8, "maxSeqLength": 1024},
                      "grpo": {"maxCompletionLength": 512}})
    job = job.model_copy(update={"reward_models": (reward,)})
    method = method_shape(job, spec)
    assert method.name == "grpo" and method.completion_length == 512 and len(method.reward_models) == 1
    assert method.reference_model  # beta 0.04 by default: free under the adapter, counted by the planner

    def auto(with_method: object, device_gb: float) -> str:
        return resolve_strategy("auto", model_config=LLAMA_8B, adapter="lora", rank=16,
                                target_modules="all-linear", sequence_length=1024 + 512, micro_batch=8,
                                gradient_checkpointing=True, world_size=1, device_bytes=device_gb * 1e9,
                                method=with_method)

    # 16 GB of frozen 8B weights fit a 24 GB GPU for SFT; a second 8B model (the reward model) does not
    assert auto(None, 24) == "ddp"
    assert auto(method, 24) != "ddp"
