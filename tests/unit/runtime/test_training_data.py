"""Which tokens chat SFT trains: the labels the runtime's own trainer sees, on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="needs the [train] extra")

from reconciler.jobs.jobfile import PreparedDataset  # noqa: E402
from reconciler.runtime import loading  # noqa: E402
from reconciler.runtime.dataset import prepare_dataset  # noqa: E402
from reconciler.runtime.finetune import build_trainer, training_arguments  # noqa: E402
from reconciler.runtime.training_data import load_records  # noqa: E402
from reconciler.specs.finetune import FineTuneSpec  # noqa: E402
from tests.support.runtime_support import base_model, dataset_job, finetune_job, prepared  # noqa: E402

CHAT = [{"role": "system", "content": "Answer with a color."},
        {"role": "user", "content": "What is the color of the sky?"},
        {"role": "assistant", "content": "blue"},
        {"role": "user", "content": "And of a lemon?"},
        {"role": "assistant", "content": "yellow"}]


def _trained_text(tiny_model: Path, tmp_path: Path, training: dict) -> list[str]:
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": CHAT}) + "\n")
    dataset = dataset_job(tmp_path / "store", "sqlite:///unused.db", "chats", data,
                          {"schema": {"type": "chat"}, "split": {"train": 1, "validation": 0, "test": 0}})
    prepare_dataset(dataset)
    ref = base_model(tiny_model)
    job = finetune_job(tmp_path / "store", "sqlite:///unused.db", "ft", ref, [prepared(dataset)],
                       {"adapter": {"type": "lora", "r": 2}, "training": {"maxSteps": 1, **training}})
    spec = FineTuneSpec.model_validate(job.spec)
    tokenizer = loading.load_tokenizer(ref)
    records = load_records(job.datasets, "train", "sft", 0, tokenizer, spec.training.train_on)
    arguments = training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=False)
    trainer = build_trainer(spec, loading.load_base_model(ref), tokenizer, None, arguments, records, [])
    [example] = trainer.train_dataset
    assert tokenizer.decode(example["input_ids"]) == tokenizer.apply_chat_template(CHAT, tokenize=False)
    runs, current = [], []
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return [*runs, tokenizer.decode(current)] if current else runs


def test_chat_sft_trains_every_assistant_turn_by_default(tiny_model: Path, tmp_path: Path) -> None:
    """The reply and its end-of-turn token of both turns; never the role header or the prompts."""
    assert _trained_text(tiny_model, tmp_path, {}) == ["blue<|im_end|>\n", "yellow<|im_end|>\n"]


def test_last_assistant_turn_trains_only_the_last(tiny_model: Path, tmp_path: Path) -> None:
    trained = _trained_text(tiny_model, tmp_path, {"trainOn": "lastAssistantTurn"})
    assert trained == ["yellow<|im_end|>\n"]


def test_instruction_rows_mixed_with_chats_train_as_trl_would_have(tiny_model: Path, tmp_path: Path) -> None:
    """Mixed with chat data, instruction rows are tokenized here too (one column layout); their
    tokens and labels are the ones trl's prompt/completion path gives."""
    from reconciler.runtime.training_data import sft_records, to_record

    rows = [{"instruction": f"What color is fruit {i}?", "input": "", "output": f"Fruit {i} is red."}
            for i in range(3)]
    ref = base_model(tiny_model)
    unread = PreparedDataset(name="fruit", location=str(tmp_path), digest="sha256:0",
                             schema_type="instruction",
                             fingerprint="0" * 64)
    job = finetune_job(tmp_path, "sqlite:///unused.db", "ft", ref, [unread], {"training": {"maxSteps": 1}})
    spec = FineTuneSpec.model_validate(job.spec)
    tokenizer, model = loading.load_tokenizer(ref), loading.load_base_model(ref)
    arguments = training_arguments(job, spec, strategy="ddp", cuda=False, has_validation=False)

    def prepared_rows(records: list[dict]) -> list[tuple[list[int], list[int]]]:
        trainer = build_trainer(spec, model, tokenizer, None, arguments, records, [])
        return [(example["input_ids"], example["labels"]) for example in trainer.train_dataset]

    by_trl = prepared_rows([to_record(row, "instruction", "sft") for row in rows])
    assert prepared_rows(sft_records(rows, "instruction", tokenizer, "allAssistantTurns")) == by_trl


