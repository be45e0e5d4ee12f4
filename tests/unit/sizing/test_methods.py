"""What each training method adds per GPU (sizing/methods.py): trl's reference model, GRPO's
reward models and generation, ORPO's logits; and the compute each method adds. Every expected
figure is worked out here from the published parameter counts and the model shapes, not read
back from the planner. The activations of the preference methods are measured against real
training steps in tests/unit/sizing/test_method_activations.py."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.sizing import architectures
from reconciler.sizing.capacity import training_shape
from reconciler.sizing.estimates import FineTuneEstimate, RowCount, estimate_fine_tune
from reconciler.sizing.memory import Architecture, MethodShape, TrainingShape
from reconciler.sizing.methods import VLLM_GPU_MEMORY_UTILIZATION
from reconciler.sizing.report import estimate_json, estimate_text
from reconciler.sizing.strategy import estimate
from reconciler.specs.base import ResourceId
from reconciler.specs.finetune import FineTuneResource
from reconciler.specs.validate import validate_path
from tests.conftest import API, write_repo

GB = 1e9
# Llama 3 8B: 8,030,261,248 parameters (Meta's model card and config.json); grouped-query
# attention with 8 key-value heads of 128 dimensions.
LLAMA3_8B = Architecture.from_config({
    "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "intermediate_size": 14336, "vocab_size": 128256})
LLAMA3_8B_PARAMETERS = 8_030_261_248
# Llama 2 7B: 6,738,415,616 parameters. As LlamaForSequenceClassification (a reward model) its
# 32000 x 4096 LM head becomes a 4096 x 1 score: 6,607,347,712.
LLAMA2_7B_REWARD_MODEL = 6_738_415_616 - 32000 * 4096 + 4096
# Llama 3.2 1B: 1,235,814,400 parameters, its head tied to the embedding, which a reward model
# keeps: only the 2048 x 1 score is added.
LLAMA32_1B_REWARD_MODEL = 1_235_814_400 + 2048


def test_reference_model_is_free_under_an_adapter():
    for adapter in ("lora", "qlora"):
        shape = TrainingShape(LLAMA3_8B, adapter, devices=8, method=MethodShape("kto", reference_model=True))
        for strategy in ("ddp", "zero2", "zero3"):
            assert estimate(shape, strategy).method.reference == 0


def test_reference_model_of_a_full_fine_tune_is_a_frozen_copy_of_the_weights():
    kto = TrainingShape(LLAMA3_8B, "none", sequence_length=1024, devices=8,
                        method=MethodShape("kto", reference_model=True))
    sft = replace(kto, method=MethodShape("sft"))
    # DeepSpeed's engine casts trl's reference to bf16 and, under ZeRO-2, runs it whole on each GPU
    assert estimate(kto, "zero2").method.reference == 2 * LLAMA3_8B_PARAMETERS
    # frozen: no gradients or optimizer states, nothing else changes (KTO runs one row per example)
    assert estimate(kto, "zero2").states == estimate(sft, "zero2").states
    assert estimate(kto, "zero2").activations == estimate(sft, "zero2").activations
    assert estimate(kto, "zero2").peak - estimate(sft, "zero2").peak == 2 * LLAMA3_8B_PARAMETERS
    # outside DeepSpeed the runtime trains a full fine-tune's weights in fp32, and trl builds
    # the reference in the policy's dtype
    assert estimate(kto, "ddp").method.reference == 4 * LLAMA3_8B_PARAMETERS
    assert estimate(replace(kto, precision="fp32"), "zero2").method.reference == 4 * LLAMA3_8B_PARAMETERS


def test_zero3_shards_the_reference_model_and_offloads_it_with_the_parameters():
    kto = TrainingShape(LLAMA3_8B, "none", devices=8, method=MethodShape("kto", reference_model=True))
    sharded = estimate(kto, "zero3").method
    assert sharded.reference == 2 * LLAMA3_8B_PARAMETERS / 8 and sharded.cpu == 0
    for strategy in ("zero3-offload", "zero3-offload-parameters"):
        offloaded = estimate(kto, strategy).method
        assert offloaded.reference == 0 and offloaded.cpu == 2 * LLAMA3_8B_PARAMETERS / 8
    assert estimate(kto, "zero3-offload-optimizer").method.reference == 2 * LLAMA3_8B_PARAMETERS / 8


def test_orpo_holds_the_logits_of_both_answers():
    orpo = TrainingShape(LLAMA3_8B, "lora", sequence_length=2048, micro_batch=2, method=MethodShape("orpo"))
    found = estimate(orpo, "ddp")
    # chosen and rejected: 2 x 2 rows of 2048 tokens, 128256 fp32 logits each; and the fp32
    # log-softmax of the 2 chosen rows
    assert found.method.logits == (4 * 2048 * 128256 * 4) + (2 * 2048 * 128256 * 4)
    assert found.method.logits == pytest.approx(6.30e9, rel=1e-3)
    assert found.peak == found.states.total + found.activations + found.method.logits


def test_a_reward_model_trains_a_score_head_instead_of_the_lm_head():
    full = TrainingShape(LLAMA3_8B, "none", method=MethodShape("reward"))
    # the untied 128256 x 4096 LM head is replaced by a 4096 x 1 score
    assert full.parameters == full.trainable == LLAMA3_8B_PARAMETERS - 128256 * 4096 + 4096
    lora = replace(full, adapter="lora", rank=16)
    sft_lora = replace(lora, method=MethodShape("sft"))
    assert lora.trainable == sft_lora.trainable + 4096  # the score is trained beside the adapter
    # no logits over the vocabulary: the activations are those of an SFT step on twice the rows
    # without the fused head's per-token terms and its tile of logits
    sft_full = replace(full, method=MethodShape("sft"), micro_batch=2)
    assert estimate(full, "zero2").activations < estimate(sft_full, "zero2", 2).activations


# --- GRPO ------------------------------------------------------------------------------------


def grpo_shape(adapter: str = "lora", *, micro_batch: int = 4, accumulation: int = 2, prompt: int = 512,
               completion: int = 256, devices: int = 1, reference: bool = True,
               use_vllm: bool = False) -> TrainingShape:
    return TrainingShape(LLAMA3_8B, adapter, sequence_length=prompt + completion, micro_batch=micro_batch,
                         devices=devices, gradient_checkpointing=True, device_bytes=80 * GB,
                         method=MethodShape("grpo", reference_model=reference, completion_length=completion,
                                            generation_micro_batches=accumulation, use_vllm=use_vllm))


def test_grpo_generation_kv_cache_and_sampling_logits():
    found = estimate(grpo_shape(micro_batch=4, accumulation=2), "ddp").method
    # trl generates the micro-batches of an optimizer step at once: 4 x 2 completions, each a
    # prompt of 512 and a completion of 256 tokens; keys and values in 32 layers of 8 heads x
    # 128, bf16 (the LoRA base's dtype)
    assert found.kv_cache == 2 * 32 * (4 * 2) * (512 + 256) * (8 * 128) * 2
    assert found.kv_cache == pytest.approx(0.805e9, rel=1e-3)
    # per decoding step, the last position's 128256 logits of each of the 8 sequences, in bf16
    # and as three fp32 tensors
    assert found.sampling_logits == 8 * 128256 * (2 + 3 * 4)
    assert found.gathered_for_generation == 0 and found.vllm == 0


def test_grpo_memory_grows_with_the_generation_batch_and_the_completion_length():
    def kv_cache(**changes):
        return estimate(grpo_shape(**changes), "ddp").method.kv_cache

    base = kv_cache()
    assert kv_cache(micro_batch=8) == 2 * base
    assert kv_cache(accumulation=4) == 2 * base
    # 512 + 768 tokens instead of 512 + 256
    assert kv_cache(completion=768) == base * (512 + 768) / (512 + 256)
    short, long = (estimate(grpo_shape(completion=n), "ddp") for n in (256, 1024))
    assert long.activations > short.activations and long.peak > short.peak
    assert estimate(grpo_shape(micro_batch=8), "ddp").peak > estimate(grpo_shape(), "ddp").peak


def test_zero3_gathers_the_whole_policy_to_generate():
    full = grpo_shape("none", devices=8)
    found = estimate(full, "zero3")
    # DeepSpeed ZeRO-3 gathers every 16-bit weight for generate; each GPU already holds 1/8
    assert found.method.gathered_for_generation == 2 * LLAMA3_8B_PARAMETERS * (1 - 1 / 8)
    # the reference model is sharded like the policy, and kept through the step
    assert found.method.reference == 2 * LLAMA3_8B_PARAMETERS / 8
    assert found.peak == found.states.total + found.method.reference + found.method.generation
    assert estimate(full, "zero3-offload").method.gathered_for_generation == 2 * LLAMA3_8B_PARAMETERS
    assert estimate(full, "zero2").method.gathered_for_generation == 0


def test_grpo_without_kl_penalty_loads_no_reference_model():
    with_kl, without = (estimate(grpo_shape("none", devices=8, reference=r), "zero2") for r in (True, False))
    assert with_kl.method.reference == 2 * LLAMA3_8B_PARAMETERS and without.method.reference == 0


def test_vllm_takes_its_share_of_the_gpu_and_does_the_generating():
    found = estimate(grpo_shape(use_vllm=True), "ddp").method
    assert found.vllm == 0.3 * 80 * GB
    assert found.kv_cache == found.sampling_logits == found.generation == 0


def test_the_vllm_share_is_trls_default():
    trl = pytest.importorskip("trl", reason="needs the [train] extra")
    import dataclasses

    default = {f.name: f.default for f in dataclasses.fields(trl.GRPOConfig)}["vllm_gpu_memory_utilization"]
    assert default == VLLM_GPU_MEMORY_UTILIZATION


# --- From the spec ---------------------------------------------------------------------------


def architecture_block(hidden: int, layers: int, heads: int, kv_heads: int, ff: int, vocab: int,
                       tied: bool = False) -> str:
    return (f"{{hiddenSize: {hidden}, numLayers: {layers}, numAttentionHeads: {heads}, "
            f"numKeyValueHeads: {kv_heads}, intermediateSize: {ff}, vocabSize: {vocab}, "
            f"tieWordEmbeddings: {str(tied).lower()}}}")


def base_model(name: str, architecture: str | None) -> str:
    block = f"\n  architecture: {architecture}" if architecture else ""
    return f"{API}\nkind: BaseModel\nmetadata: {{name: {name}}}\nspec:\n  source: file://models/{name}{block}\n"


def fine_tune(name: str, body: str) -> str:
    return (f"{API}\nkind: FineTune\nmetadata: {{name: {name}}}\nspec:\n"
            + textwrap.indent(textwrap.dedent(body).strip(), "  ") + "\n")


def dataset(name: str, schema: str) -> str:
    return (f"{API}\nkind: Dataset\nmetadata: {{name: {name}}}\nspec:\n  source: file://data/{name}.jsonl\n"
            f"  schema: {{type: {schema}}}\n")


def project(tmp_path: Path, policy: str, extra: dict[str, str] | None = None) -> Path:
    """A policy FineTune on Llama 3 8B, and reward models: rm-7b on Llama 2 7B, rm-1b trained
    from an SFT FineTune of Llama 3.2 1B (the chain the planner follows to its architecture)."""
    files = {
        "llama3.yaml": base_model("llama3", architecture_block(4096, 32, 32, 8, 14336, 128256)),
        "llama2.yaml": base_model("llama2", architecture_block(4096, 32, 32, 32, 11008, 32000)),
        "llama32.yaml": base_model("llama32", architecture_block(2048, 16, 32, 8, 8192, 128256, tied=True)),
        "prompts.yaml": dataset("prompts", "prompt"),
        "pairs.yaml": dataset("pairs", "preference"),
        "chats.yaml": dataset("chats", "chat"),
        "feedback.yaml": dataset("feedback", "binary-feedback"),
        "data/prompts.jsonl": '{"prompt": "2 + 2?", "reference": "4"}\n',
        "data/pairs.jsonl": '{"prompt": "hi", "chosen": "hello", "rejected": "go away"}\n',
        "data/chats.jsonl": '{"messages": [{"role": "user", "content": "hi"}]}\n',
        "data/feedback.jsonl": '{"prompt": "hi", "completion": "hello", "label": "true"}\n',
        "rm-7b.yaml": fine_tune("rm-7b", "baseModel: llama2\nmethod: reward\ndatasets: [{name: pairs}]"),
        # a reward model starts from a base model or a full fine-tune
        "sft-1b.yaml": fine_tune("sft-1b",
                                 "baseModel: llama32\ndatasets: [{name: chats}]\nadapter: {type: none}"),
        "rm-1b.yaml": fine_tune("rm-1b", "fromFineTune: sft-1b\nmethod: reward\ndatasets: [{name: pairs}]"),
        "policy.yaml": fine_tune("policy", policy),
        **(extra or {}),
    }
    return write_repo(tmp_path / "specs", files)


def estimate_of(repo: Path, name: str = "policy", rows: int | None = None) -> FineTuneEstimate:
    result = validate_path(repo)
    assert result.valid, [p.text() for p in result.problems]
    resource = result.specs.resource(ResourceId("FineTune", name), FineTuneResource)
    counts = {d.name: RowCount(rows, "test") for d in resource.spec.datasets} if rows else {}
    return estimate_fine_tune(result.specs, resource, architectures.architectures(result.specs), counts)


GRPO = """
    baseModel: llama3
    method: grpo
    datasets: [{name: prompts}]
    rewards:
      - rewardModel: {fineTune: rm-7b}
      - rewardModel: {fineTune: rm-1b}
      - {rewardModel: {fineTune: rm-7b}, weight: 0.5}
      - builtin: format_json
    grpo: {numGenerations: 8, maxCompletionLength: 256}
    adapter: {type: none}
    training: {microBatchSize: 4, gradientAccumulation: 2, maxSeqLength: 512, maxSteps: 10,
               gradientCheckpointing: true}
    distributed: {strategy: STRATEGY}
    resources: {gpusPerNode: 8, gpuProduct: NVIDIA-H100-80GB-HBM3}
    """


def test_each_reward_model_is_counted_once_with_its_fine_tunes_architecture(tmp_path):
    found = estimate_of(project(tmp_path / "a", GRPO.replace("STRATEGY", "zero2")))
    # rm-7b named twice, counted once; rm-1b found through sft-1b's base model; bf16
    both = LLAMA2_7B_REWARD_MODEL + LLAMA32_1B_REWARD_MODEL
    assert found.memory.method.reward_models == 2 * both
    assert not found.unknown_reward_models and not found.notes
    # the runtime moves each whole onto every GPU, whatever the strategy: ZeRO-3 shards only
    # what DeepSpeed was given (the policy and trl's reference)
    zero3 = estimate_of(project(tmp_path / "b", GRPO.replace("STRATEGY", "zero3")))
    assert zero3.memory.method.reward_models == 2 * both
    assert zero3.memory.method.reference == 2 * LLAMA3_8B_PARAMETERS / 8


def test_a_grpo_estimate_shows_the_reference_model_and_the_generation(tmp_path):
    found = estimate_of(project(tmp_path, GRPO.replace("STRATEGY", "zero3")))
    memory = found.memory
    # full fine-tuning: the reference is a bf16 copy, sharded over the 8 GPUs
    assert memory.method.reference == 2 * LLAMA3_8B_PARAMETERS / 8
    # generate keeps 4 x 2 sequences of 512 + 256 tokens in the cache
    assert memory.method.kv_cache == 2 * 32 * 8 * 768 * 1024 * 2
    text = estimate_text(found)
    for row in ("reference model", "reward models", "generation KV cache", "sampling logits",
                "gathered for generation (ZeRO-3)"):
        assert f"  {row}" in text, row
    # gathering 16 GB of weights for generate outweighs the checkpointed activations
    assert "(while generating)" in text
    data = estimate_json(found)["memory"]
    states = sum(data[key] for key in ("parameters_bytes", "frozen_bytes", "gradients_bytes",
                                       "optimizer_bytes", "gathered_bytes"))
    held = data["reference_model_bytes"] + data["reward_models_bytes"] + data["vllm_bytes"]
    generation = (data["generation_kv_cache_bytes"] + data["sampling_logits_bytes"]
                  + data["gathered_for_generation_bytes"])
    assert data["peak_bytes"] == pytest.approx(states + held + generation)


def test_the_training_sequences_of_grpo_are_prompt_and_completion(tmp_path):
    repo = project(tmp_path, GRPO.replace("STRATEGY", "zero2"))
    specs = validate_path(repo).specs
    resource = specs.resource(ResourceId("FineTune", "policy"), FineTuneResource)
    shape = training_shape(resource, LLAMA3_8B)
    assert shape.sequence_length == 512 + 256
    assert shape.method.generation_micro_batches == 2 and shape.method.reference_model


def test_an_unknown_reward_model_architecture_is_said_not_guessed(tmp_path):
    policy = GRPO.replace("STRATEGY", "zero2").replace("rm-1b", "rm-mystery")
    repo = project(tmp_path, policy, {
        "mystery.yaml": base_model("mystery", None),
        "rm-mystery.yaml": fine_tune("rm-mystery",
                                     "baseModel: mystery\nmethod: reward\ndatasets: [{name: pairs}]"),
    })
    found = estimate_of(repo)
    assert found.unknown_reward_models == ("rm-mystery",)
    assert found.memory.method.reward_models == 2 * LLAMA2_7B_REWARD_MODEL
    assert any("reward model FineTune/rm-mystery unknown" in note for note in found.notes)
    assert found.fits is not True  # it cannot be said to fit
    assert "not counted: rm-mystery" in estimate_text(found)


def test_a_grpo_workload_trains_num_generations_completions_per_prompt(tmp_path):
    policy = GRPO.replace("STRATEGY", "zero2").replace("maxSteps: 10,", "epochs: 2,")
    found = estimate_of(project(tmp_path, policy), rows=100)
    work = found.workload
    assert work.global_batch == 4 * 2 * 8
    assert work.sequences == 2 * 100 * 8  # epochs x prompts x completions
    assert work.steps == 2 * 13  # ceil(800 completions / 64) per epoch
    assert work.tokens == work.sequences * (512 + 256)
    # training 6 and 2 more to recompute the checkpointed activations, generating 2 (a forward
    # over prompt and completion), the reference 2
    assert found.flops == 12 * LLAMA3_8B_PARAMETERS * work.tokens
    # the group size changes the work, not the memory per GPU: trl's micro-batch counts completions
    fewer = estimate_of(project(tmp_path / "four", policy.replace("numGenerations: 8", "numGenerations: 4")),
                        rows=100)
    assert fewer.workload.sequences == work.sequences / 2
    assert fewer.memory.peak == found.memory.peak


def test_compute_of_each_method(tmp_path):
    def flops_per_token(method: str, dataset_name: str, extra: str = "") -> float:
        body = (f"baseModel: llama3\nmethod: {method}\ndatasets: [{{name: {dataset_name}}}]\n"
                f"training: {{maxSteps: 10, microBatchSize: 4, maxSeqLength: 512}}\n"
                f"resources: {{gpusPerNode: 1, gpuProduct: NVIDIA-H100-80GB-HBM3}}\n{extra}")
        found = estimate_of(project(tmp_path / f"{method}{len(extra)}", body))
        return found.flops / (found.parameters * found.workload.tokens)

    assert flops_per_token("sft", "chats") == 6
    assert flops_per_token("dpo", "pairs") == 6 + 2  # the reference's forward
    assert flops_per_token("orpo", "pairs") == 6  # no reference model
    assert flops_per_token("reward", "pairs") == 6
    # kto: the reference's forward, and the KL term's forwards of the policy and the reference
    assert flops_per_token("kto", "feedback") == 6 + 2 + 2 + 2
    grpo = "rewards: [{builtin: format_json}]\ngrpo: {numGenerations: 4"
    assert flops_per_token("grpo", "prompts", grpo + "}") == 6 + 2 + 2  # generation, reference
    assert flops_per_token("grpo", "prompts", grpo + ", beta: 0}") == 6 + 2
    # vLLM: trl recomputes the policy's log-probabilities for importance sampling
    assert flops_per_token("grpo", "prompts", grpo + ", useVllm: true}") == 6 + 2 + 2 + 2


def test_a_reward_fine_tune_counts_its_score_head(tmp_path):
    found = estimate_of(project(tmp_path, "baseModel: llama2\nmethod: reward\ndatasets: [{name: pairs}]\n"
                                          "adapter: {type: none}\n"
                                          "resources: {gpusPerNode: 1, gpuProduct: NVIDIA-H100-80GB-HBM3}"))
    assert found.parameters == found.trainable == LLAMA2_7B_REWARD_MODEL
    assert "reference model" not in estimate_text(found)
