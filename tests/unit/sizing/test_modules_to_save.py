"""adapter.modulesToSave is trained in full beside the adapter, and a BaseModel's `tokens.add`
grows the vocabulary the embedding and head hold: the planner counts both."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.sizing import architectures
from reconciler.sizing.estimates import estimate_fine_tune
from reconciler.sizing.memory import (
    Architecture,
    TrainingShape,
    lora_parameters,
    saved_module_parameters,
)
from reconciler.specs.base import ResourceId
from reconciler.specs.finetune import FineTuneResource
from reconciler.specs.validate import validate_path
from tests.conftest import VALID_SPECS, write_repo

LLAMA2_7B = Architecture(hidden_size=4096, num_layers=32, num_attention_heads=32, intermediate_size=11008,
                         vocab_size=32000)
# Qwen2.5-0.5B's shape: its output head is tied to the embeddings.
QWEN2_5_0_5B = Architecture(hidden_size=896, num_layers=24, num_attention_heads=14, intermediate_size=4864,
                            vocab_size=151936, num_key_value_heads=2, tie_word_embeddings=True)


def test_embedding_and_head_count_vocab_times_hidden_each():
    shape = TrainingShape(LLAMA2_7B, "lora", rank=8, target_modules=("q_proj", "v_proj"),
                          modules_to_save=("embed_tokens", "lm_head"))
    assert lora_parameters(LLAMA2_7B, 8, ("q_proj", "v_proj")) == 32 * 8 * (4096 + 4096) * 2 == 4_194_304
    assert shape.trainable == 4_194_304 + 2 * 32000 * 4096 == 266_338_304


def test_a_tied_head_counts_once():
    assert saved_module_parameters(QWEN2_5_0_5B, ("embed_tokens", "lm_head")) == 151936 * 896 == 136_134_656
    assert saved_module_parameters(QWEN2_5_0_5B, ("lm_head",)) == 136_134_656


def test_dotted_paths_and_block_linears():
    assert saved_module_parameters(LLAMA2_7B, ("model.embed_tokens", "q_proj")) == (
        32000 * 4096 + 32 * 4096 * 4096)


def test_nothing_saved_adds_nothing_and_full_fine_tuning_is_unchanged():
    assert TrainingShape(LLAMA2_7B, "lora", rank=8).trainable == lora_parameters(LLAMA2_7B, 8)
    full = TrainingShape(LLAMA2_7B, "none", modules_to_save=("lm_head",))
    assert full.trainable == LLAMA2_7B.parameters == 6_738_415_616


def test_unknown_modules_to_save_are_refused():
    with pytest.raises(ValueError, match="unknown modules to save for this architecture: rotary"):
        saved_module_parameters(LLAMA2_7B, ("lm_head", "rotary"))


def test_added_tokens_grow_the_vocabulary_the_planner_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    base = textwrap.dedent(VALID_SPECS["base-model.yaml"]).lstrip("\n") + textwrap.indent(textwrap.dedent("""\
        tokens: {pad: '<|pad|>', add: ['<tool_call>', '</tool_call>']}
        architecture:
          hiddenSize: 4096
          numLayers: 32
          numAttentionHeads: 32
          intermediateSize: 11008
          vocabSize: 32000
        """), "  ")
    fine_tune = textwrap.dedent(VALID_SPECS["fine-tune.yaml"]).lstrip("\n").replace(
        "    r: 8", "    r: 8\n    targetModules: [q_proj, v_proj]\n"
                   "    modulesToSave: [embed_tokens, lm_head]")
    result = validate_path(write_repo(tmp_path / "specs", {**VALID_SPECS, "base-model.yaml": base,
                                                           "fine-tune.yaml": fine_tune}))
    assert result.valid, [p.text() for p in result.problems]
    found = architectures.architectures(result.specs)
    assert found[ResourceId("BaseModel", "tiny")].vocab_size == 32002  # the pad token may exist: not counted
    resource = result.specs.resource(ResourceId("FineTune", "sft"), FineTuneResource)
    assert resource is not None
    estimate = estimate_fine_tune(result.specs, resource, found, {})
    assert estimate.trainable == 4_194_304 + 2 * 32002 * 4096
    assert estimate.parameters == 6_738_415_616 + 2 * 2 * 4096
