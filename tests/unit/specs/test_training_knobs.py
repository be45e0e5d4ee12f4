"""training and distributed knobs real configs rely on: optimizer spellings users bring from
axolotl/LLaMA-Factory, beta for preference methods, kernels, tf32, data loader workers, offload."""

from __future__ import annotations

import textwrap
from pathlib import Path

from reconciler.fingerprint import fingerprint_inputs
from reconciler.graph import DependencyGraph
from reconciler.sources_digest import source_digests
from reconciler.specs.base import ResourceId
from reconciler.specs.validate import validate_path
from tests.conftest import VALID_SPECS, write_repo

FINE_TUNE = ResourceId("FineTune", "sft")


def with_training(lines: str) -> dict[str, str]:
    fine_tune = textwrap.dedent(VALID_SPECS["fine-tune.yaml"]).lstrip("\n")
    return {**VALID_SPECS, "fine-tune.yaml": fine_tune.replace(
        "    learningRate: 2e-4\n",
        "    learningRate: 2e-4\n" + "".join(f"    {line}\n" for line in lines.split(";")))}


def validated(root: Path, lines: str):  # noqa: ANN201
    return validate_path(write_repo(root, with_training(lines)))


def fine_tune_fingerprint(root: Path, lines: str) -> str:
    result = validated(root, lines)
    assert result.valid, [p.text() for p in result.problems]
    graph = DependencyGraph.from_specs(result.specs)
    return fingerprint_inputs(result.specs, graph, source_digests(result.specs))[FINE_TUNE].fingerprint


def errors(root: Path, lines: str) -> list[str]:
    result = validated(root, lines)
    return [p.text() for p in result.problems if p.severity.name == "ERROR"]


def test_transformers_spelling_of_an_optimizer_is_ours_with_the_same_fingerprint(tmp_path: Path) -> None:
    ours = fine_tune_fingerprint(tmp_path / "ours", "optimizer: adamw_8bit")
    theirs = fine_tune_fingerprint(tmp_path / "theirs", "optimizer: adamw_bnb_8bit")
    assert ours == theirs
    assert fine_tune_fingerprint(tmp_path / "fused", "optimizer: adamw_torch_fused") != ours


def test_an_optimizer_typo_is_a_file_line_error_with_a_did_you_mean(tmp_path: Path) -> None:
    found = errors(tmp_path / "typo", "optimizer: adamw_bnb_8bt")
    assert any(line.endswith("?)") and "fine-tune.yaml:13:16 error" in line
               and "spec.training.optimizer" in line and "did you mean 'adamw_bnb_8bit'" in line
               for line in found), found


def test_an_optimizer_we_do_not_plan_for_says_what_to_use(tmp_path: Path) -> None:
    found = errors(tmp_path / "paged", "optimizer: paged_adamw_32bit")
    assert any("spec.training.optimizer" in line and "not an optimizer tuneops plans for" in line
               and "adamw_torch" in line for line in found), found


def test_beta_is_dpo_beta_with_the_same_fingerprint(tmp_path: Path) -> None:
    # method-neutral `beta`; `dpoBeta`, its older name, still reads the same
    neutral = fine_tune_fingerprint(tmp_path / "beta", "beta: 0.3")
    assert neutral == fine_tune_fingerprint(tmp_path / "dpoBeta", "dpoBeta: 0.3")
    assert neutral != fine_tune_fingerprint(tmp_path / "other", "beta: 0.2")


def test_beta_at_its_default_keeps_the_fingerprint_specs_had(tmp_path: Path) -> None:
    assert (fine_tune_fingerprint(tmp_path / "unset", "seed: 42")
            == fine_tune_fingerprint(tmp_path / "old", "dpoBeta: 0.1")
            == fine_tune_fingerprint(tmp_path / "new", "beta: 0.1"))


def test_beta_and_dpo_beta_together_is_a_file_line_error(tmp_path: Path) -> None:
    found = errors(tmp_path / "both", "beta: 0.3;dpoBeta: 0.3")
    assert any("fine-tune.yaml:" in line and "spec.training" in line
               and "set beta or dpoBeta (its older name), not both" in line for line in found), found


def test_beta_without_dpo_is_a_warning_at_the_key_written(tmp_path: Path) -> None:
    for key in ("beta", "dpoBeta"):
        result = validated(tmp_path / key, f"{key}: 0.2")
        warnings = [p.text() for p in result.problems if p.code == "ignored-setting"]
        expected = (f"fine-tune.yaml:13:5 warning spec.training.{key}: "
                    f"{key} only applies to methods dpo, kto, orpo")
        assert any(expected in line for line in warnings), warnings


def test_the_schema_still_accepts_dpo_beta_as_deprecated() -> None:
    from reconciler.specs.finetune import Training

    properties = Training.model_json_schema()["properties"]
    assert "beta" in properties and properties["dpoBeta"]["deprecated"] is True


def test_flash_attention_with_no_gpus_is_a_validation_warning(tmp_path: Path) -> None:
    result = validated(tmp_path / "flash", "attention: flash_attention_2")
    assert result.valid, [p.text() for p in result.problems]
    assert any(p.code == "needs-gpu" and "spec.training.attention" in p.text()
               and "fine-tune.yaml:13:16 warning" in p.text() for p in result.problems), result.problems


