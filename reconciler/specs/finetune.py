"""`FineTune`: a base model trained on datasets with LoRA, QLoRA or full fine-tuning."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from reconciler.specs.base import (
    Bool,
    Float,
    Int,
    Name,
    PositiveInt,
    Quantity,
    Reference,
    ReferenceName,
    Resource,
    ResourceId,
    SpecModel,
    SpecValueError,
    Str,
    field,
    qualified_name,
    require_exactly_one,
)
from reconciler.specs.schema_errors import suggest
from reconciler.values.kubernetes import NodeLabelValue, PriorityClassName

Method = Literal["sft", "dpo", "pretrain", "grpo", "kto", "orpo", "reward"]
# Methods trained against a frozen reference model (free with an adapter: its base is the reference).
REFERENCE_METHODS = frozenset({"dpo", "kto", "grpo"})
BuiltinReward = Literal["exact_match", "contains", "regex", "length_penalty", "format_json"]
_PYTHON_REWARD = re.compile(
    r"(?P<path>[A-Za-z0-9_.][A-Za-z0-9_./-]*\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)")
Strategy = Literal["auto", "ddp", "zero2", "zero3", "zero3-offload", "fsdp"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
Scheduler = Literal["cosine", "linear", "constant", "constant_with_warmup",
                    "cosine_with_restarts", "polynomial"]
Optimizer = Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit",
                    "adafactor", "sgd"]

TrainOn = Literal["allAssistantTurns", "lastAssistantTurn"]
Attention = Literal["auto", "sdpa", "flash_attention_2", "eager"]
Kernels = Literal["none", "liger"]
OPTIMIZERS: tuple[str, ...] = typing.get_args(Optimizer)
# transformers' `optim` names (which axolotl and LLaMA-Factory pass through) for the optimizers we
# plan for: each names the same update as ours, so it is normalised to ours and shares its fingerprint.
OPTIMIZER_SYNONYMS = {"adamw_bnb_8bit": "adamw_8bit"}
# transformers optimizers the planner does not size; the way to what we have instead.
_UNSUPPORTED_OPTIMIZERS = {
    "paged_adamw_32bit": "use adamw_torch (the same fp32 states, not paged) or paged_adamw_8bit",
    "adamw_torch_8bit": "use adamw_8bit (bitsandbytes' 8-bit AdamW)",
    "adamw_torch_4bit": "use adamw_8bit (bitsandbytes' 8-bit AdamW)",
}

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")  # matched whole


class DatasetInput(SpecModel):
    name: ReferenceName = field(
        doc="A Dataset spec's name.", example="support-chats")
    weight: Float = field(
        1.0, "Relative share of training examples drawn from this dataset when mixing several; "
             "weights are normalised, so [1, 1] is an even mix and [3, 1] is 75%/25%.", gt=0)
    max_samples: Int | None = field(
        None, "Train on the first N rows of this dataset's training split only (in the split's order); "
              "by default all of them. Weights then mix the capped rows.", unit="rows", gt=0,
        example=10000, added_later=True)


class Quantization(SpecModel):
    bits: Literal[4, 8] = field(4, "Bits per base-model weight while training (bitsandbytes).")
    quant_type: Literal["nf4", "fp4"] = field("nf4", "4-bit data type; NF4 is the QLoRA paper's.")
    double_quant: Bool = field(True, "Quantize the quantization constants too (saves ~0.4 bit/param).")


class Adapter(SpecModel):
    type: Literal["lora", "qlora", "none"] = field(
        "lora", "`lora` trains low-rank adapters; `qlora` does so on a 4-bit base (GPU only); "
                "`none` is full fine-tuning.")
    r: Int = field(16, "LoRA rank.", gt=0, le=4096)
    alpha: Int | None = field(None, "LoRA scaling numerator; defaults to 2 x r.", gt=0, example=32)
    dropout: Float = field(0.05, "Dropout on the adapter input.", ge=0, lt=1)
    target_modules: Str | tuple[Str, ...] = field(
        "all-linear", "Modules to adapt: `all-linear` (or `all`) for every linear layer, or a list of "
                     "module names, checked against the base model's weights or config when known.",
        example=["q_proj", "k_proj", "v_proj", "o_proj"])
    modules_to_save: tuple[Str, ...] = field(
        (), "Modules trained in full alongside the adapter (e.g. `lm_head`, `embed_tokens` when "
            "tokens were added).", example=["lm_head", "embed_tokens"])
    quantization: Quantization | None = field(
        None, "Quantized base weights. Defaults to 4-bit NF4 with double quantization for `qlora`.")

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_type(cls, data: Any) -> Any:
        # alpha = 2r and qlora's 4-bit settings are defaults that depend on other fields;
        # filling them here means the resolved spec (and its fingerprint) states them.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        r = data.get("r", 16)
        adapted = data.get("type", "lora") != "none"
        if adapted and "alpha" not in data and isinstance(r, int) and not isinstance(r, bool) and r > 0:
            data["alpha"] = 2 * r
        if data.get("type") == "qlora" and "quantization" not in data:
            data["quantization"] = {}
        return data

    @field_validator("target_modules", mode="before")
    @classmethod
    def _target_modules_shape(cls, value: Any) -> Any:
        # `all` (LLaMA-Factory's `lora_target: all`) means every linear layer: one spelling, so
        # `[all]` and `all-linear` have one fingerprint and the runtime and planner see all-linear.
        if value in ("all", ["all"], ("all",), ["all-linear"], ("all-linear",)):
            return "all-linear"
        if isinstance(value, str):
            if value != "all-linear":
                raise SpecValueError("must be 'all-linear' or a list of module names",
                                     f"did you mean [{value}]?")
            return value
        if isinstance(value, list | tuple):
            if not value:
                raise SpecValueError("must name at least one module, or be 'all-linear'")
            for item in value:
                if not isinstance(item, str) or not _MODULE_NAME.fullmatch(item):
                    raise SpecValueError(f"{item!r} is not a module name such as q_proj")
            return tuple(value)
        raise SpecValueError("must be 'all-linear' or a list of module names")

    @model_validator(mode="after")
    def _quantization_fits_type(self) -> Adapter:
        if self.type == "none" and self.quantization is not None:
            raise SpecValueError("quantization needs an adapter: full fine-tuning cannot train "
                                 "quantized weights", "use type: qlora")
        if self.type == "qlora" and self.quantization and self.quantization.bits != 4:
            raise SpecValueError("qlora trains on a 4-bit base (got quantization.bits: 8)",
                                 "for an 8-bit base use type: lora with quantization.bits: 8")
        return self


def _older_names_in_schema(schema: dict[str, Any]) -> None:
    # editors that check specs against schemas/ keep accepting dpoBeta, marked deprecated
    schema["properties"]["dpoBeta"] = {**schema["properties"]["beta"], "deprecated": True,
                                       "description": "Older name of `beta`; set one of them."}


def reward_file_path(spec_folder: Path, written: str) -> Path:
    """Where a `python: file.py:function` reward's file is: relative to the spec's folder."""
    return (spec_folder / written).absolute()


class RewardModelRef(SpecModel):
    fine_tune: ReferenceName = field(
        doc="A FineTune trained with `method: reward`; its version at its current spec (trained first, "
            "and again when it changes) scores completions.",
        example="support-rm")


class Reward(SpecModel):
    """One reward of a GRPO fine-tune: a built-in rule, a Python function or a reward model."""

    builtin: BuiltinReward | None = field(
        None, "A rule scored in the job: `exact_match` (1 when the completion equals the row's "
              "`reference`, both normalised as the Evaluation's exact_match), `contains` (1 when the "
              "reference's words appear in it), `regex` (1 when `pattern` matches it), "
              "`length_penalty` (minus the completion's share of grpo.maxCompletionLength tokens), "
              "`format_json` (1 when it parses as a JSON object or array).", example="exact_match")
    python: Str | None = field(
        None, "`path/to/file.py:function`, relative to the spec's folder, in the spec repository: "
              "`function(prompts, completions, **columns) -> list[float]`, one score per completion. "
              "The file's bytes are part of the fingerprint; it runs inside the job only.",
        example="rewards/tone.py:score")
    reward_model: RewardModelRef | None = field(
        None, "A reward model trained by another FineTune (`method: reward`): its score of the "
              "prompt and completion.", example={"fineTune": "support-rm"})
    weight: Float = field(1.0, "Factor of this reward in the sum the policy maximises (negative: a "
                               "penalty).")
    pattern: Str | None = field(None, "For `builtin: regex`: the regular expression (Python syntax, "
                                      "searched anywhere in the completion).", example=r"^Answer: \w+")

    @model_validator(mode="after")
    def _one_source(self) -> Reward:
        given = [name for name in ("builtin", "python", "reward_model") if getattr(self, name) is not None]
        if len(given) != 1:
            raise SpecValueError("set exactly one of builtin, python or rewardModel"
                                 + (f" (got {', '.join(to_camel(g) for g in given)})" if given else ""))
        if self.builtin == "regex":
            if self.pattern is None:
                raise SpecValueError("builtin regex needs a pattern", "add pattern: '<regular expression>'")
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise SpecValueError(f"pattern is not a regular expression: {error}") from None
        elif self.pattern is not None:
            raise SpecValueError("pattern only applies to builtin: regex")
        return self

    @field_validator("python")
    @classmethod
    def _python_reference(cls, value: str | None) -> str | None:
        """`file.py:function`, relative to the spec's folder; validation checks that the file stays
        in the repository (`..` may lead to a sibling folder), parses and defines the function."""
        if value is not None and _PYTHON_REWARD.fullmatch(value) is None:
            raise SpecValueError(f"{value!r} is not `path/to/file.py:function` (a relative path of letters, "
                                 "digits, _ . - and /)", "e.g. rewards/tone.py:score")
        return value

    @property
    def python_file(self) -> str | None:
        return self.python.rpartition(":")[0] if self.python else None

    @property
    def python_function(self) -> str | None:
        return self.python.rpartition(":")[2] if self.python else None


class Grpo(SpecModel):
    num_generations: Int = field(8, "Completions sampled per prompt (the group whose rewards are "
                                    "compared). training.microBatchSize x gradientAccumulation x processes "
                                    "(nodes x GPUs per node) must be a multiple of it.", ge=2, le=1024)
    max_completion_length: Int = field(256, "Tokens generated per completion at most.", unit="tokens",
                                       gt=0, le=131072)
    temperature: Float = field(0.9, "Sampling temperature of the generations.", gt=0, le=10)
    beta: Float = field(0.04, "KL penalty against the reference model; 0 loads no reference model.",
                        ge=0)
    use_vllm: Bool = field(False, "Generate with vLLM colocated on the GPU (needs a CUDA GPU and the "
                                  "`vllm` package in the image); transformers' generate otherwise.")


class Training(SpecModel):
    model_config = ConfigDict(**SpecModel.model_config, json_schema_extra=_older_names_in_schema)

    epochs: Float = field(3.0, "Passes over the training data. Ignored when maxSteps is set.",
                          unit="epochs", gt=0)
    max_steps: Int | None = field(None, "Stop after this many optimizer steps instead of epochs.",
                                  unit="steps", gt=0, example=2000)
    learning_rate: Float = field(2e-4, "Peak learning rate. 1e-4..3e-4 is usual for LoRA, "
                                       "1e-5..5e-5 for full fine-tuning.", gt=0, le=1)
    micro_batch_size: Int = field(4, "Sequences per device per forward pass.", unit="sequences",
                                  gt=0)
    gradient_accumulation: Int = field(1, "Micro-batches per optimizer step. Global batch = "
                                          "microBatchSize x gradientAccumulation x processes.", gt=0)
    max_seq_length: Int = field(2048, "Sequences are truncated to this many tokens. For grpo it bounds "
                                      "the prompt: longer prompts are left out (the job log counts "
                                      "them), and completions add up to grpo.maxCompletionLength.",
                                unit="tokens", gt=0)
    packing: Bool = field(False, "Pack several short examples into one sequence (with attention "
                                 "kept within each example: position ids restart at each, so no "
                                 "padding is computed). A micro-batch's rows are joined into one; "
                                 "with `sdpa` attention its mask takes (microBatchSize x "
                                 "maxSeqLength)^2 16-bit values per layer, with `flash_attention_2` "
                                 "none. `tuneops estimate` counts it.")
    train_on_inputs: Bool = field(False, "Also compute the loss on prompts, not only on completions.")
    train_on: TrainOn = field(
        "allAssistantTurns", "Which assistant turns of a chat the loss falls on: every one "
                             "(`allAssistantTurns`, as axolotl and LLaMA-Factory do) or only the last "
                             "(`lastAssistantTurn`, earlier turns are context). Role headers a chat "
                             "template adds are never trained; the reply and its end-of-turn token are.",
        added_later=True)
    scheduler: Scheduler = field("cosine", "Learning-rate schedule.")
    warmup_ratio: Float = field(0.03, "Share of steps spent warming up the learning rate.",
                                unit="ratio", ge=0, lt=1)
    weight_decay: Float = field(0.0, "AdamW weight decay.", ge=0)
    max_grad_norm: Float = field(1.0, "Gradient clipping norm; 0 disables clipping.", ge=0)
    optimizer: Optimizer = field(
        "adamw_torch", "Optimizer. transformers' `adamw_bnb_8bit` (as axolotl and LLaMA-Factory "
                       "write it) is accepted as `adamw_8bit`.")
    precision: Precision = field(
        "auto", "Compute precision. `auto` is bf16 on GPUs that support it, fp32 on CPU.")
    attention: Attention = field(
        "auto", "Attention kernel the model is loaded with (transformers' `attn_implementation`): "
                "`auto` is `flash_attention_2` on a CUDA GPU where the `flash_attn` package is "
                "installed, else `sdpa` (PyTorch's fused attention); `eager` is the plain "
                "implementation. `flash_attention_2` needs a CUDA GPU. `tuneops estimate` counts each "
                "kernel's memory (no attention mask with flash-attention, the scores with eager) "
                "and sizes `auto` as `sdpa`.", added_later=True)
    gradient_checkpointing: Bool = field(False, "Recompute activations in the backward pass: "
                                                "less memory, about 30% more compute.")
    kernels: Kernels = field(
        "none", "`liger` swaps in the Liger kernels (the `liger-kernel` package: fused RMSNorm, RoPE, "
                "SwiGLU and linear cross-entropy), which keep fewer activations and run faster on CUDA "
                "GPUs; it needs a CUDA GPU. `tuneops estimate` counts the smaller MLP activations.",
        added_later=True)
    tf32: Bool = field(
        False, "Let fp32 matrix multiplications use TF32 tensor cores (Ampere GPUs and newer): faster, "
               "with a 10-bit mantissa. No effect on CPU or older GPUs (the job log says so).",
        added_later=True)
    dataloader_workers: Int = field(
        0, "Processes that prepare batches beside training (the Trainer's "
           "`dataloader_num_workers`); 0 prepares them in the training process. Batches are the same "
           "either way.", ge=0, le=64, operational=True)
    seed: Int = field(42, "Seed for initialisation, shuffling and dropout.", ge=0, le=2**32 - 1)
    beta: Float = field(
        0.1, "Preference methods' strength: β, the KL penalty of dpo and kto; λ, the odds-ratio "
             "weight of orpo (grpo's is grpo.beta). `dpoBeta`, its older name, is read the same; set one "
             "of them.", gt=0,
        # specs resolved, recorded and fingerprinted before the rename say dpoBeta: so do ours
        serialization_alias="dpoBeta")

    @model_validator(mode="before")
    @classmethod
    def _beta_older_name(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "dpoBeta" not in data:
            return data
        if "beta" in data:
            raise SpecValueError("set beta or dpoBeta (its older name), not both", "keep beta")
        data = dict(data)
        data["beta"] = data.pop("dpoBeta")
        return data

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_spelling(cls, value: Any) -> Any:
        if not isinstance(value, str) or value in OPTIMIZERS:
            return value
        if value in OPTIMIZER_SYNONYMS:
            return OPTIMIZER_SYNONYMS[value]
        choices = ", ".join(OPTIMIZERS)
        if value in _UNSUPPORTED_OPTIMIZERS:
            raise SpecValueError(f"{value!r} is not an optimizer tuneops plans for (one of: {choices})",
                                 _UNSUPPORTED_OPTIMIZERS[value])
        # a near miss of ours or of a synonym (`adamw_bnb_8bt`) gets a did-you-mean
        raise SpecValueError(f"must be one of: {choices}", suggest(value, (*OPTIMIZERS, *OPTIMIZER_SYNONYMS)))

    @model_validator(mode="after")
    def _epochs_or_steps(self) -> Training:
        if "epochs" in self.model_fields_set and "max_steps" in self.model_fields_set:
            raise SpecValueError("set either epochs or maxSteps, not both")
        return self


class Offload(SpecModel):
    parameters: Bool = field(
        False, "Keep the (sharded) parameters in CPU memory; each layer is gathered onto the GPU when "
               "it runs. ZeRO-3 and FSDP.")
    optimizer: Bool = field(
        False, "Keep the optimizer states (and fp32 master weights) in CPU memory and run the optimizer "
               "step on the CPU. ZeRO-2, ZeRO-3 and FSDP.")


class Distributed(SpecModel):
    strategy: Strategy = field(
        "auto", "How training is spread over processes: `ddp`; DeepSpeed ZeRO stage 2 or 3 "
                "(`zero3-offload` is `zero3` with both offloads); `fsdp`; or `auto` to let the "
                "planner choose.")
    offload: Offload | None = field(
        None, "What moves to CPU memory, for models that do not fit the GPUs otherwise: `zero2` "
              "offloads optimizer states only; `zero3` either or both; `fsdp` both together "
              "(PyTorch's CPU offload moves parameters, gradients and the optimizer step at once). "
              "`tuneops estimate` counts each.", example={"optimizer": True}, added_later=True)
    launcher: Literal["indexed-job", "jobset", "pytorchjob"] | None = field(
        None, "On Kubernetes with nodes > 1: how nodes are started. Defaults to the project's "
              "setting (an Indexed Job with a headless Service).", example="jobset",
        operational=True)

    @model_validator(mode="after")
    def _offload_fits_strategy(self) -> Distributed:
        offload = self.offload
        if offload is None:
            return self
        if not (offload.parameters or offload.optimizer):
            raise SpecValueError("offload moves nothing: set parameters, optimizer or both to true",
                                 "or remove offload")
        strategy = self.strategy
        if strategy in ("auto", "ddp"):
            raise SpecValueError(f"offload needs a sharded strategy (zero2, zero3 or fsdp), not {strategy}",
                                 "set strategy: zero3")
        if strategy == "zero3-offload":
            raise SpecValueError("zero3-offload already offloads parameters and optimizer states",
                                 "use strategy: zero3 with this offload, or drop offload")
        if strategy == "zero2" and offload.parameters:
            raise SpecValueError("ZeRO-2 keeps every parameter on each GPU and cannot offload them",
                                 "use strategy: zero3, or offload only the optimizer")
        if strategy == "fsdp" and offload.parameters != offload.optimizer:
            raise SpecValueError("FSDP offloads parameters and optimizer states together "
                                 "(its CPU offload also moves gradients and the optimizer step)",
                                 "set both parameters and optimizer to true, or use zero3")
        return self

    @property
    def planned_strategy(self) -> str:
        """The planner's name for strategy plus offload (sizing/memory.py STRATEGIES): FSDP is
        sized as ZeRO-3, and an offload is a strategy of its own there."""
        strategy = "zero3" if self.strategy == "fsdp" else self.strategy
        offload = self.offload
        if offload is None or strategy not in ("zero2", "zero3"):
            return strategy
        if strategy == "zero2":
            return "zero2-offload"
        if offload.parameters and offload.optimizer:
            return "zero3-offload"
        return "zero3-offload-parameters" if offload.parameters else "zero3-offload-optimizer"


class Resources(SpecModel):
    nodes: PositiveInt = field(1, "Machines to train on.")
    gpus_per_node: Int = field(0, "GPUs per machine; 0 trains on CPU.", ge=0, le=64)
    gpu_product: NodeLabelValue | None = field(
        None, "GPU model to schedule on (the node label `nvidia.com/gpu.product`).",
        example="NVIDIA-H100-80GB-HBM3", operational=True)
    cpu: Quantity | None = field(None, "CPU request per node.", example="16", operational=True)
    memory: Quantity | None = field(None, "Memory request per node.", example="128Gi",
                                    operational=True)

    @property
    def processes(self) -> int:
        return self.nodes * max(self.gpus_per_node, 1)


class Checkpointing(SpecModel):
    every_steps: Int | None = field(None, "Save a checkpoint every N optimizer steps "
                                          "(default: at the end of each epoch).", unit="steps", gt=0,
                                  example=200)
    per_epoch: Bool = field(False, "Save a checkpoint at the end of each epoch (what happens when "
                                   "everySteps is not set); set it or everySteps, not both.",
                            added_later=True)
    keep: Int = field(2, "Checkpoints kept on disk; older ones are deleted.", gt=0,
                      operational=True)
    resume: Literal["auto", "never"] = field(
        "auto", "`auto`: a restarted job continues from its last checkpoint and MLflow run.",
        operational=True)

    @model_validator(mode="after")
    def _one_cadence(self) -> Checkpointing:
        if self.per_epoch and self.every_steps is not None:
            raise SpecValueError("perEpoch and everySteps both set a cadence: pick one",
                                 "drop perEpoch to use everySteps, or drop everySteps")
        return self


class EarlyStopping(SpecModel):
    metric: Str = field("eval_loss", "Metric watched on the validation split.")
    greater_is_better: Bool | None = field(
        None, "Whether a higher metric is an improvement; by default false for metrics whose "
              "name contains 'loss', true otherwise.", example=True)
    patience: Int = field(3, "Evaluations without improvement before stopping.", gt=0)
    threshold: Float = field(0.0, "Smallest change that counts as an improvement.", ge=0)


class InTrainingEvaluation(SpecModel):
    every_steps: Int | None = field(None, "Evaluate on the validation split every N steps.",
                                    unit="steps", gt=0, example=100)
    per_epoch: Bool = field(False, "Evaluate on the validation split at the end of each epoch; set it or "
                                   "everySteps, not both.", added_later=True)
    early_stopping: EarlyStopping | None = field(None, "Stop when the validation metric stalls.")

    @model_validator(mode="after")
    def _one_cadence(self) -> InTrainingEvaluation:
        if self.per_epoch and self.every_steps is not None:
            raise SpecValueError("perEpoch and everySteps both set a cadence: pick one",
                                 "drop perEpoch to use everySteps, or drop everySteps")
        return self


class Registration(SpecModel):
    model: Str | None = field(
        None, "Registered model name in the MLflow registry; defaults to the FineTune's name.",
        example="support-assistant", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

    @field_validator("model")
    @classmethod
    def _of_the_team(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Two teams may both name their model `support-assistant`: the registry holds each
        under its team's prefix, as the FineTune's own name is."""
        team = info.context.get("team") if isinstance(info.context, dict) else None
        return qualified_name(team, value) if value else value


