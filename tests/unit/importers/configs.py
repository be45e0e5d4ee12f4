"""Typical training configs in axolotl's and LLaMA-Factory's published shapes, written for these
tests (LoRA SFT with packing and flash-attention on chat data; QLoRA; full fine-tuning with
DeepSpeed ZeRO-3; and alignment_configs.py's KTO, ORPO, GRPO and reward models), and the project
folder each runs in: data, dataset_info.json, DeepSpeed JSON, reward functions."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import yaml

from tests.unit.importers import alignment_configs as alignment

CHATS = (
    '{"messages": [{"role": "user", "content": "Where is my order?"}, '
    '{"role": "assistant", "content": "It ships today."}]}\n'
)
SHAREGPT = '{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}\n'
ALPACA = '{"instruction": "Add", "input": "2 and 3", "output": "5"}\n'
QA = '{"question": "Capital of France?", "context": "", "answer": "Paris"}\n'

AXOLOTL_LORA = """
base_model: Qwen/Qwen2.5-7B-Instruct
model_type: AutoModelForCausalLM
tokenizer_type: AutoTokenizer
chat_template: qwen_25

datasets:
  - path: data/support.jsonl
    type: chat_template
    field_messages: messages
    message_property_mappings:
      role: role
      content: content
    roles_to_train: [assistant]
    train_on_eos: turn
dataset_prepared_path: ./prepared
val_set_size: 0.05
output_dir: ./outputs/qwen-lora

sequence_len: 4096
sample_packing: true
eval_sample_packing: false
pad_to_sequence_len: true

adapter: lora
lora_r: 32
lora_alpha: 64
lora_dropout: 0.05
lora_target_linear: true

wandb_project: support
wandb_log_model:

gradient_accumulation_steps: 4
micro_batch_size: 2
num_epochs: 2
optimizer: adamw_bnb_8bit
lr_scheduler: cosine
learning_rate: 2e-4
weight_decay: 0.01

bf16: auto
tf32: true
gradient_checkpointing: true
flash_attention: true
plugins:
  - axolotl.integrations.liger.LigerPlugin
liger_rope: true
liger_rms_norm: true
liger_glu_activation: true
liger_fused_linear_cross_entropy: true

logging_steps: 1
warmup_ratio: 0.03
evals_per_epoch: 1
saves_per_epoch: 1
save_total_limit: 3
special_tokens:
  pad_token: <|endoftext|>
"""

AXOLOTL_QLORA = """
base_model: meta-llama/Llama-3.1-8B-Instruct
chat_template: llama3
load_in_4bit: true
adapter: qlora
lora_r: 16
lora_alpha: 32
lora_target_modules:
  - q_proj
  - k_proj
  - v_proj
  - o_proj
bnb_config_kwargs:
  bnb_4bit_quant_type: nf4
  bnb_4bit_use_double_quant: true
datasets:
  - path: data/qa.jsonl
    type:
      field_instruction: question
      field_input: context
      field_output: answer
      format: "[INST] {instruction} [/INST]"
  - path: tatsu-lab/alpaca
    type: alpaca
    split: train
test_datasets:
  - path: data/qa-holdout.jsonl
    type:
      field_instruction: question
      field_input: context
      field_output: answer
sequence_len: 2048
micro_batch_size: 4
gradient_accumulation_steps: 2
max_steps: 1000
warmup_steps: 50
learning_rate: 0.0002
optimizer: paged_adamw_8bit
lr_scheduler: linear
gradient_checkpointing: true
gradient_checkpointing_kwargs:
  use_reentrant: false
sdp_attention: true
eval_steps: 100
save_steps: 200
hub_model_id: me/llama-qa
trust_remote_code: false
"""

AXOLOTL_FULL = """
base_model: mistralai/Mistral-7B-v0.3
tokenizer_config: mistralai/Mistral-7B-v0.3
datasets:
  - path: data/chats-sharegpt.jsonl
    type: chat_template
    field_messages: conversations
    message_property_mappings:
      role: from
      content: value
    roles:
      user: [human]
      assistant: [gpt]
chat_template: mistral_v2v3
tokens:
  - <tool_call>
  - </tool_call>
dataset_exact_deduplication: true
val_set_size: 0.02
sequence_len: 8192
sample_packing: true
micro_batch_size: 1
gradient_accumulation_steps: 8
num_epochs: 3
learning_rate: 1e-5
lr_scheduler: cosine
warmup_ratio: 0.05
optimizer: adamw_torch_fused
bf16: true
flash_attention: true
gradient_checkpointing: true
deepspeed: deepspeed_configs/zero3_bf16.json
evals_per_epoch: 1
saves_per_epoch: 1
early_stopping_patience: 3
seed: 7
dataloader_num_workers: 2
output_dir: ./out
strict: false
"""

ZERO3 = {
    "bf16": {"enabled": "auto"},
    "zero_optimization": {
        "stage": 3,
        "overlap_comm": True,
        "stage3_gather_16bit_weights_on_model_save": True,
    },
}

DATASET_INFO = {
    "support_chats": {
        "file_name": "support.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    },
    "qa": {
        "file_name": "qa.jsonl",
        "columns": {"prompt": "question", "query": "context", "response": "answer"},
    },
    "qa_holdout": {
        "file_name": "qa-holdout.jsonl",
        "columns": {"prompt": "question", "query": "context", "response": "answer"},
    },
    "legacy_chats": {"file_name": "legacy.json", "formatting": "sharegpt"},
}

LLAMAFACTORY_LORA = """
### model
model_name_or_path: Qwen/Qwen2.5-7B-Instruct
trust_remote_code: true
flash_attn: fa2
enable_liger_kernel: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 16
lora_alpha: 32
lora_target: all

