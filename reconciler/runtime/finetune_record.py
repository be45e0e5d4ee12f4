"""What a fine-tune records, on rank 0: parameters and inputs at the start, metrics per step,
and at the end the output folder (model card, configs), its artifacts and a registered model
version whose tags carry the lineage."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.fileio import replace_directory
from reconciler.jobs.jobfile import GenerationDefaults, JobFile
from reconciler.runtime.distributed import Processes
from reconciler.runtime.lineage import JobRun, register_model_version, upstream_model_tags
from reconciler.specs.base import team_of
from reconciler.specs.finetune import FineTuneSpec
from reconciler.tracking import vocabulary as tracking

if TYPE_CHECKING:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


def flatten(prefix: str, value: Any, into: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{prefix}.{key}" if prefix else key, item, into)
    else:
        into[prefix] = json.dumps(value) if isinstance(value, list | tuple) else value
    return into


def resolved_spec(spec: FineTuneSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True)


def log_start(
    run: JobRun,
    job: JobFile,
    spec: FineTuneSpec,
    *,
    strategy: str,
    processes: Processes,
    arguments: dict[str, Any],
    model: Any,
    train_rows: int,
    validation_rows: int,
    resumed_from: str | None,
) -> None:
    """Every resolved hyperparameter as a param, the datasets as inputs. On a resumed run the
    params are already there (MLflow refuses to change a param), so only the resume is noted."""
    if resumed_from:
        run.set_tags({"tuneops.resumed_from": Path(resumed_from).name})
        return
    trainable, total = _parameter_counts(model)
    trained_dtype, frozen_dtype = _weights_dtypes(model)
    params = flatten("", resolved_spec(spec), {})
    params.update(
        {
            "resolved.strategy": strategy,
            "resolved.processes": processes.world_size,
            "resolved.global_batch_size": spec.training.micro_batch_size
            * spec.training.gradient_accumulation
            * processes.world_size,
            "resolved.bf16": arguments.get("bf16"),
            "resolved.fp16": arguments.get("fp16"),
            "resolved.trainable_parameters": trainable,
            "resolved.total_parameters": total,
            "resolved.trained_weights_dtype": trained_dtype,
            "resolved.frozen_weights_dtype": frozen_dtype,
            "resolved.train_rows": train_rows,
            "resolved.validation_rows": validation_rows,
        }
    )
    run.log_params(params)
    for dataset in job.datasets:
        from reconciler.runtime.dataset import read_manifest

        manifest = read_manifest(Path(dataset.location))
        run.log_dataset(
            dataset.name,
            digest=dataset.digest,
            source=dataset.location,
            context="training",
            rows=manifest.rows.get("train", 0),
            schema_type=dataset.schema_type,
            columns=manifest.columns,
            split_digest=manifest.split_digests.get("train"),
        )
        if manifest.rows.get("validation"):
            run.log_dataset(
                dataset.name,
                digest=dataset.digest,
                source=dataset.location,
                context="validation",
                rows=manifest.rows["validation"],
                schema_type=dataset.schema_type,
                columns=manifest.columns,
                split_digest=manifest.split_digests.get("validation"),
            )


def _parameter_counts(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _weights_dtypes(model: Any) -> tuple[str, str]:
    """The dtypes the trained and the frozen weights are held in ("none" when there are none): what
    training actually ran with, whatever dtype the checkpoint was stored in."""
    def names(trainable: bool) -> str:
        found = {str(p.dtype).removeprefix("torch.") for p in model.parameters()
                 if p.requires_grad == trainable}
        return ",".join(sorted(found)) or "none"

    return names(True), names(False)


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _callback_base() -> type[TrainerCallback]:
    from transformers import TrainerCallback

    return TrainerCallback


class NoFinalCheckpoint(_callback_base()):
    """No checkpoint at the last step of a `maxSteps` run. The Trainer checks for the end only
    after a step, so a job resumed from a checkpoint at `maxSteps` (killed after training, or
    failing to register its model) would train one step too many. The finished run deletes its
    checkpoints anyway; a job that fails after training resumes from the one before and retrains
    the same steps on the same batches. Not used with early stopping, which must keep the best
    checkpoint, whichever step that is."""

    @staticmethod
    def _no_save_at_the_end(args: TrainingArguments, state: TrainerState,
                            control: TrainerControl) -> TrainerControl:
        if args.max_steps > 0 and state.global_step >= args.max_steps:
            control.should_save = False
        return control

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: object) -> TrainerControl:
        return self._no_save_at_the_end(args, state, control)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: object) -> TrainerControl:
        return self._no_save_at_the_end(args, state, control)


class TrainingLogger(_callback_base()):
    """Per-step metrics to MLflow: the Trainer's own (loss, learning rate, grad norm, DPO
    rewards) plus tokens per second and peak memory, which it does not report per step."""

    def __init__(self, run: JobRun):
        self.run = run
        self._last_time: float | None = None
        self._last_tokens = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: object) -> None:
        self._last_time = time.perf_counter()
        self._last_tokens = state.num_input_tokens_seen or 0

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: object) -> None:
        metrics = {
            key: float(value)
            for key, value in (logs or {}).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        now = time.perf_counter()
        tokens = state.num_input_tokens_seen or 0
        if self._last_time is not None and now > self._last_time and tokens > self._last_tokens:
            metrics["tokens_per_second"] = (tokens - self._last_tokens) / (now - self._last_time)
        self._last_time, self._last_tokens = now, tokens
        metrics["peak_memory_mb"] = peak_memory_mb()
        if state.max_steps:  # read by `tuneops status` for progress and ETA
            metrics["progress"] = state.global_step / state.max_steps
        self.run.log_metrics(metrics, step=state.global_step)


def model_card(job: JobFile, spec: FineTuneSpec, metrics: dict[str, Any], strategy: str) -> str:
    base = job.base_model or (job.start_from.base_model if job.start_from else None)
    revision = (base.revision if base else None) or "unpinned"
    lines = [
        f"# {job.name}",
        "",
        f"Fine-tuned by tuneops ({spec.method}, adapter {spec.adapter.type}, strategy {strategy}).",
        "",
        "## Lineage",
        "",
        f"- Base model: `{base.source if base else '?'}` at revision `{revision}`",
    ]
    if job.start_from:
        lines.append(
            f"- Started from: fine-tune `{job.start_from.fine_tune}` version "
            f"`{job.start_from.version or '?'}`"
        )
    for dataset in job.datasets:
        lines.append(f"- Dataset `{dataset.name}` (weight {dataset.weight:g}): digest `{dataset.digest}`")
    for ref in job.reward_models or ():
        lines.append(f"- Reward model: fine-tune `{ref.fine_tune}` version `{ref.version or '?'}`")
    lines += [
        f"- Git: `{job.git.repo or '?'}` at commit `{job.git.commit or '?'}`"
        f"{' (uncommitted changes)' if job.git.dirty else ''}",
        f"- Spec: `{job.spec_path or '?'}`, fingerprint `{job.fingerprint}`",
        "",
        "## Hyperparameters",
        "",
        "```json",
        json.dumps(resolved_spec(spec), indent=2, sort_keys=True),
        "```",
        "",
        "## Final metrics",
        "",
        "| Metric | Value |",
        "|---|---|",
    ]
    lines += [
        f"| {key} | {value:.6g} |" if isinstance(value, float) else f"| {key} | {value} |"
        for key, value in sorted(metrics.items())
    ]
    return "\n".join(lines) + "\n"


def write_generation_config(folder: Path, decoding: GenerationDefaults,
                            model_defaults: dict[str, Any]) -> None:
    """The judging Evaluation's decoding as the saved model's generation defaults, over those it
    had (the saved file, or for an adapter the base model's), so that vLLM and the built-in server
    decode a plain request as the gate measured. Greedy is `temperature: 0`, which vLLM reads,
    with `do_sample: false` for transformers."""
    path = folder / "generation_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else dict(model_defaults)
    config.update(do_sample=decoding.temperature > 0, temperature=decoding.temperature,
                  max_new_tokens=decoding.max_new_tokens)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def finish_outputs(
    job: JobFile,
    spec: FineTuneSpec,
    run: JobRun,
    *,
    staging: Path,
    tokenizer: Any,
    strategy: str,
    arguments: dict[str, Any],
    metrics: dict[str, Any],
    model_defaults: dict[str, Any] | None = None,
) -> Path:
    """Complete the staging folder, rename it into place, upload it and register the version."""
    from reconciler.runtime.distributed import deepspeed_config

    tokenizer.save_pretrained(str(staging))
    if job.generation is not None:
        write_generation_config(staging, job.generation, model_defaults or {})
    resolved = {
        "fineTune": job.name,
        "fingerprint": job.fingerprint,
        "spec": resolved_spec(spec),
        "strategy": strategy,
        "trainingArguments": {k: v for k, v in arguments.items() if k not in ("output_dir", "deepspeed")},
    }
    (staging / "tuneops_config.json").write_text(json.dumps(resolved, indent=2, sort_keys=True, default=str))
    ds = deepspeed_config(strategy, pin_memory=False)
    if ds is not None:
        (staging / "deepspeed_config.json").write_text(json.dumps(arguments["deepspeed"], indent=2))
    (staging / "training_results.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (staging / "README.md").write_text(model_card(job, spec, metrics, strategy))
    output = job.output_dir  # may exist: an earlier attempt finished here but did not register
    replace_directory(staging, output)

    run.log_metrics(
        {f"final_{key}": value for key, value in metrics.items() if isinstance(value, int | float)},
        step=int(metrics.get("global_step", 0)),
    )
    run.log_artifacts(output, "model")
    base = job.base_model or (job.start_from.base_model if job.start_from else None)
    tags = {
        tracking.TAG_FINGERPRINT: job.fingerprint,
        tracking.TAG_NAME: job.name,
        tracking.TAG_GIT_REPO: job.git.repo or "",
        tracking.TAG_GIT_COMMIT: job.git.commit or "",
        tracking.TAG_BASE_SOURCE: base.source if base else "",
        tracking.TAG_BASE_REVISION: (base.revision if base else None) or "",
        tracking.TAG_OUTPUT: str(output),
        tracking.TAG_ADAPTER: str(spec.adapter.type != "none").lower(),
    }
    if team_of(job.name):
        tags[tracking.TAG_TEAM] = team_of(job.name) or ""
    tags.update({tracking.dataset_digest_tag(d.name): d.digest for d in job.datasets})
    tags.update(upstream_model_tags(job))
    name = spec.registration.model or job.name
    version = register_model_version(
        run,
        name,
        f"{run.artifact_uri}/model",
        {k: v for k, v in tags.items() if v},
        description=f"{job.name} at {job.git.commit or 'an uncommitted tree'}",
    )
    run.set_tags({tracking.TAG_REGISTERED_VERSION: f"{name}/{version}"})
    run.finish()
    return output
