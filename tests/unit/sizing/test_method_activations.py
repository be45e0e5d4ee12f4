"""The planner's counts for the preference methods and GRPO's generation, against what trl and
transformers really hold, on a tiny Llama built here (CPU).

Each preference case trains one step of trl's own trainer, as in test_memory_activations.py:
a `saved_tensors_hooks` records every tensor autograd saves, and a twin with one layer more
isolates what one layer keeps. The planner's count must match one layer to 0.1% and the whole
step to 1% (ORPO 2%):

- dpo and reward: trl joins chosen and rejected into one batch, so the step keeps 2 x
  micro-batch rows (the runtime's DPOTrainer; trl's RewardTrainer on a ForSequenceClassification
  model, whose score head keeps no logits over the vocabulary);
- kto: its KL term and the reference run under `torch.no_grad`: micro-batch rows only;
- orpo: 2 x micro-batch rows, and the logits it computes its losses from;
- trl disables dropout for all four, so LoRA keeps no dropout masks.

Every batch has a padded row, as in the planner's count (a mask for SDPA; see
test_memory_activations.py). GRPO's KV cache is checked against the cache `generate` returns.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from reconciler.sizing import memory as planner
from reconciler.sizing.activations import kept_activation_bytes
from reconciler.sizing.methods import kv_cache_bytes, orpo_logits_bytes
from tests.support.runtime_support import needs_training, saved_activation_bytes

pytestmark = [pytest.mark.slow, needs_training]

SHAPE = {"hidden_size": 128, "layers": 3, "heads": 4, "kv_heads": 2, "intermediate_size": 352}
WORDS = ["red", "green", "blue", "yellow", "apple", "banana", "cherry", "lemon", "sky", "grass", "sun"]
LENGTH, MICRO_BATCH = 64, 3
ADAPTERS = {"lora": {"type": "lora", "r": 8, "dropout": 0.05}, "full": {"type": "none"}}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from reconciler.runtime.tiny_model import build

    root = tmp_path_factory.mktemp("method-models")
    return {name: build(root / name, corpus=[" ".join(WORDS)], max_positions=1024,
                        **{**SHAPE, "layers": SHAPE["layers"] + extra})
            for name, extra in (("tiny", 0), ("tiny+1", 1))}


def _records(method: str) -> list[dict]:
    """One row longer than LENGTH (truncated to it; the reward trainer drops rows that long, so
    there it stops short), the others shorter: a padded batch."""
    rng = random.Random(0)

    def text(words: int) -> list[dict]:
        return [{"role": "assistant", "content": " ".join(rng.choice(WORDS) for _ in range(words))}]

    first = 40 if method == "reward" else 2 * LENGTH
    records = []
    for index in range(MICRO_BATCH):
        prompt = [{"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(3))}]
        answer = text(first if index == 0 else LENGTH // (2 + index))
        if method == "kto":
            records.append({"prompt": prompt, "completion": answer, "label": index % 2 == 0})
        else:
            records.append({"prompt": prompt, "chosen": answer, "rejected": text(LENGTH // (3 + index))})
    return records


def _trainer(method: str, model_dir: Path, adapter: dict, work: Path):
    """trl's trainer for the method, set up as the runtime sets up its DPO trainer."""
    from datasets import Dataset

    from reconciler.jobs.jobfile import BaseModelRef, JobFile, MlflowTarget
    from reconciler.runtime import finetune, loading
    from reconciler.specs.finetune import FineTuneSpec

    body = {"baseModel": "tiny", "datasets": [{"name": "d"}], "method": method, "adapter": adapter,
            "training": {"maxSteps": 1, "microBatchSize": MICRO_BATCH, "maxSeqLength": LENGTH,
                         "precision": "bf16"}}
    spec = FineTuneSpec.model_validate(body)
    job = JobFile(kind="FineTune", name="probe", fingerprint="b" * 64, spec=body, storage_root=str(work),
                  mlflow=MlflowTarget(tracking_uri=f"sqlite:///{work / 'unused.db'}"))
    ref = BaseModelRef(name="tiny", source=f"file://{model_dir}")
    tokenizer = loading.load_tokenizer(ref)
    dtype = finetune.frozen_base_dtype(spec, cuda=False)
    if method == "reward":
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=dtype)
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = loading.load_base_model(ref, dtype=dtype)
    if spec.adapter.type == "none":
        finetune.train_in_fp32(model)
    arguments = finetune.training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=False)
    arguments["save_strategy"] = "no"
    records = _records(method)
    adapter_config = finetune.peft_config(spec)
    if method == "dpo":
        return finetune.build_trainer(spec, model, tokenizer, adapter_config, arguments, records, [])
    if method == "kto":
        from trl import KTOConfig as Config
        from trl import KTOTrainer as Trainer
    elif method == "reward":
        from trl import RewardConfig as Config
        from trl import RewardTrainer as Trainer

        if adapter_config is not None:
            adapter_config.task_type = "SEQ_CLS"  # PEFT then trains the score head in full
    else:
        from trl.experimental.orpo import ORPOConfig as Config
        from trl.experimental.orpo import ORPOTrainer as Trainer
    return Trainer(model=model, args=Config(**arguments, max_length=LENGTH), processing_class=tokenizer,
                   train_dataset=Dataset.from_list(records), peft_config=adapter_config)


