"""What a FineTune will cost (issue 7): tokens, FLOPs and GPU-hours from the spec, checked
against the GPU-hours Meta published for Llama 2, and the training rows they start from."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import pytest

from reconciler.config import PlannerSettings
from reconciler.fingerprint import fingerprint_inputs
from reconciler.graph import DependencyGraph
from reconciler.sizing import architectures
from reconciler.sizing.dataset_rows import count_file_rows, train_rows
from reconciler.sizing.estimates import FineTuneEstimate, RowCount, estimate_fine_tune
from reconciler.sizing.report import estimate_json, estimate_text, plan_line
from reconciler.sizing.throughput import assumed_mfu, flops_per_parameter_token, peak_flops
from reconciler.specs.base import ResourceId
from reconciler.specs.finetune import FineTuneResource
from reconciler.specs.validate import validate_path
from reconciler.state import ActualState, BackendState, BuiltRun
from tests.conftest import VALID_SPECS, write_repo


def architecture_block(hidden: int, layers: int, heads: int, kv_heads: int, ff: int, vocab: int) -> str:
    return textwrap.indent(textwrap.dedent(f"""
        architecture:
          hiddenSize: {hidden}
          numLayers: {layers}
          numAttentionHeads: {heads}
          numKeyValueHeads: {kv_heads}
          intermediateSize: {ff}
          vocabSize: {vocab}
        """).strip(), "  ") + "\n"


def repo_with(tmp_path: Path, fine_tune_spec: str, base_extra: str = "", files: dict | None = None,
              schema_type: str = "chat") -> Path:
    base = textwrap.dedent(VALID_SPECS["base-model.yaml"]).lstrip("\n") + base_extra
    dataset = VALID_SPECS["dataset.yaml"].replace("type: chat", f"type: {schema_type}")
    fine_tune = textwrap.dedent(VALID_SPECS["fine-tune.yaml"]).lstrip("\n").split("  adapter:")[0]
    fine_tune += textwrap.indent(textwrap.dedent(fine_tune_spec).strip(), "  ") + "\n"
    files = {"base-model.yaml": base, "dataset.yaml": dataset, "fine-tune.yaml": fine_tune,
             "data/chats.jsonl": VALID_SPECS["data/chats.jsonl"], **(files or {})}
    return write_repo(tmp_path / "specs", files)


def estimate_of(repo: Path, rows: Mapping[str, RowCount] | None = None,
                settings: PlannerSettings | None = None) -> FineTuneEstimate:
    result = validate_path(repo)
    assert result.valid, [p.text() for p in result.problems]
    resource = result.specs.resource(ResourceId("FineTune", "sft"), FineTuneResource)
    rows = train_rows(result.specs) if rows is None else rows
    known = architectures.architectures(result.specs)
    return estimate_fine_tune(result.specs, resource, known, rows, settings)


# Llama 2 (Touvron et al., 2023, Table 2): pre-training on 2.0T tokens, GPU-hours on A100-80GB.
LLAMA2 = {
    "7b": ((4096, 32, 32, 32, 11008, 32000), 184_320),
    "13b": ((5120, 40, 40, 40, 13824, 32000), 368_640),
    "70b": ((8192, 80, 64, 8, 28672, 32000), 1_720_320),
}


@pytest.mark.parametrize("size", LLAMA2)
def test_gpu_hours_of_llama2_pretraining_are_within_10_percent_of_the_published_figures(tmp_path, size):
    """6 FLOPs per parameter per token at the A100's assumed MFU of 0.4 and its 312 TFLOPS
    dense bf16 peak: 7B 180k against 184k published, 13B 348k against 369k, 70B 1.84M against
    1.72M (Meta's own MFU was about 0.39, 0.38 and 0.43)."""
    shape, published = LLAMA2[size]
    # 2.0T tokens: 476,837 steps of 1,024 sequences of 4,096 tokens (Llama 2's 4M-token batches)
    repo = repo_with(tmp_path, """
        method: pretrain
        adapter: {type: none}
        training: {maxSteps: 476837, microBatchSize: 1, gradientAccumulation: 2, maxSeqLength: 4096}
        distributed: {strategy: zero3}
        resources: {nodes: 64, gpusPerNode: 8, gpuProduct: NVIDIA-A100-SXM4-80GB}
        """, architecture_block(*shape), schema_type="text")
    found = estimate_of(repo)
    assert found.workload.tokens == pytest.approx(2.0e12, rel=1e-3)
    assert found.flops == 6 * found.parameters * found.workload.tokens
    assert found.mfu == 0.4 and found.peak_flops == 312e12
    assert found.gpu_hours == pytest.approx(published, rel=0.10)
    assert found.wall_hours == pytest.approx(found.gpu_hours / 512)


def test_flops_per_token_count_recomputation_and_dpos_reference_model():
    assert flops_per_parameter_token("sft", recompute=False) == 6
    assert flops_per_parameter_token("sft", recompute=True) == 8
    assert flops_per_parameter_token("dpo", recompute=False) == 8
    assert flops_per_parameter_token("dpo", recompute=True) == 10


def test_peak_and_mfu_come_from_the_product_label_and_can_be_overridden():
    assert peak_flops("NVIDIA-H100-80GB-HBM3") == 989e12
    assert peak_flops("NVIDIA-H100-PCIe") == 756e12
    assert peak_flops("NVIDIA-L40S") == 362e12 and peak_flops("NVIDIA-L4") == 121e12
    assert peak_flops("NVIDIA-A10G") is None  # not in the table: "A10" must not match it
    assert peak_flops("NVIDIA-A10G", {"NVIDIA-A10G": 70}) == 70e12
    assert assumed_mfu("NVIDIA-A100-SXM4-40GB") == 0.4
    assert assumed_mfu("NVIDIA-H100-80GB-HBM3") == 0.35
    assert assumed_mfu("NVIDIA-H100-80GB-HBM3", {"NVIDIA-H100-80GB-HBM3": 0.5}) == 0.5


def test_epochs_train_on_the_rows_of_every_dataset_and_dpo_counts_both_answers(tmp_path):
    repo = repo_with(tmp_path, """
        method: dpo
        training: {epochs: 2, microBatchSize: 4, gradientAccumulation: 2, maxSeqLength: 512}
        resources: {gpusPerNode: 2, gpuProduct: NVIDIA-H100-80GB-HBM3}
        """, architecture_block(4096, 32, 32, 8, 14336, 128256), schema_type="preference")
    found = estimate_of(repo, rows={"chats": RowCount(1000, "test")})
    work = found.workload
    assert work.global_batch == 16
    assert work.steps == 2 * 63  # ceil(1000 / 16) per epoch
    assert work.sequences == 2 * 1000 * 2  # epochs x rows x (chosen, rejected)
    assert work.tokens == work.sequences * 512
    assert found.flops == 8 * found.parameters * work.tokens  # and the reference model's forward
    hours = found.gpu_hours
    doubled = estimate_of(repo, rows={"chats": RowCount(2000, "test")})
    assert doubled.gpu_hours == pytest.approx(2 * hours)
    faster = estimate_of(repo, rows={"chats": RowCount(1000, "test")},
                         settings=PlannerSettings(mfu={"NVIDIA-H100-80GB-HBM3": 0.7}))
    assert faster.gpu_hours == pytest.approx(hours / 2)


def test_unknown_rows_or_architecture_say_what_would_make_them_known(tmp_path):
    repo = repo_with(tmp_path, """
        training: {epochs: 1}
        resources: {gpusPerNode: 1, gpuProduct: NVIDIA-H100-80GB-HBM3}
        """)
    found = estimate_of(repo, rows={})
    assert found.workload.tokens is None and found.gpu_hours is None
    assert "training rows of Dataset chats unknown" in found.workload.basis
    assert "set training.maxSteps" in found.workload.basis
    assert found.memory is None
    assert "add an `architecture:` block" in found.notes[0]
    assert plan_line(found) == "GPU-hours unknown"


def test_the_breakdown_adds_up_and_reports_the_fit(tmp_path):
    repo = repo_with(tmp_path, """
        adapter: {type: none}
        training: {maxSteps: 100, microBatchSize: 4, maxSeqLength: 2048}
        distributed: {strategy: zero3}
        resources: {gpusPerNode: 8, gpuProduct: NVIDIA-A100-SXM4-80GB}
        """, architecture_block(4096, 32, 32, 32, 11008, 32000))
    found = estimate_of(repo)
    data = estimate_json(found)
    memory = data["memory"]
    parts = ("parameters_bytes", "frozen_bytes", "gradients_bytes", "optimizer_bytes", "gathered_bytes",
             "activations_bytes")
    assert sum(memory[key] for key in parts) == pytest.approx(memory["peak_bytes"])
    assert memory["strategy"] == "zero3" and memory["gathered_bytes"] == 4 * 32000 * 4096
    assert data["fits"] is (memory["peak_bytes"] <= 0.9 * 80e9)
    assert json.loads(json.dumps(data)) == data
    text = estimate_text(found)
    assert "gathered layer (ZeRO-3)" in text and "largest micro-batch that fits" in text
    assert f"{found.gpu_hours:,.2f}" in text


def test_auto_reports_the_strategy_it_would_choose(tmp_path):
    repo = repo_with(tmp_path, """
        adapter: {type: none}
        training: {maxSteps: 10, microBatchSize: 1, maxSeqLength: 1024, gradientCheckpointing: true}
        resources: {gpusPerNode: 8, gpuProduct: NVIDIA-A100-SXM4-80GB}
        """, architecture_block(4096, 32, 32, 32, 11008, 32000))
    found = estimate_of(repo)
    # 7B fully fine-tuned: DDP needs 16 bytes a parameter (108 GB), ZeRO-2 on 8 GPUs fits
    assert found.memory.strategy == "zero2" and found.fits
    assert "(zero2 (auto), microBatchSize 1)" in plan_line(found)


# --- Training rows ---------------------------------------------------------------------------


def test_rows_are_counted_in_local_files(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n\n{"x": 2}\n{"x": 3}\n')
    (tmp_path / "a.csv").write_text('text\n"one, with a comma"\n"two\nlines"\n')
    (tmp_path / "a.json").write_text('[{"x": 1}, {"x": 2}]')
    (tmp_path / "b.json").write_text('{"text": ["a", "b", "c"]}')
    assert count_file_rows(tmp_path / "a.jsonl", "jsonl") == 3
    assert count_file_rows(tmp_path / "a.csv", "csv") == 2
    assert count_file_rows(tmp_path / "a.json", "json") == 2
    assert count_file_rows(tmp_path / "b.json", "json") == 3
    assert count_file_rows(tmp_path / "a.jsonl", "parquet") is None


def test_a_recorded_row_count_is_preferred_to_counting_the_file(tmp_path):
    rows = "".join(json.dumps({"messages": [{"role": "user", "content": f"hi {i}"}]}) + "\n"
                   for i in range(100))
    repo = repo_with(tmp_path, "training: {epochs: 1}", files={"data/chats.jsonl": rows})
    specs = validate_path(repo).specs
    counted = train_rows(specs)["chats"]
    assert counted.rows == 90  # split.train defaults to 0.9
    assert "counted in data/chats.jsonl" in counted.origin

    inputs = fingerprint_inputs(specs, DependencyGraph.from_specs(specs), {})
    fingerprint = inputs[ResourceId("Dataset", "chats")].fingerprint

    def state_with(run_fingerprint: str) -> ActualState:
        run = BuiltRun("Dataset", "chats", run_fingerprint, "0123456789abcdef", 0.0,
                       metrics=MappingProxyType({"rows_train": 87.0}))
        return ActualState({}, {("Dataset", "chats"): (run,)}, {}, BackendState((), ()))

    recorded = train_rows(specs, inputs, state_with(fingerprint))["chats"]
    assert recorded == RowCount(87, "recorded by run 01234567")
    older = train_rows(specs, inputs, state_with("an-earlier-fingerprint"))["chats"]
    assert older.rows == 87 and "an earlier version of the spec" in older.origin
    assert train_rows(specs, inputs, ActualState.unknown())["chats"].rows == 90


def test_a_row_cap_bounds_the_rows_an_estimate_trains_on(tmp_path):
    repo = repo_with(tmp_path, """
        training: {epochs: 2, microBatchSize: 4, gradientAccumulation: 2, maxSeqLength: 512}
        resources: {gpusPerNode: 1, gpuProduct: NVIDIA-H100-80GB-HBM3}
        """, architecture_block(4096, 32, 32, 8, 14336, 128256))
    fine_tune = repo / "fine-tune.yaml"
    fine_tune.write_text(fine_tune.read_text().replace("- name: chats",
                                                       "- name: chats\n      maxSamples: 100"))
    capped = estimate_of(repo, rows={"chats": RowCount(1000, "test")}).workload
    assert capped.sequences == 2 * 100 and capped.steps == 2 * 13  # ceil(100 / 8) per epoch
    assert "chats: 100 rows, maxSamples of 1,000 test" in capped.basis
    below = estimate_of(repo, rows={"chats": RowCount(40, "test")}).workload
    assert below.sequences == 2 * 40
    unknown = estimate_of(repo, rows={}).workload  # the cap alone is an upper bound
    assert unknown.sequences == 2 * 100 and "maxSamples (rows not known yet)" in unknown.basis
