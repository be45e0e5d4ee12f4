"""The axolotl keys tuneops does not translate, and why: those it leaves aside by design
(logging, outputs, the hub, caches, launch details) and those it has no equivalent for; and the
names of axolotl's values that map one to one."""

from __future__ import annotations

from reconciler.importers.fine_tune import METHODS

IGNORED = {
    **dict.fromkeys(
        ("output_dir",), "outputs go to tuneops' storage root; the model is registered in MLflow"
    ),
    **dict.fromkeys(
        (
            "wandb_project",
            "wandb_entity",
            "wandb_watch",
            "wandb_name",
            "wandb_run_id",
            "wandb_log_model",
            "wandb_mode",
            "use_wandb",
            "use_tensorboard",
            "comet_api_key",
            "comet_workspace",
            "comet_project_name",
            "comet_experiment_key",
            "comet_mode",
            "comet_online",
            "comet_experiment_config",
            "logging_steps",
            "include_tokens_per_second",
            "profiler_steps",
            "log_with",
            "use_mlflow",
            "mlflow_tracking_uri",
            "mlflow_experiment_name",
            "mlflow_run_name",
            "hf_mlflow_log_artifacts",
        ),
        "logging: tuneops logs every run to MLflow (tuneops.yaml mlflow.trackingUri, experiment)",
    ),
    **dict.fromkeys(
        (
            "hub_model_id",
            "hub_strategy",
            "hub_revision",
            "push_dataset_to_hub",
            "hf_use_auth_token",
            "push_to_hub",
            "hub_private_repo",
        ),
        "hub publishing: tuneops registers models in MLflow; a Deployment serves them",
    ),
    **dict.fromkeys(
        (
            "dataset_prepared_path",
            "dataset_processes",
            "dataset_keep_in_memory",
            "skip_prepare_dataset",
            "is_preprocess",
            "preprocess_iterable",
            "dataset_num_proc",
        ),
        "preprocessing cache: tuneops prepares each Dataset in its own job, cached by fingerprint",
    ),
    **dict.fromkeys(("strict", "debug", "axolotl_config_path"), "axolotl's own checks and debugging"),
    **dict.fromkeys(
        (
            "is_llama_derived_model",
            "is_mistral_derived_model",
            "is_qwen_derived_model",
            "is_falcon_derived_model",
            "model_type",
            "tokenizer_type",
            "tokenizer_use_fast",
            "tokenizer_legacy",
        ),
        "tuneops loads the model and tokenizer with transformers' Auto classes from its config",
    ),
    **dict.fromkeys(
        (
            "local_rank",
            "world_size",
            "ddp_timeout",
            "ddp_bucket_cap_mb",
            "ddp_broadcast_buffers",
            "ddp_find_unused_parameters",
            "ddp",
            "device",
            "device_map",
        ),
        "launcher settings: tuneops starts the processes (resources, distributed.strategy)",
    ),
    **dict.fromkeys(
        (
            "sample_packing_eff_est",
            "total_num_tokens",
            "total_supervised_tokens",
            "sample_packing_group_size",
            "sample_packing_bin_size",
            "sample_packing_sequentially",
            "multipack_real_batches",
        ),
        "packing internals: tuneops packs each micro-batch's rows into one sequence",
    ),
    "pad_to_sequence_len": "padding: tuneops pads each batch as needed (with packing, nothing is padded)",
    "save_safetensors": "tuneops always saves safetensors",
    "dataloader_pin_memory": "data loader tuning that tuneops sets itself",
    "dataloader_prefetch_factor": "data loader tuning that tuneops sets itself",
    "dataloader_drop_last": "data loader tuning that tuneops sets itself",
    "gc_steps": "memory housekeeping that tuneops does not expose",
    "low_cpu_mem_usage": "loading detail: tuneops loads weights as transformers does",
    "remove_unused_columns": "tuneops keeps the columns each method reads",
}