### dataset
dataset: support_chats
template: qwen
cutoff_len: 4096
packing: true
neat_packing: true
max_samples: 5000
overwrite_cache: true
preprocessing_num_workers: 8
dataloader_num_workers: 4

### output
output_dir: saves/qwen2.5-7b/lora/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none

### train
per_device_train_batch_size: 2
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null

### eval
val_size: 0.1
per_device_eval_batch_size: 1
eval_strategy: steps
eval_steps: 500
"""

LLAMAFACTORY_QLORA = """
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
quantization_bit: 4
quantization_method: bnb
quantization_type: nf4
double_quantization: true
stage: sft
finetuning_type: lora
lora_rank: 8
lora_target: q_proj,v_proj
additional_target: embed_tokens,lm_head
new_special_tokens: <think>,</think>
dataset: qa
eval_dataset: qa_holdout
template: llama3
cutoff_len: 2048
output_dir: saves/llama3-8b/qlora/sft
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 2.0e-4
max_steps: 2000
warmup_steps: 100
optim: paged_adamw_8bit
fp16: true
eval_strategy: steps
eval_steps: 250
save_strategy: steps
save_steps: 250
save_total_limit: 2
"""

LLAMAFACTORY_FULL = """
model_name_or_path: mistralai/Mistral-7B-Instruct-v0.3
stage: sft
do_train: true
finetuning_type: full
deepspeed: examples/deepspeed/ds_z3_offload_config.json
dataset: legacy_chats,qa
mix_strategy: interleave_over
interleave_probs: 0.75,0.25
template: mistral
cutoff_len: 2048
output_dir: saves/mistral/full
per_device_train_batch_size: 1
gradient_accumulation_steps: 2
learning_rate: 1.0e-5
num_train_epochs: 2.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
save_strategy: epoch
val_size: 0.05
eval_strategy: epoch
report_to: wandb
run_name: mistral-full
"""

CONFIGS = {
    ("axolotl", "lora"): AXOLOTL_LORA,
    ("axolotl", "qlora"): AXOLOTL_QLORA,
    ("axolotl", "full"): AXOLOTL_FULL,
    ("llamafactory", "lora"): LLAMAFACTORY_LORA,
    ("llamafactory", "qlora"): LLAMAFACTORY_QLORA,
    ("llamafactory", "full"): LLAMAFACTORY_FULL,
    **alignment.CONFIGS,
}
DATASET_INFO.update(alignment.DATASET_INFO)


def write_project(root: Path) -> Path:
    """The folder the tools ran in: a Git repository (so the specs may name its data) with the
    data files, LLaMA-Factory's data/dataset_info.json and axolotl's DeepSpeed config. The
    LLaMA-Factory ZeRO-3 offload config is left out on purpose: its name alone must do."""
    (root / ".git").mkdir(parents=True)
    data = root / "data"
    data.mkdir()
    (data / "support.jsonl").write_text(CHATS * 3)
    (data / "support.json").write_text(json.dumps([json.loads(CHATS)] * 3))
    (data / "chats-sharegpt.jsonl").write_text(SHAREGPT * 3)
    (data / "legacy.json").write_text(json.dumps([json.loads(SHAREGPT)] * 3))
    (data / "qa.jsonl").write_text(QA * 3)
    (data / "qa-holdout.jsonl").write_text(QA)
    (data / "dataset_info.json").write_text(json.dumps(DATASET_INFO, indent=2))
    (root / "deepspeed_configs").mkdir()
    (root / "deepspeed_configs" / "zero3_bf16.json").write_text(json.dumps(ZERO3))
    alignment.write_data(root)
    return root


def write_config(root: Path, tool: str, shape: str, extra: str = "") -> Path:
    path = root / "configs" / f"{tool}-{shape}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(CONFIGS[(tool, shape)]).lstrip() + extra)
    if shape == "grpo":
        alignment.write_rewards(root)
    return path


def config_keys(tool: str, shape: str, extra: str = "") -> list[str]:
    """Every leaf key of the config, and of the dataset_info.json entries it names, as paths:
    `lora_r`, `datasets[0].type`, `dataset_info.qa.columns.prompt`."""
    config = yaml.safe_load(textwrap.dedent(CONFIGS[(tool, shape)]) + extra)
    keys = leaves(config, "")
    if tool == "llamafactory":
        names = [
            n.strip()
            for group in ("dataset", "eval_dataset")
            for n in str(config.get(group) or "").split(",")
            if n.strip()
        ]
        keys += leaves({name: DATASET_INFO[name] for name in names}, "dataset_info")
    return keys


def leaves(data: Any, prefix: str) -> list[str]:
    out: list[str] = []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for key, value in items:
        path = f"{prefix}[{key}]" if isinstance(key, int) else (f"{prefix}.{key}" if prefix else str(key))
        nested = (isinstance(value, dict) and value) or (
            isinstance(value, list) and any(isinstance(v, dict) for v in value)
        )
        out += leaves(value, path) if nested else [path]
    return out
