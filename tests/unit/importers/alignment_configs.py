"""Alignment configs in axolotl's and LLaMA-Factory's published shapes, written for these tests:
KTO, ORPO, GRPO and reward modelling (axolotl's `rl: kto|orpo|grpo`, `reward_model: true`;
LLaMA-Factory's `stage: kto`, `stage: dpo` with `pref_loss: orpo`, `stage: rm`), with the data and
the reward functions they read. configs.py puts them beside the SFT configs."""

from __future__ import annotations

import json
from pathlib import Path

PAIRS = '{"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "A chair."}\n'
FEEDBACK = '{"prompt": "Name a fruit.", "completion": "A pear.", "label": true}\n'
FEEDBACK_QA = '{"question": "Name a fruit.", "answer": "A stone.", "good": false}\n'
FEEDBACK_LF = [{"instruction": "Name a fruit.", "output": "A plum.", "kto_tag": True}]
MATH = '{"prompt": "What is 2 + 2?", "answer": "4"}\n'
BT_PAIRS = '{"system": "", "input": "Name a fruit.", "chosen": "A fig.", "rejected": "A car."}\n'
# A reward module in the spec folder, as axolotl imports it from the run folder: specs.rewards.math
REWARDS = """
def accuracy(prompts, completions, answer=None, **columns):
    return [1.0 if "4" in completion else 0.0 for completion in completions]


def brevity(prompts, completions, **columns):
    return [-len(completion) / 1000 for completion in completions]
"""

AXOLOTL_KTO = """
base_model: Qwen/Qwen2.5-0.5B-Instruct
chat_template: qwen_25
rl: kto
rl_beta: 0.2
kto_desirable_weight: 1.0
kto_undesirable_weight: 1.0
remove_unused_columns: false
datasets:
  - path: data/feedback.jsonl
    type: llama3.ultra
  - path: data/feedback-qa.jsonl
    type:
      field_prompt: question
      field_completion: answer
      field_label: good
val_set_size: 0.1
adapter: lora
lora_r: 16
lora_alpha: 32
lora_target_linear: true
sequence_len: 1024
micro_batch_size: 2
gradient_accumulation_steps: 4
num_epochs: 1
learning_rate: 5e-6
optimizer: adamw_torch
lr_scheduler: cosine
bf16: auto
gradient_checkpointing: true
gradient_checkpointing_kwargs:
  use_reentrant: true
output_dir: ./outputs/kto
"""

AXOLOTL_ORPO = """
base_model: meta-llama/Llama-3.2-1B-Instruct
chat_template: llama3
rl: orpo
orpo_alpha: 0.2
remove_unused_columns: false
datasets:
  - path: data/pairs.jsonl
  - path: argilla/ultrafeedback-binarized-preferences-cleaned
    type: chat_template.argilla
    split: train
val_set_size: 0.05
adapter: qlora
load_in_4bit: true
lora_r: 8
lora_alpha: 16
lora_target_linear: true
sequence_len: 2048
micro_batch_size: 2
gradient_accumulation_steps: 4
num_epochs: 1
learning_rate: 8e-6
lr_scheduler: linear
bf16: true
flash_attention: true
output_dir: ./outputs/orpo
"""

AXOLOTL_GRPO = """
base_model: Qwen/Qwen2.5-1.5B-Instruct
chat_template: qwen_25
vllm:
  host: 0.0.0.0
  port: 8000
  gpu_memory_utilization: 0.85
rl: grpo
trl:
  beta: 0.001
  max_completion_length: 128
  use_vllm: true
  vllm_server_host: 0.0.0.0
  num_generations: 4
  temperature: 0.7
  log_completions: true
  reward_funcs:
    - specs.rewards.math.accuracy
    - specs.rewards.math.brevity
  reward_weights: [1.0, 0.5]
datasets:
  - path: data/math.jsonl
val_set_size: 0.1
adapter: lora
lora_r: 32
lora_alpha: 64
lora_target_linear: true
micro_batch_size: 4
gradient_accumulation_steps: 2
max_steps: 500
learning_rate: 1e-5
bf16: true
gradient_checkpointing: true
output_dir: ./outputs/grpo
"""

AXOLOTL_REWARD = """
base_model: google/gemma-2-2b
model_type: AutoModelForSequenceClassification
num_labels: 1
tokenizer_type: AutoTokenizer
reward_model: true
chat_template: gemma
datasets:
  - path: data/bt-pairs.jsonl
    type: bradley_terry.chat_template
val_set_size: 0.1
eval_steps: 100
micro_batch_size: 2
gradient_accumulation_steps: 4
num_epochs: 1
learning_rate: 1e-5
bf16: true
output_dir: ./outputs/rm
"""

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
    ("axolotl", "kto"): AXOLOTL_KTO,
    ("axolotl", "orpo"): AXOLOTL_ORPO,
    ("axolotl", "grpo"): AXOLOTL_GRPO,
    ("axolotl", "reward"): AXOLOTL_REWARD,
    ("llamafactory", "kto"): LLAMAFACTORY_KTO,
    ("llamafactory", "orpo"): LLAMAFACTORY_ORPO,
    ("llamafactory", "reward"): LLAMAFACTORY_REWARD,
}


def write_data(root: Path) -> None:
    """The rows the alignment configs read, in the folder they ran in."""
    data = root / "data"
    (data / "pairs.jsonl").write_text(PAIRS * 3)
    (data / "pairs-holdout.jsonl").write_text(PAIRS)
    (data / "feedback.jsonl").write_text(FEEDBACK * 3)
    (data / "feedback-qa.jsonl").write_text(FEEDBACK_QA * 3)
    (data / "feedback-lf.json").write_text(json.dumps(FEEDBACK_LF * 3))
    (data / "math.jsonl").write_text(MATH * 3)
    (data / "bt-pairs.jsonl").write_text(BT_PAIRS * 3)


def write_rewards(root: Path) -> None:
    """The GRPO config's reward module, in the spec folder the tests write to (specs/)."""
    folder = root / "specs" / "rewards"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "math.py").write_text(REWARDS.lstrip())
