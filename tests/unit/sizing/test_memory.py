"""The planner against published figures: the ZeRO paper's Table 1, the LoRA paper's GPT-3
count, Llama-2-7B's parameter count; and the behaviour of the automatic strategy choice."""

from __future__ import annotations

import pytest

from reconciler.sizing.activations import activation_bytes
from reconciler.sizing.memory import (
    Architecture,
    TrainingShape,
    lora_parameters,
    model_states,
    zero_paper_rounding,
)
from reconciler.sizing.strategy import choose_strategy, estimate, largest_micro_batch

GB = 1e9  # the ZeRO paper's GB

# Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
# Table 1: per-device memory (GB) of model states for P_os, P_os+g and P_os+g+p.
ZERO_TABLE_1 = {
    7.5e9: {1: ("120", "120", "120"), 4: ("52.5", "41.3", "30"), 16: ("35.6", "21.6", "7.5"),
            64: ("31.4", "16.6", "1.88"), 256: ("30.4", "15.4", "0.47"), 1024: ("30.1", "15.1", "0.12")},
    128e9: {1: ("2048", "2048", "2048"), 4: ("896", "704", "512"), 16: ("608", "368", "128"),
            64: ("536", "284", "32"), 256: ("518", "263", "8"), 1024: ("513", "257", "2")},
    1e12: {1: ("16000", "16000", "16000"), 4: ("7000", "5500", "4000"), 16: ("4750", "2875", "1000"),
           64: ("4187", "2218", "250"), 256: ("4046", "2054", "62.5"), 1024: ("4011", "2013", "15.6")},
}
CASES = [(psi, n, row) for psi, rows in ZERO_TABLE_1.items() for n, row in rows.items()]


@pytest.mark.parametrize("psi, devices, expected", CASES,
                         ids=[f"{psi:.3g}-N{n}" for psi, n, _ in CASES])
def test_zero_paper_table_1(psi: float, devices: int, expected: tuple[str, str, str]):
    stages = ("zero1", "zero2", "zero3")
    got = tuple(zero_paper_rounding(model_states(psi, stage, devices).total / GB) for stage in stages)
    assert got == expected


def test_ddp_holds_everything_on_every_device():
    assert model_states(1e9, "ddp", 64).total == 16e9


# GPT-3 175B (Brown et al. 2020): 96 layers, d_model 12288, 96 heads, vocabulary 50257.
GPT3 = Architecture(hidden_size=12288, num_layers=96, num_attention_heads=96,
                    intermediate_size=4 * 12288, vocab_size=50257)


def test_lora_paper_gpt3_trainable_parameters():
    # Hu et al. 2021, Table 4: r = 4 on W_q and W_v gives 18.9M trainable parameters.
    count = lora_parameters(GPT3, 4, ("q_proj", "v_proj"))
    assert count == 18_874_368
    assert round(count / 1e6, 1) == 18.9


LLAMA2_7B = Architecture.from_config({
    "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000,
    "tie_word_embeddings": False,
})


def test_llama2_7b_parameter_count_matches_the_published_model():
    assert LLAMA2_7B.parameters == 6_738_415_616


def test_grouped_query_attention_shrinks_k_and_v():
    gqa = Architecture(hidden_size=4096, num_layers=1, num_attention_heads=32, intermediate_size=14336,
                       vocab_size=128256, num_key_value_heads=8)
    assert gqa.linear_shapes()["k_proj"] == (4096, 1024)
    assert lora_parameters(gqa, 8, ("k_proj",)) == 8 * (4096 + 1024)


def test_unknown_target_modules_are_refused():
    with pytest.raises(ValueError, match="lm_head"):
        lora_parameters(LLAMA2_7B, 8, ("q_proj", "lm_head"))


def test_activations_follow_korthikanti():
    s, b = 2048, 1
    h, a, layers, vocab = 4096, 32, 32, 32000
    full = activation_bytes(LLAMA2_7B, s, b)
    assert full == layers * s * b * h * (34 + 5 * a * s / h) + 4 * s * b * vocab
    recomputed = activation_bytes(LLAMA2_7B, s, b, recompute=True)
    assert recomputed == layers * 2 * s * b * h + 4 * s * b * vocab
    assert activation_bytes(LLAMA2_7B, s, 4) == 4 * full