UNSUPPORTED = {
    "lora_fan_in_fan_out": "fan-in/fan-out LoRA (GPT-2 style Conv1D layers) is not offered",
    "peft_use_dora": "DoRA is not offered (adapter types: lora, qlora, none)",
    "peft_use_rslora": "rank-stabilised LoRA scaling is not offered (alpha / r is used)",
    "peft_layers_to_transform": "LoRA on a subset of layers is not offered",
    "lora_model_dir": "starting from an existing adapter folder is not offered: import its FineTune and "
    "use fromFineTune",
    "loraplus_lr_ratio": "LoRA+ learning rates are not offered",
    "loraplus_lr_embedding": "LoRA+ learning rates are not offered",
    "gptq": "GPTQ-quantized base models are not offered (bitsandbytes 4/8-bit are)",
    "neftune_noise_alpha": "NEFTune embedding noise is not offered",
    "torch_compile": "torch.compile is not offered",
    "torch_compile_backend": "torch.compile is not offered",
    "torch_compile_mode": "torch.compile is not offered",
    "unfrozen_parameters": "training a chosen subset of parameters is not offered (adapter or full)",
    "adam_beta1": "the optimizer's betas and epsilon are its defaults",
    "adam_beta2": "the optimizer's betas and epsilon are its defaults",
    "adam_epsilon": "the optimizer's betas and epsilon are its defaults",
    "optim_args": "optimizer arguments are not offered",
    "optim_target_modules": "optimizer target modules are not offered",
    "lr_scheduler_kwargs": "scheduler arguments are not offered (the schedule's defaults are used)",
    "cosine_min_lr_ratio": "a cosine floor is not offered (cosine decays to 0)",
    "cosine_constant_lr_ratio": "a constant phase in cosine is not offered",
    "lr_quadratic_warmup": "quadratic warmup is not offered (linear)",
    "lr_div_factor": "one-cycle schedules are not offered",
    "embedding_lr": "per-module learning rates are not offered",
    "embedding_lr_scale": "per-module learning rates are not offered",
    "lr_groups": "per-module learning rates are not offered",
    "eval_batch_size": "evaluation uses training.microBatchSize",
    "eval_sample_packing": "evaluation batches are not packed",
    "eval_max_new_tokens": "generation during training is not offered: put text metrics in an Evaluation",
    "do_causal_lm_eval": "generation during training is not offered: put text metrics in an Evaluation",
    "eval_causal_lm_metrics": "generation during training is not offered: put text metrics in an Evaluation",
    "eval_table_size": "prediction tables during training are not offered",
    "do_bench_eval": "benchmarks during training are not offered: use an Evaluation",
    "group_by_length": "length-grouped batches are not offered",
    "resume_from_checkpoint": "a fixed checkpoint path: tuneops resumes a restarted job from its own last "
    "checkpoint (checkpoint.resume: auto)",
    "default_system_message": "a default system message is not offered: put it in the data or the template",
    "flash_attn_cross_entropy": "flash-attn's fused kernels are not offered (kernels: liger is)",
    "flash_attn_rms_norm": "flash-attn's fused kernels are not offered (kernels: liger is)",
    "flash_attn_fuse_qkv": "flash-attn's fused kernels are not offered (kernels: liger is)",
    "flash_attn_fuse_mlp": "flash-attn's fused kernels are not offered (kernels: liger is)",
    "xformers_attention": "xformers attention is not offered (attention: sdpa, flash_attention_2, eager)",
    "s2_attention": "shifted-sparse attention is not offered",
    "flex_attention": "flex attention is not offered (attention: sdpa, flash_attention_2, eager)",
    "sequence_parallel_degree": "sequence parallelism is not offered",
    "pretraining_dataset": "streamed pretraining datasets are not offered: use a Dataset file with "
    "method pretrain",
    "fix_untrained_tokens": "re-initialising untrained tokens is not offered",
    "added_tokens_overrides": "overriding existing tokens is not offered (tokens.add adds new ones)",
    "resize_token_embeddings_to_32x": "padding the vocabulary is not offered",
    "mean_resizing_embeddings": "mean-initialised new embeddings are not offered",
    "shrink_embeddings": "shrinking embeddings is not offered",
    "max_memory": "per-device memory limits are not offered",
    "gpu_memory_limit": "per-device memory limits are not offered",
    "load_best_model_at_end": "keeping the best checkpoint is done by evaluation.earlyStopping",
    "metric_for_best_model": "early stopping watches evaluation.earlyStopping.metric (eval_loss by default)",
    "greater_is_better": "early stopping's direction is evaluation.earlyStopping.greaterIsBetter",
    "loss_watchdog_threshold": "a loss watchdog is not offered",
    "loss_watchdog_patience": "a loss watchdog is not offered",
    "save_only_model": "checkpoints hold what resuming needs",
    "auto_find_batch_size": "tuneops sizes batches before the job (`tuneops estimate`), not by trial",
    "accelerator_config": "accelerate settings are tuneops'",
    "chat_template_kwargs": "template arguments are not offered",
    "vllm": "the `axolotl vllm-serve` server's settings: tuneops generates with vLLM colocated in the "
    "training job (grpo.useVllm: true), with its own settings",
    "rpo_alpha": f"RPO (DPO with an added NLL loss) is not offered (methods: {METHODS})",
    "simpo_gamma": f"SimPO is not offered (methods: {METHODS})",
    "cpo_alpha": f"CPO is not offered (methods: {METHODS})",
    "dpo_use_weighting": "weighted DPO is not offered",
    "dpo_label_smoothing": "DPO label smoothing is not offered",
    "process_reward_model": "process (per-step) reward models are not offered: method reward trains an "
    "outcome reward model, one score per completion",
    "center_rewards_coefficient": "centring a reward model's scores is not offered",
    **dict.fromkeys(
        ("processor_type", "image_size", "image_resize_algorithm", "skip_prepare_dataset_mm"),
        "multimodal training is not offered (text models only)",
    ),
    **dict.fromkeys(
        (
            "unsloth_cross_entropy_loss",
            "unsloth_lora_mlp",
            "unsloth_lora_qkv",
            "unsloth_lora_o",
            "unsloth_rms_norm",
            "unsloth_rope",
            "lora_mlp_kernel",
            "lora_qkv_kernel",
            "lora_o_kernel",
        ),
        "Unsloth / LoRA kernels are not offered (kernels: liger is)",
    ),
    "relora_steps": "ReLoRA is not offered",
    "relora_warmup_steps": "ReLoRA is not offered",
    "relora_anneal_steps": "ReLoRA is not offered",
    "relora_cpu_offload": "ReLoRA is not offered",
    "fp8": "fp8 training is not offered (precision: bf16, fp16, fp32, auto)",
    "bfloat16": "pure (non-mixed) bf16 weights are not offered: precision is mixed",
    "float16": "pure (non-mixed) fp16 weights are not offered: precision is mixed",
    "float32": "precision: fp32 is tuneops' name for it when bf16 and fp16 are off",
}

