"""Alignment configs in LLaMA-Factory's published shapes, written for these tests: KTO, ORPO and
reward modelling (`stage: kto`, `stage: dpo` with `pref_loss: orpo`, `stage: rm`), with the data
they read. configs.py puts them beside the SFT configs."""

from __future__ import annotations

import json
from pathlib import Path

PAIRS = '{"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "A chair."}\n'
FEEDBACK_LF = [{"instruction": "Name a fruit.", "output": "A plum.", "kto_tag": True}]
DATASET_INFO = {
    "fruit_pairs": {
        "file_name": "pairs.jsonl",
        "ranking": True,
        "columns": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
    },
    "fruit_pairs_holdout": {"file_name": "pairs-holdout.jsonl", "ranking": True},
    "fruit_feedback": {
        "file_name": "feedback-lf.json",
        "columns": {"prompt": "instruction", "response": "output", "kto_tag": "kto_tag"},
    },
}

LLAMAFACTORY_KTO = """
model_name_or_path: Qwen/Qwen2.5-0.5B-Instruct
stage: kto
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
pref_beta: 0.1
kto_chosen_weight: 1.0
kto_rejected_weight: 1.0
dataset: fruit_feedback
template: qwen
cutoff_len: 2048
output_dir: saves/qwen/lora/kto
per_device_train_batch_size: 2
gradient_accumulation_steps: 8
learning_rate: 5.0e-6
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
val_size: 0.1
eval_strategy: steps
eval_steps: 500
"""

LLAMAFACTORY_ORPO = """
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
stage: dpo
do_train: true
finetuning_type: lora
lora_rank: 16
lora_target: all
pref_beta: 0.25
pref_loss: orpo
pref_ftx: 0
dataset: fruit_pairs
template: llama3
cutoff_len: 2048
output_dir: saves/llama3-8b/lora/orpo
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 5.0e-6
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
val_size: 0.05
"""

LLAMAFACTORY_REWARD = """
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
stage: rm
do_train: true
finetuning_type: full
deepspeed: examples/deepspeed/ds_z3_config.json
dataset: fruit_pairs
eval_dataset: fruit_pairs_holdout
template: llama3
cutoff_len: 2048
output_dir: saves/llama3-8b/full/rm
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-5
num_train_epochs: 1.0
lr_scheduler_type: cosine
bf16: true
val_size: 0.1
eval_strategy: steps
eval_steps: 500
"""

CONFIGS = {
    ("llamafactory", "kto"): LLAMAFACTORY_KTO,
    ("llamafactory", "orpo"): LLAMAFACTORY_ORPO,
    ("llamafactory", "reward"): LLAMAFACTORY_REWARD,
}


def write_data(root: Path) -> None:
    """The rows the alignment configs read, in the folder they ran in."""
    data = root / "data"
    (data / "pairs.jsonl").write_text(PAIRS * 3)
    (data / "pairs-holdout.jsonl").write_text(PAIRS)
    (data / "feedback-lf.json").write_text(json.dumps(FEEDBACK_LF * 3))
