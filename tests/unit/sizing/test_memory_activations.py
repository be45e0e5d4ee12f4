"""The planner's activations against the tensors a real training step keeps for backward.

Each case builds the runtime's own trainer (reconciler.runtime.finetune.build_trainer: trl's
SFTTrainer, PEFT, bf16 autocast) on a tiny Llama built here, and trains one step with a
`torch.autograd.graph.saved_tensors_hooks` that records every tensor autograd saves. The bytes
of the distinct storages saved, parameters excluded, are what the forward pass keeps for the
backward pass. The planner's `kept_activation_bytes` (with the CPU's dropout mask) plus the
16-bit copies autocast makes of the trained weights must equal that, for two shapes, LoRA
with and without dropout, full fine-tuning, and packed and padded batches. The `-16bit` cases
run the whole module in bf16, as DeepSpeed's engine does (DeepSpeed itself is not started).

With gradient checkpointing, the checkpoint saves each layer's input through the same hooks,
so that is checked too. The one layer recomputed at a time during the backward pass is a
temporary the hooks do not see; the planner counts it from the same per-layer figure.

On the CPU this checks which tensors are kept, not how a GPU allocator rounds them; the GPU
comparison is benchmarks/planner_memory.py.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reconciler.sizing import memory as planner
from reconciler.sizing.activations import activation_bytes, kept_activation_bytes
from tests.support.runtime_support import needs_training, saved_activation_bytes

if TYPE_CHECKING:
    pass

pytestmark = [pytest.mark.slow, needs_training]

SHAPES = {  # name: (hidden, layers, heads, kv heads, MLP width)
    "gqa": (128, 3, 4, 2, 352),
    "mha": (192, 2, 6, 6, 512),
}
WORDS = ["red", "green", "blue", "yellow", "apple", "banana", "cherry", "lemon", "sky", "grass", "sun"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each shape, and its twin with one layer more: the difference between the two is what one
    layer keeps, free of everything else a step keeps."""
    from reconciler.runtime.tiny_model import build

    root = tmp_path_factory.mktemp("activation-models")
    built = {}
    for name, (h, layers, heads, kv, ff) in SHAPES.items():
        for extra, suffix in ((0, ""), (1, "+1")):
            built[name + suffix] = build(root / (name + suffix), corpus=[" ".join(WORDS)], hidden_size=h,
                                         layers=layers + extra, heads=heads, kv_heads=kv,
                                         intermediate_size=ff, max_positions=1024)
    return built


def _saved_bytes(model_dir: Path, spec_body: dict, length: int, micro_batch: int, padded: bool,
                 work: Path, fp32_weights: bool, attention: str | None = None) -> float:
    """Train one step as the runtime would; return the bytes of the distinct non-parameter
    storages autograd saved."""
    import torch

    from reconciler.jobs.jobfile import BaseModelRef, JobFile, MlflowTarget
    from reconciler.runtime import finetune, loading
    from reconciler.specs.finetune import FineTuneSpec

    body = {"baseModel": "tiny", "datasets": [{"name": "d"}], "method": "pretrain", **spec_body}
    body["training"] = {"maxSteps": 1, "microBatchSize": micro_batch, "maxSeqLength": length,
                        "precision": "bf16", **body.get("training", {})}
    spec = FineTuneSpec.model_validate(body)
    job = JobFile(kind="FineTune", name="probe", fingerprint="b" * 64, spec=body, storage_root=str(work),
                  mlflow=MlflowTarget(tracking_uri=f"sqlite:///{work / 'unused.db'}"))
    ref = BaseModelRef(name="tiny", source=f"file://{model_dir}")
    model = loading.load_base_model(ref, dtype=finetune.frozen_base_dtype(spec, cuda=False),
                                    attention=attention)
    if spec.adapter.type == "none" and fp32_weights:
        finetune.train_in_fp32(model)
    arguments = finetune.training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=False)
    arguments["save_strategy"] = "no"
    rng = random.Random(0)
    # The first row runs past the sequence length. With `padded` the others are shorter, so the
    # batch is padded to the length and attention needs its mask; otherwise every row is full.
    words = [length * 2 if index == 0 or not padded else length // (2 + index)
             for index in range(micro_batch)]
    records = [{"text": " ".join(rng.choice(WORDS) for _ in range(n))} for n in words]
    trainer = finetune.build_trainer(spec, model, loading.load_tokenizer(ref), finetune.peft_config(spec),
                                     arguments, records, [])
    if not fp32_weights:  # as DeepSpeed runs the module, adapters included: all in 16 bits
        trainer.model.to(torch.bfloat16)
    return saved_activation_bytes(trainer)