def _runs(tokenizer: object, encoded: dict[str, list[int]]) -> list[str]:
    """The decoded stretches of trained tokens."""
    runs, current = [], []
    for token, bit in zip(encoded["input_ids"], encoded["completion_mask"], strict=True):
        if bit:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return [*runs, tokenizer.decode(current)] if current else runs


class _SlowTokenizer:
    """The tiny tokenizer without offsets, as a slow (Python) tokenizer is."""

    is_fast = False

    def __init__(self, fast: object) -> None:
        self.fast = fast

    def apply_chat_template(self, *args: object, **kwargs: object) -> object:
        return self.fast.apply_chat_template(*args, **kwargs)

    def __call__(self, text: str, add_special_tokens: bool) -> dict[str, list[int]]:
        return {"input_ids": self.fast(text, add_special_tokens=add_special_tokens)["input_ids"]}


def test_a_tokenizer_without_offsets_masks_the_same_turns(tiny_model: Path) -> None:
    from reconciler.runtime.training_data import tokenize_chat, trained_turns

    tokenizer = loading.load_tokenizer(base_model(tiny_model))
    encoded = tokenize_chat(_SlowTokenizer(tokenizer), CHAT, trained_turns(CHAT, "allAssistantTurns"))
    assert _runs(tokenizer, encoded) == ["blue<|im_end|>\n", "yellow<|im_end|>\n"]


def test_a_template_that_rewrites_earlier_turns_is_refused_with_the_way_out(tiny_model: Path) -> None:
    from reconciler.runtime.training_data import TrainingDataError, tokenize_chat

    tokenizer = loading.load_tokenizer(base_model(tiny_model))
    tokenizer.chat_template = (  # shows only the last reply in full, as templates that drop reasoning do
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
        "{% if m['role'] == 'assistant' and not loop.last %}...{% else %}{{ m['content'] }}{% endif %}"
        "{{ '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    with pytest.raises(TrainingDataError, match="set training.trainOn: lastAssistantTurn"):
        tokenize_chat(tokenizer, CHAT, [2, 4])
    assert _runs(tokenizer, tokenize_chat(tokenizer, CHAT, [4])) == ["yellow<|im_end|>\n"]


def test_max_samples_trains_on_the_first_rows_of_the_split(tmp_path: Path) -> None:
    """The cap takes the first N rows in the split's stored order (stable from run to run), before
    mixing; validation rows are not capped."""
    from reconciler.runtime.dataset import load_split

    data = tmp_path / "fruit.jsonl"
    rows = [{"instruction": f"Color of fruit {i}?", "output": f"Color {i}."} for i in range(20)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = dataset_job(tmp_path / "store", "sqlite:///unused.db", "fruit", data,
                          {"schema": {"type": "instruction"},
                           "split": {"train": 0.8, "validation": 0.2, "test": 0}})
    prepare_dataset(dataset)
    capped = prepared(dataset).model_copy(update={"max_samples": 5})
    first = [row["instruction"] for row in load_split(capped.location, "train")[:5]]
    records = load_records([capped], "train", "sft", 0)
    assert [record["prompt"][-1]["content"] for record in records] == first
    validation = load_split(capped.location, "validation")
    assert len(load_records([capped], "validation", "sft", 0)) == len(validation) > 5
    other = prepared(dataset, weight=1.0).model_copy(update={"name": "other"})
    mixed = load_records([capped, other], "train", "sft", 0)
    assert len(mixed) == 5 + len(load_split(capped.location, "train"))  # mixing keeps the capped total


def test_grpo_leaves_out_prompts_longer_than_max_seq_length(tiny_model: Path) -> None:
    from reconciler.runtime.training_data import prompts_that_fit, to_record

    tokenizer = loading.load_tokenizer(base_model(tiny_model))
    rows = [{"prompt": "What color is a lime?", "reference": "green"},
            {"prompt": "What color is a lime? " * 40, "reference": "green"}]
    records = [to_record(row, "prompt", "grpo") for row in rows]
    short = len(tokenizer.apply_chat_template(records[0]["prompt"], add_generation_prompt=True,
                                              return_dict=True)["input_ids"])
    kept, left_out = prompts_that_fit(records, tokenizer, short)
    assert kept == records[:1] and left_out == 1
    assert prompts_that_fit(records, tokenizer, short - 1) == ([], 2)
    assert kept[0]["reference"] == "green"  # the rewards' column travels with the prompt
