"""FineTunes that cannot fit their GPUs are refused by validate, with the nearest fit."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from reconciler.sizing import architectures, capacity
from reconciler.specs.base import ResourceId
from reconciler.specs.validate import validate_path
from tests.conftest import REPO_ROOT, VALID_SPECS, run_tuneops, write_repo

LLAMA2_7B_BLOCK = """
  architecture:
    hiddenSize: 4096
    numLayers: 32
    numAttentionHeads: 32
    intermediateSize: 11008
    vocabSize: 32000
"""
LLAMA2_7B_CONFIG = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                    "intermediate_size": 11008, "vocab_size": 32000}


def spec(name: str) -> str:
    return textwrap.dedent(VALID_SPECS[name]).lstrip("\n")


def fine_tune(extra: str) -> str:
    return spec("fine-tune.yaml") + textwrap.indent(textwrap.dedent(extra).strip(), "  ") + "\n"


def capacity_problems(repo: Path) -> list[str]:
    result = validate_path(repo)
    assert result.valid, [p.text() for p in result.problems]
    found = capacity.check(result.specs, architectures.architectures(result.specs))
    return [p.text() for p in found]


def test_full_fine_tuning_of_7b_on_one_40gb_gpu_does_not_fit(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    repo = write_repo(tmp_path / "specs", {
        **VALID_SPECS,
        "base-model.yaml": spec("base-model.yaml") + LLAMA2_7B_BLOCK.lstrip("\n"),
        "fine-tune.yaml": fine_tune("""
            resources: {gpusPerNode: 1, gpuProduct: NVIDIA-A100-SXM4-40GB}
            distributed: {strategy: ddp}
            """).replace("    r: 8", "    type: none"),
    })
    [found] = capacity_problems(repo)
    assert found.startswith("specs/fine-tune.yaml:")
    assert "error spec.distributed.strategy: needs about" in found
    assert "with ddp at microBatchSize 4 (model states 107.8 GB" in found
    assert "NVIDIA-A100-SXM4-40GB has 40 GB, 36 GB usable" in found
    assert "(nearest that fits: strategy zero3-offload with microBatchSize 2)" in found


def test_lora_on_an_80gb_gpu_with_auto_fits(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {
        **VALID_SPECS,
        "base-model.yaml": spec("base-model.yaml") + LLAMA2_7B_BLOCK.lstrip("\n"),
        "fine-tune.yaml": fine_tune("""
            resources: {gpusPerNode: 1, gpuProduct: NVIDIA-H100-80GB-HBM3}
            """),
    })
    assert capacity_problems(repo) == []


def test_architecture_is_read_from_a_local_config_json(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS,
                                           "models/tiny/config.json": json.dumps(LLAMA2_7B_CONFIG)})
    found = architectures.architectures(validate_path(repo).specs)
    assert found[ResourceId("BaseModel", "tiny")].parameters == 6_738_415_616


def test_architecture_is_read_from_the_hugging_face_cache(tmp_path: Path, monkeypatch):
    revision = "0" * 40
    cache = tmp_path / "hub"
    config = cache / "models--org--model" / "snapshots" / revision / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps(LLAMA2_7B_CONFIG))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    base = spec("base-model.yaml").replace("file://models/tiny", "hf://org/model")
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS,
                                           "base-model.yaml": base + f"  revision: '{revision}'\n"})
    assert ResourceId("BaseModel", "tiny") in architectures.architectures(validate_path(repo).specs)


@pytest.mark.parametrize("resources", [
    "resources: {gpusPerNode: 1, gpuProduct: Some-Unknown-GPU}",  # memory unknown
    "resources: {gpusPerNode: 0}",  # CPU training is not planned
])
def test_unknowns_never_block(tmp_path: Path, resources: str):
    repo = write_repo(tmp_path / "specs", {
        **VALID_SPECS,
        "base-model.yaml": spec("base-model.yaml") + LLAMA2_7B_BLOCK.lstrip("\n"),
        "fine-tune.yaml": fine_tune(resources).replace("    r: 8", "    type: none"),
    })
    assert capacity_problems(repo) == []


def test_validate_reports_it_through_the_cli(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {
        **VALID_SPECS,
        "base-model.yaml": spec("base-model.yaml") + LLAMA2_7B_BLOCK.lstrip("\n"),
        "fine-tune.yaml": fine_tune("""
            resources: {gpusPerNode: 1, gpuProduct: NVIDIA-A100-SXM4-40GB}
            distributed: {strategy: ddp}
            """).replace("    r: 8", "    type: none"),
    })
    result = run_tuneops("validate", ".", "--format", "json", cwd=repo)
    assert result.exit_code == 1
    [error] = json.loads(result.stdout)["errors"]
    assert error["code"] == "does-not-fit" and error["path"] == "spec.distributed.strategy"


def test_the_examples_fit_their_gpus():
    result = run_tuneops("validate", "specs-example", "--strict", cwd=REPO_ROOT)
    assert result.exit_code == 0, result.output


def test_modules_the_architecture_lacks_mean_no_estimate_not_a_crash(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {
        **VALID_SPECS,
        "base-model.yaml": spec("base-model.yaml") + LLAMA2_7B_BLOCK.lstrip("\n"),
        "fine-tune.yaml": fine_tune("""
            resources: {gpusPerNode: 1, gpuProduct: NVIDIA-A100-SXM4-40GB}
            """).replace("    r: 8", "    r: 8\n    targetModules: [c_attn]"),
    })
    assert capacity_problems(repo) == []
    result = run_tuneops("validate", ".", cwd=repo)
    assert result.exit_code == 0 and "internal error" not in result.output