LIGER_FLAGS = (
    "liger_rope",
    "liger_rms_norm",
    "liger_glu_activation",
    "liger_layer_norm",
    "liger_fused_linear_cross_entropy",
    "liger_cross_entropy",
    "liger_swiglu",
)
LIGER_PLUGIN = "axolotl.integrations.liger.LigerPlugin"
# DPO dataset types: the suffix after the template names the row's columns.
DPO_COLUMNS = {
    "intel": {"prompt": "question"},
    "icr": {"prompt": "input"},
    "prompt_pairs": {},
    "argilla": {"prompt": "instruction", "chosen": "chosen_response", "rejected": "rejected_response"},
}
# KTO dataset types (axolotl's prompt_strategies/kto): each reads a completion and a label column,
# and its prompt from the column named here (prompt when none is).
KTO_COLUMNS = {
    "intel": {"prompt": "question"},
    "prompt_pairs": {},
    "ultra": {},
    "argilla": {"prompt": "instruction"},
}
# A reward model's (Bradley-Terry) dataset type: system, input, chosen, rejected.
REWARD_MODEL_TYPES = {"bradley_terry.chat_template": {"prompt": "input"}}
DEFAULT_ROLES = {
    "user": ["human", "user"],
    "assistant": ["gpt", "assistant"],
    "system": ["system"],
    "tool": ["tool"],
}
ASSISTANT_ONLY = ({"assistant"}, {"gpt"}, {"assistant", "gpt"})