CASES = {
    "lora-all-linear-dropout": {"adapter": {"type": "lora", "r": 8, "dropout": 0.05}},
    "lora-qv-no-dropout": {"adapter": {"type": "lora", "r": 4, "dropout": 0.0,
                                       "targetModules": ["q_proj", "v_proj"]}},
    "full": {"adapter": {"type": "none"}},
    "full-16bit": {"adapter": {"type": "none"}},  # the module as DeepSpeed runs it
    "lora-16bit": {"adapter": {"type": "lora", "r": 8, "dropout": 0.05}},
}


def _shape(model_dir: Path, body: dict, length: int, micro_batch: int,
           packing: bool, attention: str = "sdpa") -> planner.TrainingShape:
    config = json.loads((model_dir / "config.json").read_text())
    adapter = body["adapter"]
    targets = adapter.get("targetModules", "all-linear")
    return planner.TrainingShape(
        planner.Architecture.from_config(config), adapter["type"], rank=adapter.get("r", 16),
        target_modules=targets if isinstance(targets, str) else tuple(targets), sequence_length=length,
        micro_batch=micro_batch, lora_dropout=adapter.get("dropout", 0.05), packing=packing,
        attention=attention)


def _expected(shape: planner.TrainingShape, micro_batch: int, fp32_weights: bool) -> float:
    """The kept activations, and autocast's 16-bit copies of fp32 trained weights (the hooks see
    those too, except under checkpointing, which recomputes them; the fused head's tile of
    logits is a temporary they do not see)."""
    trained = shape.architecture.linear_parameters if shape.adapter == "none" else shape.trainable
    copies = planner.HALF * trained if fp32_weights and not shape.gradient_checkpointing else 0
    return kept_activation_bytes(shape, micro_batch, device="cpu", fp32_weights=fp32_weights) + copies


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("model", sorted(SHAPES))
def test_kept_activations_are_the_tensors_a_training_step_saves(
        models: dict[str, Path], tmp_path: Path, model: str, case: str, packing: bool) -> None:
    length, micro_batch = 64, 3
    body = {**CASES[case], "training": {"packing": packing}}
    fp32_weights = not case.endswith("-16bit")
    measured, deeper = (_saved_bytes(models[name], body, length, micro_batch, padded=not packing,
                                     work=tmp_path / name, fp32_weights=fp32_weights)
                        for name in (model, model + "+1"))
    shape, deeper_shape = (_shape(models[name], body, length, micro_batch, packing)
                           for name in (model, model + "+1"))
    # One layer, to the byte (the few bytes of RoPE tables and such are common to both).
    one_layer = (_expected(deeper_shape, micro_batch, fp32_weights)
                 - _expected(shape, micro_batch, fp32_weights))
    assert deeper - measured == pytest.approx(one_layer, rel=1e-3), (deeper - measured, one_layer)
    # The whole step: within 1%, what the planner leaves out (RoPE tables, position ids).
    assert measured == pytest.approx(_expected(shape, micro_batch, fp32_weights), rel=0.01)


