"""`tuneops run finetune`: train with transformers + peft + trl, save, register, record lineage.

Works unchanged under `torchrun --nproc_per_node N` and across nodes: every rank trains; only
rank 0 talks to MLflow and moves the result into place. Outputs are saved into a staging
folder and renamed to the fingerprint-keyed output folder only when complete. Checkpoints live
beside it, so a restarted job (`resume: auto`) continues from the last one and in the same
MLflow run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import PermanentError
from reconciler.jobs.jobfile import JobFile
from reconciler.runtime.distributed import Processes, deepspeed_config, fsdp_arguments, resolve_strategy
from reconciler.specs.finetune import FineTuneSpec

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig, Trainer

    from reconciler.runtime.lineage import JobRun
    from reconciler.runtime.pruning import MedianPruning, TrialPruned
    from reconciler.runtime.rewards import RewardFunction

OPTIMIZER_NAMES = {"adamw_8bit": "adamw_bnb_8bit"}  # spec name -> transformers' name


class FineTuneError(PermanentError, ValueError):
    """A fine-tune that cannot run as specified; the message says why and what to change."""


def checkpoints_dir(job: JobFile) -> Path:
    return job.output_dir.with_name(job.output_dir.name + ".checkpoints")


def staging_dir(job: JobFile) -> Path:
    return job.output_dir.with_name(f".{job.output_dir.name}.staging")


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was written to the end. The Trainer writes trainer_state.json
    last and renames nothing, so a job killed mid-save leaves a folder without it, which
    `transformers.trainer_utils.get_last_checkpoint` would pick and then fail to load."""
    if not folder.is_dir():
        return None
    steps = []
    for candidate in folder.glob("checkpoint-*"):
        suffix = candidate.name.removeprefix("checkpoint-")
        if suffix.isdigit() and candidate.is_dir():
            steps.append((int(suffix), candidate))
    for _, candidate in sorted(steps, reverse=True):
        try:
            json.loads((candidate / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return str(candidate)
    return None


def check_batch(spec: FineTuneSpec) -> None:
    """The batch settings the method's trainer refuses, said as validation says them: a Sweep's
    trial may combine values that each validated on their own."""
    for conflict in spec.batch_conflicts():
        raise FineTuneError(f"{conflict.message}; {conflict.hint}")


def check_hardware(spec: FineTuneSpec, cuda: bool) -> None:
    if spec.adapter.type == "qlora" and not cuda:
        raise FineTuneError(
            "adapter.type qlora needs a CUDA GPU (bitsandbytes 4-bit); this machine "
            "has none. Use adapter.type: lora to train on CPU"
        )
    if spec.adapter.quantization is not None and not cuda:
        raise FineTuneError("adapter.quantization needs a CUDA GPU (bitsandbytes); this machine has none")
    if spec.training.attention == "flash_attention_2" and not cuda:
        raise FineTuneError("training.attention flash_attention_2 needs a CUDA GPU; this machine has "
                            "none. Use attention: auto (sdpa on CPU) or sdpa")
    if spec.training.kernels == "liger":
        if not cuda:
            raise FineTuneError("training.kernels liger needs a CUDA GPU (the Liger kernels are Triton "
                                "kernels); this machine has none. Use kernels: none on CPU")
        if importlib.util.find_spec("liger_kernel") is None:
            raise FineTuneError("training.kernels liger needs the liger-kernel package in the training "
                                "image: pip install liger-kernel")
    if spec.training.precision == "fp16" and not cuda:
        raise FineTuneError("training.precision fp16 needs a GPU; use fp32 or bf16 on CPU")
    if spec.method == "grpo" and spec.grpo.use_vllm:
        if not cuda:
            raise FineTuneError("grpo.useVllm generates with vLLM, which needs a CUDA GPU; this machine has "
                                "none. Set useVllm: false to generate with transformers")
        if importlib.util.find_spec("vllm") is None:
            raise FineTuneError("grpo.useVllm needs the vllm package in the training image: pip install vllm")
    if spec.distributed.strategy == "zero3-offload" and spec.adapter.type == "qlora":
        raise FineTuneError(
            "QLoRA cannot be combined with ZeRO-3 (quantized weights cannot be partitioned); use ddp or fsdp"
        )


def tf32_available(cuda: bool) -> bool:
    """Whether this machine has TF32 tensor cores (a CUDA GPU of compute capability 8.0 or newer);
    `training.tf32` elsewhere changes nothing, and the log says so."""
    import torch

    available = cuda and torch.cuda.get_device_capability()[0] >= 8
    if not available:
        log.warning("training.tf32 has no effect here: TF32 needs an Ampere or newer CUDA GPU")
    return available


def check_adapter_fits(spec: FineTuneSpec, config: Any) -> None:
    hidden = getattr(config, "hidden_size", None)
    if spec.adapter.type != "none" and hidden and spec.adapter.r > hidden:
        raise FineTuneError(
            f"adapter.r {spec.adapter.r} is larger than the model's hidden size "
            f"{hidden}; a LoRA rank above the smaller side of a matrix adds nothing. "
            f"Use r <= {hidden} (8 to 64 is usual)"
        )


def precision_flags(precision: str, cuda: bool) -> dict[str, bool]:
    import torch

    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def frozen_base_dtype(spec: FineTuneSpec, cuda: bool) -> torch.dtype | None:
    """The dtype to load a LoRA or QLoRA base in: the compute dtype, whatever dtype the
    checkpoint is stored in. The frozen base is only read, so 16 bits under bf16 or fp16, as
    the planner counts it (PEFT keeps the adapter itself in fp32); QLoRA computes in bf16.
    None for a full fine-tune, which loads the checkpoint as stored (`train_in_fp32`)."""
    import torch

    if spec.adapter.type == "qlora":
        return torch.bfloat16
    if spec.adapter.type == "none":
        return None
    flags = precision_flags(spec.training.precision, cuda)
    return torch.bfloat16 if flags["bf16"] else torch.float16 if flags["fp16"] else torch.float32


def engine_keeps_fp32_masters(strategy: str, spec: FineTuneSpec, cuda: bool) -> bool:
    """Whether DeepSpeed trains this run in 16 bits: its engine casts the module to bf16 or fp16
    and keeps fp32 master weights in its optimizer, so the model is handed over as loaded (an
    fp32 copy first would only double every rank's CPU memory while loading)."""
    flags = precision_flags(spec.training.precision, cuda)
    return strategy.startswith("zero") and (flags["bf16"] or flags["fp16"])


def train_in_fp32(model: Any) -> torch.dtype:
    """Upcast a fully fine-tuned model's weights to fp32 and return the dtype they were stored in.

    transformers 5 loads a checkpoint in its own dtype, and most published models are stored
    in bf16, so a full fine-tune would otherwise train pure bf16: Adam's updates smaller than
    bf16's resolution (about 0.4% of a weight) round away, and the optimizer holds half the
    memory the planner counts. Mixed precision keeps the trained weights in fp32 (autocast
    computes in 16 bits); the result is saved back in the stored dtype."""
    import torch

    stored = next(model.parameters()).dtype
    if stored != torch.float32:
        model.to(torch.float32)
    return stored


def peft_config(spec: FineTuneSpec, *, tied_embeddings: bool = False) -> LoraConfig | None:
    """The adapter's LoRA settings. On a model whose output head shares the embedding weights,
    modulesToSave trains one copy of them, still shared (as the planner counts it), not two. A
    reward model's adapter is a sequence-classification one: PEFT then trains its new score head
    in full beside it (and saves it with the adapter)."""
    if spec.adapter.type == "none":
        return None
    from peft import LoraConfig

    adapter = spec.adapter
    targets = (
        adapter.target_modules if isinstance(adapter.target_modules, str) else list(adapter.target_modules)
    )
    return LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha or 2 * adapter.r,
        lora_dropout=adapter.dropout,
        target_modules=targets,
        modules_to_save=list(adapter.modules_to_save) or None,
        ensure_weight_tying=tied_embeddings and bool(adapter.modules_to_save),
        task_type="SEQ_CLS" if spec.method == "reward" else "CAUSAL_LM",
        bias="none",
    )


def quantization_config(spec: FineTuneSpec) -> BitsAndBytesConfig | None:
    quantization = spec.adapter.quantization
    if quantization is None:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if quantization.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.quant_type,
        bnb_4bit_use_double_quant=quantization.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def warmup_arguments(ratio: float) -> dict[str, Any]:
    """The warm-up as a share of the optimizer steps, on every transformers the project allows.

    transformers 4 has `warmup_ratio` (a share) and `warmup_steps` (an int: steps); transformers 5
    dropped `warmup_ratio` and reads a `warmup_steps` below 1 as the share. Passing the ratio as
    `warmup_steps` on 4.x meant a warm-up of one step. Both readings give ceil(ratio x total steps).
    """
    import dataclasses

    from transformers import TrainingArguments

    if "warmup_ratio" in {f.name for f in dataclasses.fields(TrainingArguments)}:
        return {"warmup_ratio": ratio, "warmup_steps": 0}
    return {"warmup_steps": ratio}


def training_arguments(
    job: JobFile, spec: FineTuneSpec, *, strategy: str, cuda: bool, has_validation: bool, world_size: int = 1
) -> dict[str, Any]:
    """The Trainer arguments the spec resolves to (the same for SFT, DPO and pretraining)."""
    t = spec.training
    args: dict[str, Any] = {
        "output_dir": str(checkpoints_dir(job)),
        "num_train_epochs": t.epochs,
        "max_steps": t.max_steps or -1,
        "learning_rate": t.learning_rate,
        "per_device_train_batch_size": t.micro_batch_size,
        "per_device_eval_batch_size": t.micro_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation,
        "lr_scheduler_type": t.scheduler,
        **warmup_arguments(t.warmup_ratio),
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "optim": OPTIMIZER_NAMES.get(t.optimizer, t.optimizer),
        "seed": t.seed,
        "data_seed": t.seed,
        "gradient_checkpointing": t.gradient_checkpointing,
        "logging_steps": 1,
        "logging_first_step": True,
        "report_to": "none",
        "disable_tqdm": True,
        "save_total_limit": spec.checkpoint.keep,
        "use_cpu": not cuda,
        "include_num_input_tokens_seen": "all",
        "dataloader_num_workers": t.dataloader_workers,
        **precision_flags(t.precision, cuda),
    }
    if t.gradient_checkpointing:
        args["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if t.kernels == "liger":
        args["use_liger_kernel"] = True
    if t.tf32 and tf32_available(cuda):
        args["tf32"] = True
    if spec.checkpoint.every_steps:
        args.update(save_strategy="steps", save_steps=spec.checkpoint.every_steps)
    else:
        args["save_strategy"] = "epoch"
    evaluation = spec.evaluation
    if has_validation and evaluation.every_steps:
        args.update(eval_strategy="steps", eval_steps=evaluation.every_steps)
    elif has_validation and (evaluation.per_epoch or evaluation.early_stopping):
        args["eval_strategy"] = "epoch"
    if evaluation.early_stopping:
        if not has_validation:
            raise FineTuneError("evaluation.earlyStopping needs a validation split; the datasets have none")
        stopping = evaluation.early_stopping
        greater = stopping.greater_is_better
        if greater is None:
            greater = "loss" not in stopping.metric
        args.update(
            metric_for_best_model=stopping.metric, greater_is_better=greater, load_best_model_at_end=True
        )
        if evaluation.every_steps:
            every = spec.checkpoint.every_steps or evaluation.every_steps
            if every % evaluation.every_steps:
                raise FineTuneError(
                    f"early stopping keeps the best checkpoint, so checkpoint.everySteps ({every}) must "
                    f"be a multiple of evaluation.everySteps ({evaluation.every_steps})"
                )
            args.update(save_strategy="steps", save_steps=every)
        else:
            args["save_strategy"] = "epoch"
    if job.pruning is not None:
        # A diverged step must log nan: the Trainer's default filter logs the running average
        # instead (0.0 when the first steps are nan), which would make it look like the best trial.
        # `loss` is logged every step already (logging_steps 1), `eval_loss` at each evaluation.
        args["logging_nan_inf_filter"] = False
        if job.pruning.metric.startswith("eval_") and args.get("eval_strategy") not in ("steps", "epoch"):
            raise FineTuneError(
                f"pruning.metric {job.pruning.metric} is logged only at evaluations during training, "
                "and this fine-tune has none: give it a validation split and evaluation.everySteps, "
                "or prune on loss"
            )
    if not cuda and world_size > 1:
        args["ddp_backend"] = "gloo"
    offload = spec.distributed.offload
    ds = deepspeed_config(strategy, pin_memory=cuda, offload_parameters=bool(offload and offload.parameters),
                          offload_optimizer=bool(offload and offload.optimizer))
    if ds is not None:
        args["deepspeed"] = ds
    elif strategy == "fsdp":
        args.update(fsdp_arguments(spec.adapter.type, offload=offload is not None))
    return args


def method_shape(job: JobFile, spec: FineTuneSpec) -> Any:
    """What the method adds to the memory `strategy: auto` sizes, as the planner counts it. A
    reward model is sized from the config.json saved with its full weights; one saved as an adapter
    is left out (its base's config is not at hand here), so `auto` may then pick too small."""
    from reconciler.sizing.memory import Architecture, MethodShape

    grpo = spec.method == "grpo"
    reward_models = []
    for ref in job.reward_models or ():
        config = Path(ref.location) / "config.json"
        if not ref.adapter and config.is_file():
            reward_models.append(Architecture.from_config(json.loads(config.read_text(encoding="utf-8"))))
    return MethodShape(
        name=spec.method, reference_model=spec.has_reference_model, reward_models=tuple(reward_models),
        completion_length=spec.grpo.max_completion_length if grpo else 0,
        generation_micro_batches=spec.training.gradient_accumulation if grpo else 1,
        use_vllm=grpo and spec.grpo.use_vllm)


def run_finetune(job: JobFile) -> Path | TrialPruned:
    """Train, then save the adapter (or weights), tokenizer, configs and model card; return the
    output folder, or, for a sweep trial that pruning stopped, why (nothing is saved then).
    Raises FineTuneError (and the loaders' errors) for what a user must fix."""
    import torch

    from reconciler.runtime import loading
    from reconciler.runtime.training_data import load_records

    spec = FineTuneSpec.model_validate(job.spec)
    processes = Processes.from_env()
    cuda = torch.cuda.is_available()
    check_batch(spec)
    check_hardware(spec, cuda)
    base_ref = job.base_model or (job.start_from.base_model if job.start_from else None)
    if base_ref is None:
        raise FineTuneError("the job file names no base model (baseModel or startFrom)")
    if not job.datasets:
        raise FineTuneError("the job file names no prepared datasets")

    if processes.is_main:  # fail in seconds, not after loading the model, when MLflow is away
        from reconciler.runtime.lineage import ensure_experiment

        ensure_experiment(job)
    tokenizer = (
        loading.load_model_tokenizer(job.start_from) if job.start_from else loading.load_tokenizer(base_ref)
    )
    dtype = frozen_base_dtype(spec, cuda)
    attention = loading.attention_implementation(spec.training.attention, cuda)
    scoring_head = spec.method == "reward"  # a reward model: one score instead of the LM head
    if job.start_from is not None and not job.start_from.adapter:  # the earlier fine-tune's full weights
        model = loading.load_model(job.start_from, dtype=dtype, attention=attention,
                                   scoring_head=scoring_head)
    elif job.start_from is not None:  # the weights the adapter it continues was trained on
        model = loading.load_adapter_base(job.start_from, quantization=quantization_config(spec), dtype=dtype,
                                          attention=attention, scoring_head=scoring_head)
    else:
        model = loading.load_base_model(base_ref, quantization=quantization_config(spec), dtype=dtype,
                                        attention=attention, scoring_head=scoring_head)
    if scoring_head and model.config.pad_token_id is None:  # it scores the last token before padding
        model.config.pad_token_id = tokenizer.pad_token_id
    check_adapter_fits(spec, model.config)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    adapter_config = peft_config(spec, tied_embeddings=tied)
    if job.start_from is not None and job.start_from.adapter:
        if scoring_head:
            raise FineTuneError("a reward model starts from a base model or a full fine-tune; "
                                f"'{job.start_from.fine_tune}' trained an adapter")
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, job.start_from.location, is_trainable=True)
        adapter_config = None  # keep training the adapter we start from

    t = spec.training
    train_records = load_records(job.datasets, "train", spec.method, t.seed, tokenizer, t.train_on)
    eval_records = load_records(job.datasets, "validation", spec.method, t.seed, tokenizer, t.train_on)
    if spec.method == "grpo":
        from reconciler.runtime.training_data import prompts_that_fit

        total = len(train_records)
        train_records, too_long = prompts_that_fit(train_records, tokenizer, t.max_seq_length)
        eval_records, _ = prompts_that_fit(eval_records, tokenizer, t.max_seq_length)
        if too_long:
            log.warning("%d of %d training prompts are longer than training.maxSeqLength (%d tokens) and "
                        "are left out", too_long, total, t.max_seq_length)
    if not train_records:
        raise FineTuneError(
            f"no training rows for method {spec.method} in {', '.join(d.name for d in job.datasets)}"
            + (f": every prompt is longer than training.maxSeqLength ({t.max_seq_length} tokens)"
               if spec.method == "grpo" else "")
        )
    device_bytes = torch.cuda.get_device_properties(0).total_memory if cuda else None
    sized = device_bytes is not None and spec.distributed.strategy == "auto"
    method = method_shape(job, spec) if sized else None
    strategy = resolve_strategy(
        spec.distributed.strategy,
        model_config=model.config.to_dict(),
        adapter=spec.adapter.type,
        rank=spec.adapter.r,
        target_modules=spec.adapter.target_modules,
        sequence_length=spec.training.max_seq_length + (method.completion_length if method else 0),
        micro_batch=spec.training.micro_batch_size,
        gradient_checkpointing=spec.training.gradient_checkpointing,
        lora_dropout=spec.adapter.dropout,
        packing=spec.training.packing,
        optimizer=spec.training.optimizer,
        attention=attention,
        kernels=spec.training.kernels,
        modules_to_save=tuple(spec.adapter.modules_to_save),
        world_size=processes.world_size,
        device_bytes=device_bytes,
        method=method,
    )
    stored_dtype = None
    if spec.adapter.type == "none" and not engine_keeps_fp32_masters(strategy, spec, cuda):
        stored_dtype = train_in_fp32(model)
    arguments = training_arguments(
        job,
        spec,
        strategy=strategy,
        cuda=cuda,
        has_validation=bool(eval_records),
        world_size=processes.world_size,
    )
    checkpoints = checkpoints_dir(job)
    if spec.checkpoint.resume == "never" and processes.is_main and checkpoints.exists():
        shutil.rmtree(checkpoints)

    rewards = None
    if spec.method == "grpo":
        from reconciler.runtime.rewards import reward_functions

        # each rank scores its own completions, on its own GPU
        rewards = reward_functions(job, spec, device=f"cuda:{processes.local_rank}" if cuda else "cpu")
    trainer = build_trainer(spec, model, tokenizer, adapter_config, arguments, train_records, eval_records,
                            rewards)
    if spec.training.max_steps and spec.evaluation.early_stopping is None:
        from reconciler.runtime.finetune_record import NoFinalCheckpoint

        trainer.add_callback(NoFinalCheckpoint())
    pruning = None
    if job.pruning is not None:
        from reconciler.runtime.pruning import MedianPruning

        pruning = MedianPruning(job.pruning)
        trainer.add_callback(pruning)
    trainer.accelerator.wait_for_everyone()  # rank 0 may have cleared old checkpoints
    run = None
    if processes.is_main:  # opened only now, so a refused setup never leaves a run behind
        from reconciler.runtime.lineage import open_run

        run = open_run(job, resume=spec.checkpoint.resume == "auto")
    last = last_complete_checkpoint(checkpoints) if spec.checkpoint.resume == "auto" else None
    if run is not None:
        from reconciler.runtime.finetune_record import TrainingLogger, log_start

        log_start(
            run,
            job,
            spec,
            strategy=strategy,
            processes=processes,
            arguments=arguments,
            model=trainer.model,
            train_rows=len(train_records),
            validation_rows=len(eval_records),
            resumed_from=last,
        )
        trainer.add_callback(TrainingLogger(run))
    try:
        result = trainer.train(resume_from_checkpoint=last)
    except BaseException:
        if run is not None:
            run.finish("FAILED")
        raise
    if pruning is not None and pruning.pruned:
        return _record_pruned(job, run, pruning, trainer, checkpoints)
    if run is not None and pruning is not None:
        from reconciler.tracking import vocabulary as tracking

        run.set_tags({tracking.TAG_TRIAL_CURVE: pruning.curve_tag(tracking.MAX_TAG_LENGTH)})
    final_metrics = {"train_loss": result.training_loss, "global_step": result.global_step}
    if eval_records:
        final_metrics.update(trainer.evaluate())
        if spec.method == "reward" and "eval_accuracy" in final_metrics:
            # held-out pairs whose chosen answer the model scores above the rejected one
            final_metrics["reward_accuracy"] = final_metrics["eval_accuracy"]
    staging = staging_dir(job)
    if processes.is_main and staging.exists():
        shutil.rmtree(staging)
    trainer.accelerator.wait_for_everyone()
    if stored_dtype is not None and "deepspeed" not in arguments and strategy != "fsdp":
        trainer.model.to(stored_dtype)  # saved as the base was stored; DeepSpeed saves what it holds
    trainer.save_model(str(staging))  # every rank: ZeRO-3 gathers the weights collectively
    trainer.accelerator.wait_for_everyone()
    if not processes.is_main:
        return job.output_dir
    from reconciler.runtime.finetune_record import finish_outputs

    try:
        finish_outputs(
            job,
            spec,
            run,
            staging=staging,
            tokenizer=tokenizer,
            strategy=strategy,
            arguments=arguments,
            metrics=final_metrics,
            model_defaults=_generation_defaults(trainer.model),
        )
    except BaseException:
        run.finish("FAILED")
        raise
    shutil.rmtree(checkpoints, ignore_errors=True)
    return job.output_dir


def _orpo_classes() -> tuple[Any, Any]:
    """ORPO's config and trainer: trl 1.x keeps them under trl.experimental, older trl at the top."""
    try:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    except ImportError:
        from trl import ORPOConfig, ORPOTrainer
    return ORPOConfig, ORPOTrainer


def _record_pruned(job: JobFile, run: JobRun | None, pruning: MedianPruning, trainer: Any,
                   checkpoints: Path) -> TrialPruned:
    """A pruned trial is a result, not a failure: its run says where and why it stopped and ends
    KILLED, and nothing is saved or registered (a sweep keeps only its finished trials)."""
    from reconciler.runtime.pruning import TrialPruned
    from reconciler.tracking import vocabulary as tracking

    assert pruning.reason is not None and pruning.step is not None and pruning.value is not None
    pruned = TrialPruned(reason=pruning.reason, step=pruning.step, value=pruning.value)
    trainer.accelerator.wait_for_everyone()  # every rank stopped at the same step
    if run is None:
        return pruned
    run.set_tags({
        tracking.TAG_STATUS: tracking.STATUS_PRUNED,
        tracking.TAG_PRUNED_STEP: str(pruned.step),
        tracking.TAG_PRUNED_VALUE: repr(pruned.value),
        tracking.TAG_PRUNED_REASON: pruned.reason,
        tracking.TAG_TRIAL_CURVE: pruning.curve_tag(tracking.MAX_TAG_LENGTH),
    })
    run.finish("KILLED")
    shutil.rmtree(checkpoints, ignore_errors=True)
    return pruned


def _generation_defaults(model: Any) -> dict[str, Any]:
    """What the model's generation config sets: an adapter's generation_config.json starts there."""
    config = getattr(model, "generation_config", None)
    return config.to_diff_dict() if config is not None else {}


def build_trainer(
    spec: FineTuneSpec,
    model: Any,
    tokenizer: Any,
    adapter_config: Any,
    arguments: dict[str, Any],
    train_records: list[dict[str, Any]],
    eval_records: list[dict[str, Any]],
    reward_functions: Sequence[RewardFunction] | None = None,
) -> Trainer:
    """The trl trainer for the spec's method (SFTTrainer for sft and pretrain, DPOTrainer,
    KTOTrainer, ORPOTrainer, RewardTrainer, GRPOTrainer with the rewards for grpo); public so
    that benchmarks and tests inspect exactly the batches training sees."""
    from datasets import Dataset

    train = Dataset.from_list(train_records)
    evaluation = Dataset.from_list(eval_records) if eval_records else None
    callbacks = []
    stopping = spec.evaluation.early_stopping
    if stopping is not None:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(stopping.patience, stopping.threshold))
    t = spec.training
    shared = {"model": model, "train_dataset": train, "eval_dataset": evaluation,
              "processing_class": tokenizer, "peft_config": adapter_config, "callbacks": callbacks}
    if spec.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer(args=DPOConfig(**arguments, beta=t.beta, max_length=t.max_seq_length), **shared)
    if spec.method == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOTrainer(args=KTOConfig(**arguments, beta=t.beta, max_length=t.max_seq_length), **shared)
    if spec.method == "orpo":
        orpo_config, orpo_trainer = _orpo_classes()
        return orpo_trainer(args=orpo_config(**arguments, beta=t.beta, max_length=t.max_seq_length), **shared)
    if spec.method == "reward":
        from trl import RewardConfig, RewardTrainer

        return RewardTrainer(args=RewardConfig(**arguments, max_length=t.max_seq_length), **shared)
    if spec.method == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        from reconciler.runtime.rewards import as_trl_callable

        grpo = spec.grpo
        rewards = list(reward_functions or ())
        # each evaluation step generates whole groups, whatever the micro-batch
        evaluation_batch = {"per_device_eval_batch_size": grpo.num_generations}
        config = GRPOConfig(
            **{**arguments, **evaluation_batch}, num_generations=grpo.num_generations,
            max_completion_length=grpo.max_completion_length,
            temperature=grpo.temperature, beta=grpo.beta, use_vllm=grpo.use_vllm, vllm_mode="colocate",
            reward_weights=[reward.weight for reward in rewards], log_completions=False,
            # the prompt's origin column reaches the rewards (for their error messages)
            remove_unused_columns=False)
        return GRPOTrainer(reward_funcs=[as_trl_callable(reward) for reward in rewards], args=config,
                           **shared)
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(
        **arguments,
        max_length=t.max_seq_length,
        packing=t.packing,
        # Best-fit packing with position_ids restarting per example: transformers then masks
        # attention block-diagonally. trl's "wrapped" mode would let examples see each other.
        packing_strategy="bfd",
        completion_only_loss=None if spec.method == "pretrain" else not t.train_on_inputs,
        dataset_num_proc=None,
    )
    return SFTTrainer(args=config, **shared)
