"""Prepared dataset rows -> the records TRL's trainers take, mixed by the spec's weights.

Instruction rows become a conversational prompt/completion pair (so the loss falls on the
completion only unless `trainOnInputs`); chat rows are split before their last assistant turn;
preference rows become prompt/chosen/rejected; text rows stay text. Rows come from the Dataset
job's parquet splits: a fine-tune never re-reads or re-cleans the source.
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


def to_record(row: dict[str, Any], schema_type: str, method: str) -> dict[str, Any] | None:
    """One TRL record, or None for a row that has nothing to learn from (a chat with no reply)."""
    if method == "dpo":
        if schema_type != "preference":
            raise TrainingDataError(f"method dpo needs preference data (got {schema_type})")
        return {"prompt": [{"role": "user", "content": row["prompt"]}],
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}]}
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
    else:
        raise TrainingDataError(f"unknown schema type {schema_type}")
    if method == "pretrain":
        return None  # continued pretraining reads text; validation refuses other data for it
    return {"prompt": prompt, "completion": completion}


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


def load_records(datasets: Sequence[PreparedDataset], split: str, method: str,
                 seed: int) -> list[dict[str, Any]]:
    """The records of one split of every dataset, mixed by weight (validation: unweighted)."""
    from reconciler.runtime.dataset import load_split

    parts = []
    for dataset in datasets:
        records = [record for row in load_split(dataset.location, split)
                   if (record := to_record(row, dataset.schema_type, method)) is not None]
        parts.append((records, dataset.weight if split == "train" else 1.0))
    if split != "train":
        return [record for records, _ in parts for record in records]
    return mix(parts, seed)