@pytest.mark.parametrize("case", ["lora-all-linear-dropout", "full"])
def test_gradient_checkpointing_keeps_each_layers_input(models: dict[str, Path], tmp_path: Path,
                                                         case: str) -> None:
    """Checkpointed, a layer keeps only its input (saved by the checkpoint, which these hooks
    see); the planner also counts the one layer recomputed at a time, a temporary they do not."""
    length, micro_batch, model = 64, 3, "gqa"
    body = {**CASES[case], "training": {"gradientCheckpointing": True}}
    measured, deeper = (_saved_bytes(models[name], body, length, micro_batch, padded=True,
                                     work=tmp_path / name, fp32_weights=True)
                        for name in (model, model + "+1"))
    shape = replace(_shape(models[model], body, length, micro_batch, packing=False),
                    gradient_checkpointing=True)
    residual = planner.HALF if shape.adapter == "lora" else 4
    tokens = length * micro_batch
    assert deeper - measured == tokens * residual * shape.architecture.hidden_size
    plain, plain_deeper = (replace(_shape(models[name], body, length, micro_batch, packing=False),
                                   gradient_checkpointing=False) for name in (model, model + "+1"))
    recomputed = (kept_activation_bytes(plain_deeper, micro_batch, device="cpu")
                  - kept_activation_bytes(plain, micro_batch, device="cpu"))
    assert measured == pytest.approx(_expected(shape, micro_batch, True) - recomputed, rel=0.01)


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("case", ["lora-all-linear-dropout", "full", "full-16bit"])
def test_eager_attention_keeps_the_scores(models: dict[str, Path], tmp_path: Path, case: str,
                                          packing: bool) -> None:
    """`training.attention: eager` keeps each layer's softmaxed scores (fp32, and the 16-bit copy
    the values are multiplied with), which SDPA never stores; the planner counts them."""
    length, micro_batch, model = 64, 3, "gqa"
    body = {**CASES[case], "training": {"packing": packing, "attention": "eager"}}
    fp32_weights = not case.endswith("-16bit")
    measured, deeper = (_saved_bytes(models[name], body, length, micro_batch, padded=not packing,
                                     work=tmp_path / name, fp32_weights=fp32_weights, attention="eager")
                        for name in (model, model + "+1"))
    shape, deeper_shape = (_shape(models[name], body, length, micro_batch, packing, attention="eager")
                           for name in (model, model + "+1"))
    one_layer = (_expected(deeper_shape, micro_batch, fp32_weights)
                 - _expected(shape, micro_batch, fp32_weights))
    assert deeper - measured == pytest.approx(one_layer, rel=1e-3), (deeper - measured, one_layer)
    assert measured == pytest.approx(_expected(shape, micro_batch, fp32_weights), rel=0.01)
    sdpa = replace(shape, attention="sdpa")
    assert _expected(shape, micro_batch, fp32_weights) > _expected(sdpa, micro_batch, fp32_weights)


def test_flash_attention_keeps_no_mask_and_grouped_keys() -> None:
    """flash-attention (which cannot run on this CPU) takes a packed batch as one sequence with
    position ids: no (rows x length)^2 mask, and keys and values at their grouped width."""
    llama = planner.Architecture.from_config({
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "intermediate_size": 14336, "vocab_size": 128256})
    packed = planner.TrainingShape(llama, "lora", sequence_length=4096, micro_batch=4, packing=True)
    flash = replace(packed, attention="flash_attention_2")
    tokens = 4096 * 4
    mask = 32 * planner.HALF * tokens ** 2
    # SDPA's 8h bytes per token and layer against query, key, value and output at their widths
    per_token_saving = 32 * (8 * 4096 - planner.HALF * (2 * 4096 + 2 * 1024))
    assert kept_activation_bytes(packed, 4) - kept_activation_bytes(flash, 4) == pytest.approx(
        mask + tokens * per_token_saving)
    assert mask == 16 * 2**30  # the mask alone is 16 GiB at this size


def test_the_estimate_no_longer_counts_attention_scores() -> None:
    """At long sequences Korthikanti's 5as/h term (the scores, which SDPA never stores)
    dominates; the runtime's count grows linearly with the length, apart from the mask."""
    llama = planner.Architecture.from_config({
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "intermediate_size": 14336, "vocab_size": 128256})
    short, long = (planner.TrainingShape(llama, "lora", sequence_length=n) for n in (1024, 4096))
    runtime = [kept_activation_bytes(s, 1) for s in (short, long)]
    paper = [activation_bytes(llama, s.sequence_length, 1) for s in (short, long)]
    masks = [32 * planner.HALF * s.sequence_length ** 2 for s in (short, long)]
    assert (runtime[1] - masks[1]) == pytest.approx(4 * (runtime[0] - masks[0]), rel=1e-9)
    assert paper[1] > 5 * paper[0]  # quadratic in the length
    assert runtime[1] < paper[1] / 2