def test_lora_is_far_smaller_than_full_fine_tuning_and_qlora_smaller_still():
    full = estimate(TrainingShape(LLAMA2_7B, "none"), "ddp").states.total
    lora = estimate(TrainingShape(LLAMA2_7B, "lora"), "ddp").states.total
    qlora = estimate(TrainingShape(LLAMA2_7B, "qlora"), "ddp").states.total
    assert full == 16 * LLAMA2_7B.parameters
    assert qlora < lora < full / 7
    # LoRA: the frozen 16-bit base, plus 16 bytes per adapter parameter (2 + 2 + K).
    adapter = lora_parameters(LLAMA2_7B, 16)
    assert lora == 2 * LLAMA2_7B.parameters + 16 * adapter
    # QLoRA: block linears in 4-bit NF4 plus double-quantized constants (Dettmers et al. 2023).
    other = LLAMA2_7B.parameters - LLAMA2_7B.linear_parameters
    bits = 4 + 8 / 64 + 32 / (64 * 256)  # NF4, 8-bit absmax per 64, fp32 per 256 absmax blocks
    assert qlora == pytest.approx(LLAMA2_7B.linear_parameters * bits / 8 + 2 * other + 16 * adapter)


def test_auto_picks_the_cheapest_strategy_that_fits():
    small = TrainingShape(LLAMA2_7B, "lora", sequence_length=1024, micro_batch=8,
                          gradient_checkpointing=True)
    chosen = choose_strategy(small, 80 * GB)
    assert chosen is not None and chosen.strategy == "ddp"
    full = TrainingShape(LLAMA2_7B, "none", sequence_length=1024, micro_batch=8, devices=8,
                         gradient_checkpointing=True)
    chosen = choose_strategy(full, 80 * GB)
    assert chosen is not None and chosen.strategy == "zero2"  # 108 GB of DDP states do not fit
    assert choose_strategy(TrainingShape(LLAMA2_7B, "none"), 8 * GB) is None


def test_largest_micro_batch_fits_and_the_next_does_not():
    shape = TrainingShape(LLAMA2_7B, "lora", sequence_length=4096, micro_batch=64,
                          gradient_checkpointing=True)
    best = largest_micro_batch(shape, "ddp", 80 * GB)
    assert best is not None and best.fits(80 * GB)
    assert 1 < best.micro_batch < 64
    assert not estimate(shape, "ddp", best.micro_batch * 2).fits(80 * GB)
    without_recompute = TrainingShape(LLAMA2_7B, "lora", sequence_length=16384, micro_batch=64)
    assert largest_micro_batch(without_recompute, "ddp", 80 * GB) is None  # ~143 GB per sequence


def test_offload_moves_optimizer_and_parameters_to_cpu():
    states = model_states(7e9, "zero3-offload", 8)
    assert states.optimizer == 0 and states.parameters == 0
    assert states.cpu == pytest.approx(14 * 7e9 / 8)
    assert states.total < model_states(7e9, "zero3", 8).total


def test_the_optimizer_step_buffer_counts_only_when_it_outgrows_the_activations():
    """adamw_torch's multi-tensor step makes an fp32 temporary of 4 bytes per trained parameter
    after the activations are freed; the fused kernel and DeepSpeed's optimizers make none."""
    from dataclasses import replace

    small = Architecture(hidden_size=2048, num_layers=16, num_attention_heads=16,
                         intermediate_size=5632, vocab_size=32000)
    shape = TrainingShape(small, "none", sequence_length=512, gradient_checkpointing=True)
    found = estimate(shape, "ddp")
    assert found.optimizer_step == 4 * small.parameters > found.activations
    assert found.peak == found.states.total + found.optimizer_step
    fused = estimate(replace(shape, optimizer="adamw_torch_fused"), "ddp")
    assert fused.optimizer_step == 0 and fused.peak == fused.states.total + fused.activations
    assert estimate(shape, "zero2").optimizer_step == 0
    long = estimate(replace(shape, sequence_length=8192, gradient_checkpointing=False), "ddp")
    assert long.activations > long.optimizer_step and long.peak == long.states.total + long.activations


def test_liger_kernels_keep_less_per_layer() -> None:
    """Liger's SwiGLU keeps the gate and up outputs and recomputes the SiLU (4f, not 6f); its
    RMSNorm keeps its 16-bit input where transformers' keeps an fp32 copy (2h, not 4h). Counted
    from Liger's kernels (ops/swiglu.py, ops/rms_norm.py save_for_backward); they run on CUDA only,
    so this is arithmetic, not a measurement."""
    from dataclasses import replace

    from reconciler.sizing.activations import kept_activation_bytes

    llama = Architecture.from_config({
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "intermediate_size": 14336, "vocab_size": 128256})
    plain = TrainingShape(llama, "lora", sequence_length=2048, micro_batch=2)
    liger = replace(plain, kernels="liger")
    tokens = 2048 * 2
    saved = kept_activation_bytes(plain, 2) - kept_activation_bytes(liger, 2)
    assert saved == pytest.approx(32 * tokens * (2 * 2 * 4096 + 2 * 14336))
    full = replace(plain, adapter="none")
    assert kept_activation_bytes(full, 2) > kept_activation_bytes(replace(full, kernels="liger"), 2)