def test_attention_at_its_default_keeps_the_fingerprint_specs_had(tmp_path: Path) -> None:
    default = fine_tune_fingerprint(tmp_path / "unset", "seed: 42")
    assert default == fine_tune_fingerprint(tmp_path / "auto", "attention: auto")
    assert default != fine_tune_fingerprint(tmp_path / "eager", "attention: eager")


def with_distributed(lines: str, gpus: int = 2) -> dict[str, str]:
    fine_tune = textwrap.dedent(VALID_SPECS["fine-tune.yaml"]).lstrip("\n")
    block = "  distributed:\n" + "".join(f"    {line}\n" for line in lines.split(";"))
    return {**VALID_SPECS, "fine-tune.yaml": fine_tune + block
            + f"  resources:\n    gpusPerNode: {gpus}\n    gpuProduct: NVIDIA-H100-80GB-HBM3\n"}


def distributed_problems(root: Path, lines: str, gpus: int = 2) -> list[str]:
    result = validate_path(write_repo(root, with_distributed(lines, gpus)))
    return [p.text() for p in result.problems]


def test_offload_that_the_strategy_supports_validates(tmp_path: Path) -> None:
    for index, lines in enumerate(["strategy: zero3;offload: {optimizer: true}",
                                   "strategy: zero3;offload: {parameters: true}",
                                   "strategy: zero3;offload: {parameters: true, optimizer: true}",
                                   "strategy: zero2;offload: {optimizer: true}",
                                   "strategy: fsdp;offload: {parameters: true, optimizer: true}"]):
        found = distributed_problems(tmp_path / str(index), lines)
        assert not [line for line in found if " error " in line], (lines, found)


def test_offload_the_strategy_cannot_do_is_a_file_line_error_saying_what_to_do(tmp_path: Path) -> None:
    cases = {
        "strategy: ddp;offload: {optimizer: true}": "needs a sharded strategy",
        "strategy: auto;offload: {optimizer: true}": "needs a sharded strategy",
        "strategy: zero2;offload: {parameters: true}": "ZeRO-2 keeps every parameter",
        "strategy: fsdp;offload: {optimizer: true}": "FSDP offloads parameters and optimizer states together",
        "strategy: zero3-offload;offload: {optimizer: true}": "already offloads",
        "strategy: zero3;offload: {}": "offload moves nothing",
    }
    for index, (lines, message) in enumerate(cases.items()):
        found = [line for line in distributed_problems(tmp_path / str(index), lines) if " error " in line]
        assert any(message in line and "fine-tune.yaml:" in line and "spec.distributed" in line
                   for line in found), (lines, found)


def test_offload_changes_the_fingerprint_only_when_set(tmp_path: Path) -> None:
    def fingerprint(root: Path, lines: str) -> str:
        result = validate_path(write_repo(root, with_distributed(lines)))
        assert result.valid, [p.text() for p in result.problems]
        graph = DependencyGraph.from_specs(result.specs)
        return fingerprint_inputs(result.specs, graph, source_digests(result.specs))[FINE_TUNE].fingerprint

    plain = fingerprint(tmp_path / "plain", "strategy: zero3")
    assert plain != fingerprint(tmp_path / "offload", "strategy: zero3;offload: {optimizer: true}")


def test_planned_strategy_names_the_offload() -> None:
    from reconciler.specs.finetune import Distributed

    def planned(body: dict) -> str:
        return Distributed.model_validate(body).planned_strategy

    assert planned({"strategy": "fsdp"}) == "zero3"
    both = {"parameters": True, "optimizer": True}
    assert planned({"strategy": "fsdp", "offload": both}) == "zero3-offload"
    assert planned({"strategy": "zero2", "offload": {"optimizer": True}}) == "zero2-offload"
    assert planned({"strategy": "zero3", "offload": {"optimizer": True}}) == "zero3-offload-optimizer"
    assert planned({"strategy": "zero3", "offload": {"parameters": True}}) == "zero3-offload-parameters"
    assert planned({"strategy": "zero3-offload"}) == "zero3-offload"


def test_kernels_tf32_and_workers(tmp_path: Path) -> None:
    default = fine_tune_fingerprint(tmp_path / "unset", "seed: 42")
    # batches are the same however many workers prepare them: nothing to rebuild
    assert default == fine_tune_fingerprint(tmp_path / "workers", "dataloaderWorkers: 4")
    assert default == fine_tune_fingerprint(tmp_path / "none", "kernels: none")
    assert default == fine_tune_fingerprint(tmp_path / "no-tf32", "tf32: false")
    assert default != fine_tune_fingerprint(tmp_path / "tf32", "tf32: true")
    liger = validated(tmp_path / "liger", "kernels: liger")
    assert any(p.code == "needs-gpu" and "spec.training.kernels" in p.text() for p in liger.problems)
    found = errors(tmp_path / "typo", "kernels: ligr")
    assert any("spec.training.kernels" in line and "liger" in line for line in found), found
