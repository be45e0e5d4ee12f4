"""Prepared dataset rows -> the records TRL's trainers take, mixed by the spec's weights.

Instruction rows become a conversational prompt/completion pair (so the loss falls on the
completion only unless `trainOnInputs`); preference rows become prompt/chosen/rejected; text rows
stay text. Chat rows train on every assistant turn (`training.trainOn: allAssistantTurns`): the
chat template renders the conversation, each assistant turn's span is found in that rendering (from
the end of the rendering up to the turn with a generation prompt, to the end of the rendering
through the turn), and the tokens in those spans are the ones trained: the role header a template
adds is context, the reply and its end-of-turn token are trained. With `lastAssistantTurn`, a chat is
split before its last assistant turn into a prompt/completion pair, as an instruction row is. Rows
come from the Dataset job's parquet splits: a fine-tune never re-reads or re-cleans the source.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from reconciler.errors import PermanentError
from reconciler.jobs.jobfile import PreparedDataset


class TrainingDataError(PermanentError, ValueError):
    """Prepared data that cannot be used for the requested method."""


def user_prompt(row: dict[str, Any]) -> str:
    """The prompt of an instruction row, as the evaluation and the card show it too."""
    extra = (row.get("input") or "").strip()
    return f"{row['instruction']}\n\n{extra}" if extra else row["instruction"]


# The schema type each method other than sft and pretrain reads.
METHOD_SCHEMA = {"dpo": "preference", "orpo": "preference", "reward": "preference",
                 "kto": "binary-feedback", "grpo": "prompt"}


def to_record(row: dict[str, Any], schema_type: str, method: str) -> dict[str, Any] | None:
    """One TRL record, or None for a row that has nothing to learn from (a chat with no reply)."""
    wanted = METHOD_SCHEMA.get(method)
    if wanted is not None and schema_type != wanted:
        raise TrainingDataError(f"method {method} needs {wanted} data (got {schema_type})")
    if wanted == "preference":  # dpo, orpo, reward: a pair with its prompt (trl's explicit prompt)
        return {"prompt": [{"role": "user", "content": row["prompt"]}],
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}]}
    if method == "kto":
        return {"prompt": [{"role": "user", "content": row["prompt"]}],
                "completion": [{"role": "assistant", "content": row["completion"]}],
                "label": row["label"] == "true"}
    if method == "grpo":  # the policy writes the completion; the reference is for the rewards
        return {"prompt": [{"role": "user", "content": row["prompt"]}],
                "reference": row.get("reference") or ""}
    if schema_type == "text":
        return {"text": row["text"]}
    if schema_type == "instruction":
        prompt = [{"role": "user", "content": user_prompt(row)}]
        completion = [{"role": "assistant", "content": row["output"]}]
    elif schema_type == "chat":
        messages = [dict(message) for message in row["messages"]]
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None or last == 0:
            return None
        prompt, completion = messages[:last], [messages[last]]
    elif schema_type == "preference":
        prompt = [{"role": "user", "content": row["prompt"]}]
        completion = [{"role": "assistant", "content": row["chosen"]}]
    elif schema_type in ("prompt", "binary-feedback"):  # scored on its reference, or a good completion
        answer = row.get("reference") if schema_type == "prompt" else row["completion"]
        if not answer or (schema_type == "binary-feedback" and row.get("label") != "true"):
            return None
        prompt = [{"role": "user", "content": row["prompt"]}]
        completion = [{"role": "assistant", "content": answer}]
    else:
        raise TrainingDataError(f"unknown schema type {schema_type}")
    if method == "pretrain":
        return None  # continued pretraining reads text; validation refuses other data for it
    return {"prompt": prompt, "completion": completion}


def trained_turns(messages: Sequence[dict[str, Any]], train_on: str) -> list[int]:
    """The indexes of the assistant turns the loss falls on. A turn that opens the conversation
    has nothing that prompts it and stays context, as it did when only the last turn trained."""
    turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant" and i > 0]
    return turns[-1:] if train_on == "lastAssistantTurn" else turns


def _render(tokenizer: Any, messages: Sequence[dict[str, Any]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer: Any, messages: Sequence[dict[str, Any]],
                    trained: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The chat template's rendering of `messages` through the last trained turn, and the
    character spans of the trained turns in it: from where the rendering of the turns before one
    with a generation prompt ends (so the role header is not trained) to where the rendering
    through the turn ends (so its end-of-turn token is). Some templates close a conversation with
    a trailer that a following turn replaces (Phi-3 writes its eos token unless a generation
    prompt follows): an earlier turn ends where its rendering and the same with a generation prompt
    part. A template that renders earlier turns differently once later turns follow (Qwen3 drops
    their reasoning, Mistral moves the system message to the last user turn) cannot be masked
    this way."""
    text = _render(tokenizer, messages[: trained[-1] + 1], False)
    specials = _special_token_texts(tokenizer)
    spans = []
    for index in trained:
        through = _render(tokenizer, messages[: index + 1], False)
        if not text.startswith(through):
            continued = _render(tokenizer, messages[: index + 1], True)
            through = through[:_agreeing_length(through, continued, specials)]
        if not text.startswith(through):
            raise TrainingDataError(
                "the chat template renders an earlier assistant turn differently once later turns "
                "follow, so every assistant turn cannot be trained on the same rendering; set "
                "training.trainOn: lastAssistantTurn")
        prompt = _render(tokenizer, messages[:index], True)
        start = _agreeing_length(prompt, through, ())  # the generation prompt, when it matches
        spans.append((start, len(through)))
    return text, spans