class Scheduling(SpecModel):
    queue: Name | None = field(None, "Kueue LocalQueue or Volcano queue to submit to.",
                               example="gpu-training", operational=True)
    priority: PriorityClassName | None = field(None, "Kubernetes PriorityClass name.", example="ml-batch",
                                 operational=True)


class BatchConflict(typing.NamedTuple):
    """A batch setting a method's trainer refuses: where, the value, why, and what to do."""

    path: tuple[str, ...]
    value: int
    message: str
    hint: str


class FineTuneSpec(SpecModel):
    base_model: ReferenceName | None = field(
        None, "The BaseModel spec to start from.", example="llama-3-8b")
    from_fine_tune: ReferenceName | None = field(
        None, "Start from another FineTune's result instead (e.g. DPO after SFT); its base model "
              "is inherited.", example="support-sft")
    datasets: Annotated[tuple[DatasetInput, ...], Field(min_length=1)] = field(
        doc="Dataset specs to train on, with mixing weights.")
    method: Method = field(
        "sft", "`sft` (supervised, on instruction or chat data), `dpo` (on preference pairs), "
               "`pretrain` (continued pretraining on text), `grpo` (reinforcement learning on "
               "prompts, scored by `rewards`), `kto` (on binary-feedback rows), `orpo` (on preference "
               "pairs, without a reference model) or `reward` (a reward model, a scoring head, on "
               "preference pairs).")
    rewards: tuple[Reward, ...] = field(
        (), "For method grpo: the rewards, summed with their weights.",
        example=[{"builtin": "exact_match", "weight": 1.0}], added_later=True)
    grpo: Grpo = field(default_factory=Grpo, doc="For method grpo: the generations and the KL penalty.",
                       added_later=True)
    adapter: Adapter = field(default_factory=Adapter, doc="LoRA / QLoRA settings, or none.")
    training: Training = field(default_factory=Training, doc="Hyperparameters.")
    distributed: Distributed = field(default_factory=Distributed, doc="Parallelism.")
    resources: Resources = field(default_factory=Resources, doc="Compute per job.")
    checkpoint: Checkpointing = field(default_factory=Checkpointing, doc="Checkpoints and resume.")
    evaluation: InTrainingEvaluation = field(default_factory=InTrainingEvaluation,
                                             doc="Validation during training.")
    registration: Registration = field(default_factory=Registration, alias="register",
                                       doc="Model registry entry.")
    scheduling: Scheduling = field(default_factory=Scheduling, doc="Queueing on Kubernetes.",
                                   operational=True)
    suspend: Bool = field(False, "Keep the spec but start nothing new for it.", operational=True)

    @model_validator(mode="after")
    def _one_starting_point(self) -> FineTuneSpec:
        require_exactly_one(self, "base_model", "from_fine_tune")
        return self

    @model_validator(mode="after")
    def _rewards_fit_method(self) -> FineTuneSpec:
        if self.method == "grpo" and not self.rewards:
            raise SpecValueError("method grpo needs rewards to maximise",
                                 "add rewards: [{builtin: exact_match}] or a python or rewardModel reward")
        if self.method != "grpo" and self.rewards:
            raise SpecValueError(f"rewards only apply to method grpo (method is {self.method})")
        if self.rewards and not any(reward.weight for reward in self.rewards):
            raise SpecValueError("every reward has weight 0: the policy would have nothing to maximise",
                                 "give at least one reward a non-zero weight")
        return self

    def batch_conflicts(self) -> list[BatchConflict]:
        """Batch settings the method's trainer refuses: GRPO's group must divide the completions of
        an optimizer step, and KTO pairs rows within a micro-batch. Checked by validation (at the
        field), for each value a Sweep may try, and again when a job starts (a Sweep's trial
        combines values)."""
        found = []
        t = self.training
        if self.method == "grpo":
            group = self.grpo.num_generations
            batch = t.micro_batch_size * t.gradient_accumulation * self.resources.processes
            if batch % group:
                found.append(BatchConflict(
                    ("spec", "grpo", "numGenerations"), group,
                    f"grpo.numGenerations ({group}) must divide the completions of one optimizer step: "
                    f"training.microBatchSize x gradientAccumulation x processes = {batch}",
                    f"set training.microBatchSize to a multiple of {group}, or numGenerations to a "
                    f"divisor of {batch}"))
        if self.method == "kto" and t.micro_batch_size < 2:
            found.append(BatchConflict(
                ("spec", "training", "microBatchSize"), t.micro_batch_size,
                "method kto needs training.microBatchSize of 2 or more: it estimates its KL term from the "
                "other rows of a micro-batch", "set microBatchSize: 2 or more"))
        return found

    @property
    def reward_models(self) -> tuple[str, ...]:
        """The FineTunes whose reward models score this one's generations, each once, in order."""
        return tuple(dict.fromkeys(r.reward_model.fine_tune for r in self.rewards if r.reward_model))

    @property
    def has_reference_model(self) -> bool:
        """Whether trl loads a frozen reference model beside the policy (free under an adapter,
        whose base with the adapter disabled is the reference)."""
        if self.method == "grpo":
            return self.grpo.beta > 0
        return self.method in REFERENCE_METHODS


class FineTuneResource(Resource):
    """A fine-tuning run whose result is registered as a model version."""

    KIND: ClassVar[str] = "FineTune"
    kind: Literal["FineTune"] = field(doc="`FineTune`.")
    spec: FineTuneSpec = field(doc="What to train, on what, and how.")

    @property
    def registered_model(self) -> str:
        return self.spec.registration.model or self.metadata.name

    def references(self) -> list[Reference]:
        refs = []
        if self.spec.base_model:
            refs.append(Reference(ResourceId("BaseModel", self.spec.base_model),
                                  ("spec", "baseModel"), "base model"))
        if self.spec.from_fine_tune:
            refs.append(Reference(ResourceId("FineTune", self.spec.from_fine_tune),
                                  ("spec", "fromFineTune"), "starting fine-tune"))
        for index, dataset in enumerate(self.spec.datasets):
            refs.append(Reference(ResourceId("Dataset", dataset.name),
                                  ("spec", "datasets", index, "name"), "dataset"))
        for index, reward in enumerate(self.spec.rewards):
            if reward.reward_model is not None:
                refs.append(Reference(ResourceId("FineTune", reward.reward_model.fine_tune),
                                      ("spec", "rewards", index, "rewardModel", "fineTune"), "reward model"))
        return refs