def _batch_length(trainer, method: str) -> int:
    """The padded length of the step's rows."""
    batch = next(iter(trainer.get_train_dataloader()))
    if method == "orpo":
        return max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    return batch["input_ids"].shape[1]


def _planned(model_dir: Path, method: str, adapter: dict, length: int, rows: int | None = None) -> float:
    """What the planner says the step keeps: its activations for the method's rows (with the
    CPU's dropout mask, which trl's disabled dropout does not keep anyway), autocast's 16-bit
    copies of the fp32 trained weights, and ORPO's logits."""
    config = json.loads((model_dir / "config.json").read_text())
    shape = planner.TrainingShape(
        planner.Architecture.from_config(config), adapter["type"], rank=adapter.get("r", 16),
        sequence_length=length, micro_batch=MICRO_BATCH, lora_dropout=adapter.get("dropout", 0.05),
        method=planner.MethodShape(method, reference_model=method in ("dpo", "kto")))
    rows = rows or MICRO_BATCH * shape.method.rows_per_example
    trained = shape.architecture.linear_parameters if shape.adapter == "none" else shape.trainable
    logits = orpo_logits_bytes(shape, MICRO_BATCH) if method == "orpo" else 0
    return kept_activation_bytes(shape, rows, device="cpu") + planner.HALF * trained + logits


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
@pytest.mark.parametrize("method", ["dpo", "kto", "reward", "orpo"])
def test_a_preference_step_keeps_what_the_planner_counts(models: dict[str, Path], tmp_path: Path,
                                                         method: str, adapter: str) -> None:
    measured, planned, lengths = {}, {}, {}
    for name, model_dir in models.items():
        trainer = _trainer(method, model_dir, ADAPTERS[adapter], tmp_path / name)
        lengths[name] = _batch_length(trainer, method)
        measured[name] = saved_activation_bytes(trainer)
        planned[name] = _planned(model_dir, method, ADAPTERS[adapter], lengths[name])
    assert lengths["tiny"] == lengths["tiny+1"]
    one_layer = planned["tiny+1"] - planned["tiny"]
    assert measured["tiny+1"] - measured["tiny"] == pytest.approx(one_layer, rel=1e-3)
    assert measured["tiny"] == pytest.approx(planned["tiny"], rel=0.02 if method == "orpo" else 0.01)
    # one row per example, for a pair, or two for KTO, would miss one layer by about half
    wrong_rows = MICRO_BATCH * (2 if method == "kto" else 1)
    wrong = {name: _planned(model_dir, method, ADAPTERS[adapter], lengths[name], wrong_rows)
             for name, model_dir in models.items()}
    assert measured["tiny+1"] - measured["tiny"] != pytest.approx(wrong["tiny+1"] - wrong["tiny"], rel=0.3)


def test_the_reward_model_has_the_parameters_the_planner_counts(models: dict[str, Path]) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(models["tiny"], num_labels=1)
    config = json.loads((models["tiny"] / "config.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == planner.sequence_classifier_parameters(
        planner.Architecture.from_config(config))


def test_the_kv_cache_of_generate_is_what_the_planner_counts(models: dict[str, Path]) -> None:
    """Six sequences of a 20-token prompt and 12 generated tokens: the cache holds 31 positions
    (the last token is never fed back), each layer's keys and values at the grouped width."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(models["tiny"], dtype=torch.bfloat16)
    prompts = torch.randint(5, 400, (6, 20), generator=torch.Generator().manual_seed(0))
    out = model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=12,
                         min_new_tokens=12, do_sample=True, return_dict_in_generate=True, pad_token_id=3)
    cache = getattr(out, "cache", None) or out.past_key_values
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    config = json.loads((models["tiny"] / "config.json").read_text())
    assert held == kv_cache_bytes(planner.Architecture.from_config(config), 6, 20 + 12 - 1, planner.HALF)