def _special_token_texts(tokenizer: Any) -> tuple[str, ...]:
    added = getattr(tokenizer, "get_added_vocab", dict)()
    return tuple({*getattr(tokenizer, "all_special_tokens", ()), *added})


def _agreeing_length(first: str, second: str, specials: Sequence[str]) -> int:
    """How many leading characters `first` and `second` share, not counting a special token of
    `first` that they share only the start of (`<|end` of `<|endoftext|>` and `<|end|>`)."""
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    for token in specials:
        start = first.find(token, max(0, length - len(token) + 1))
        if 0 <= start < length < start + len(token):
            length = start
    return length


def tokenize_chat(tokenizer: Any, messages: Sequence[dict[str, Any]],
                  trained: Sequence[int]) -> dict[str, list[int]]:
    """`input_ids` of the rendered conversation and a `completion_mask` that is 1 on the tokens of
    the trained assistant turns (trl builds the labels from it, and truncates and packs it)."""
    text, spans = assistant_spans(tokenizer, messages, trained)
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        mask = [int(any(end > first and begin < last for first, last in spans))
                for begin, end in encoded["offset_mapping"]]
        return {"input_ids": list(encoded["input_ids"]), "completion_mask": mask}
    ids: list[int] = []  # a slow tokenizer has no offsets: tokenize the pieces in turn
    mask = []
    cursor = 0
    for first, last in [*spans, (len(text), len(text))]:
        for piece, bit in ((text[cursor:first], 0), (text[first:last], 1)):
            if piece:
                piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
                ids.extend(piece_ids)
                mask.extend([bit] * len(piece_ids))
        cursor = last
    return {"input_ids": ids, "completion_mask": mask}


def mix(parts: Sequence[tuple[list[dict[str, Any]], float]], seed: int) -> list[dict[str, Any]]:
    """Draw from several datasets by weight: dataset i contributes round(total x w_i / sum(w))
    rows, where total is the sum of their sizes; a dataset asked for more rows than it has is
    repeated (each pass in a fresh seeded order), so [3, 1] really is 75%/25%."""
    parts = [(rows, weight) for rows, weight in parts if rows]
    if len(parts) == 1:
        return list(parts[0][0])
    total = sum(len(rows) for rows, _ in parts)
    weights = sum(weight for _, weight in parts)
    generator = random.Random(seed)
    mixed: list[dict[str, Any]] = []
    for rows, weight in parts:
        wanted = round(total * weight / weights)
        drawn: list[dict[str, Any]] = []
        while len(drawn) < wanted:
            order = list(range(len(rows)))
            generator.shuffle(order)
            drawn.extend(rows[i] for i in order[: wanted - len(drawn)])
        mixed.extend(drawn)
    generator.shuffle(mixed)
    return mixed


def sft_records(rows: Sequence[dict[str, Any]], schema_type: str, tokenizer: Any,
                train_on: str) -> list[dict[str, Any]]:
    """SFT records already tokenized with their loss mask: chat rows on their trained assistant
    turns, instruction rows on their completion (so they mix with chat rows)."""
    records = []
    for row in rows:
        if schema_type == "chat":
            messages = [dict(message) for message in row["messages"]]
            trained = trained_turns(messages, train_on)
        else:
            record = to_record(row, schema_type, "sft")
            if record is None:
                continue
            messages = [*record["prompt"], *record["completion"]]
            trained = [len(messages) - 1]
        if trained:
            records.append(tokenize_chat(tokenizer, messages, trained))
    return records


def prompts_that_fit(records: Sequence[dict[str, Any]], tokenizer: Any,
                     max_tokens: int) -> tuple[list[dict[str, Any]], int]:
    """GRPO's records whose prompt, as the chat template renders it for generation, is at most
    `max_tokens` (training.maxSeqLength) tokens, and how many were left out: trl does not truncate
    a prompt, and one cut short would ask something else."""
    kept = []
    for record in records:
        ids = tokenizer.apply_chat_template(record["prompt"], add_generation_prompt=True, tokenize=True,
                                            return_dict=True)["input_ids"]
        if len(ids) <= max_tokens:
            kept.append(record)
    return kept, len(records) - len(kept)


def load_records(datasets: Sequence[PreparedDataset], split: str, method: str, seed: int,
                 tokenizer: Any = None, train_on: str = "allAssistantTurns") -> list[dict[str, Any]]:
    """The records of one split of every dataset, mixed by weight (validation: unweighted).
    With a tokenizer, SFT on chat data trains every assistant turn (`train_on`): its records are
    tokenized here, and so are the instruction records mixed with them."""
    from reconciler.runtime.dataset import load_split

    tokenized = (tokenizer is not None and method == "sft" and train_on == "allAssistantTurns"
                 and any(dataset.schema_type == "chat" for dataset in datasets))
    parts = []
    for dataset in datasets:
        rows = load_split(dataset.location, split)
        if split == "train" and dataset.max_samples is not None:
            rows = rows[: dataset.max_samples]  # the first N, in the split's (stable) order
        if tokenized:
            records = sft_records(rows, dataset.schema_type, tokenizer, train_on)
        else:
            records = [record for row in rows
                       if (record := to_record(row, dataset.schema_type, method)) is not None]
        if method == "grpo":  # where each prompt came from, for a reward's error message
            from reconciler.runtime.rewards import ROW_COLUMN

            records = [{**record, ROW_COLUMN: f"{index} of {dataset.name}'s {split} split"}
                       for index, record in enumerate(records)]
        parts.append((records, dataset.weight if split == "train" else 1.0))
    if split != "train":
        return [record for records, _ in parts for record in records]
    return mix(parts, seed)
