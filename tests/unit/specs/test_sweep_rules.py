"""The Sweep's rules, each shown firing on a small repository and passing once the spec is fixed."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.specs.problems import Problem
from reconciler.specs.sweep import TRIAL_SUFFIX_LENGTH, Distribution, trial_evaluation_name, trial_name
from reconciler.specs.validate import validate_path
from tests.conftest import API, VALID_SPECS, write_repo

SWEEP = f"""
{API}
kind: Sweep
metadata:
  name: sft-lr
spec:
  fineTune: sft
  objective:
    evaluation: sft-quality
    metric: rougeL
  parameters:
    training.learningRate: {{logUniform: [1.0e-5, 1.0e-3]}}
    adapter.r: {{choice: [8, 16]}}
"""


def sweep(**replace: str) -> str:
    text = SWEEP
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def problems(tmp_path: Path, files: dict[str, str], strict: bool = False) -> list[Problem]:
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, **files})
    return list(validate_path(repo, strict=strict).problems)


def only(found: list[Problem], code: str) -> Problem:
    assert [p.code for p in found] == [code], "\n".join(p.text() for p in found)
    return found[0]


def with_parameters(lines: str, **extra: str) -> dict[str, str]:
    head = SWEEP.split("  parameters:")[0]
    return {"sweep.yaml": head + "  parameters:\n" + lines, **extra}


def test_a_valid_sweep_passes(tmp_path: Path):
    assert problems(tmp_path, {"sweep.yaml": SWEEP}, strict=True) == []


def test_the_template_and_the_objective_evaluation_must_exist(tmp_path: Path):
    found = problems(tmp_path, {"sweep.yaml": sweep(**{"fineTune: sft": "fineTune: sfx",
                                                       "evaluation: sft-quality": "evaluation: sft-qualty"})})
    assert sorted((p.code, p.path) for p in found) == [
        ("missing-reference", "spec.fineTune"), ("missing-reference", "spec.objective.evaluation")]
    assert {p.hint for p in found} == {"did you mean 'sft'?", "did you mean 'sft-quality'?"}


def test_the_objective_must_score_the_template(tmp_path: Path):
    other = VALID_SPECS["fine-tune.yaml"].replace("name: sft", "name: sft-2")
    found = only(problems(tmp_path, {"sweep.yaml": SWEEP, "other.yaml": other,
                                     "evaluation.yaml": VALID_SPECS["evaluation.yaml"].replace(
                                         "fineTune: sft", "fineTune: sft-2"),
                                     "deployment.yaml": VALID_SPECS["deployment.yaml"].replace(
                                         "fineTune: sft", "fineTune: sft-2")}),
                 "objective-for-other-model")
    assert found.path == "spec.objective.evaluation" and found.position.line == 8
    assert "scores FineTune/sft-2, not the template FineTune/sft" in found.message


def test_the_objective_metric_must_be_computed(tmp_path: Path):
    found = only(problems(tmp_path, {"sweep.yaml": sweep(**{"metric: rougeL": "metric: exact_match"})}),
                 "objective-metric-not-computed")
    assert found.position.line == 9
    assert "it computes perplexity, rougeL" in found.message
    assert problems(tmp_path, {"sweep.yaml": sweep(**{"metric: rougeL": "metric: perplexity"})}) == []


def test_benchmark_metrics_are_accepted_by_their_prefix(tmp_path: Path):
    evaluation = VALID_SPECS["evaluation.yaml"] + "  tasks: [{name: hellaswag}]\n"
    files = {"evaluation.yaml": evaluation,
             "sweep.yaml": sweep(**{"metric: rougeL": "metric: task/hellaswag/acc"})}
    assert problems(tmp_path, files) == []


@pytest.mark.parametrize("parameter, code, message, hint", [
    ("training.learningRat: {uniform: [0.1, 0.2]}", "unknown-parameter",
     "FineTune spec.training has no field 'learningRat'", "did you mean 'learningRate'?"),
    ("trainig.epochs: {intRange: [1, 2]}", "unknown-parameter", "FineTune spec has no field 'trainig'",
     "did you mean 'training'?"),
    ("training.learningRate.low: {uniform: [0.1, 0.2]}", "unknown-parameter",
     "training.learningRate is a value, not a mapping", None),
    ("training: {choice: [a]}", "parameter-not-searchable", "holds a mapping or a list", None),
    ("adapter.targetModules: {choice: [all-linear]}", "parameter-not-searchable", "holds a mapping or a list",
     None),
    ("training.dataloaderWorkers: {intRange: [0, 4]}", "parameter-not-searchable",
     "training.dataloaderWorkers is operational", None),
    ("resources.gpuProduct: {choice: [NVIDIA-L4]}", "parameter-not-searchable", "is operational", None),
    ("method: {choice: [sft, dpo]}", "parameter-not-searchable", "method is how the template learns", None),
    ("baseModel: {choice: [tiny]}", "parameter-not-searchable", "baseModel is what the template starts from",
     None),
])
def test_a_parameter_must_be_a_searchable_field(tmp_path: Path, parameter, code, message, hint):
    found = only(problems(tmp_path, with_parameters(f"    {parameter}\n")), code)
    assert found.position.line == 11 and message in found.message, found.text()
    assert found.hint == hint or (hint is None and code == "parameter-not-searchable")


@pytest.mark.parametrize("parameter, message", [
    ("adapter.r: {choice: [8, 0]}", "refuses adapter.r = 0 (adapter.r: must be > 0)"),
    ("adapter.r: {logUniform: [4.0, 64.0]}", "refuses adapter.r = 4.0 (adapter.r: must be an integer)"),
    ("training.learningRate: {logUniform: [1.0e-4, 2.0]}",
     "refuses training.learningRate = 2.0 (training.learningRate: must be <= 1)"),
    ("training.packing: {intRange: [0, 1]}",
     "refuses training.packing = 0 (training.packing: must be true or false)"),
    ("training.scheduler: {choice: [cosine, cosin]}", "training.scheduler: must be one of: cosine"),
    ("training.maxSteps: {intRange: [10, 20]}", "set either epochs or maxSteps, not both"),
])
def test_each_value_is_checked_against_the_template(tmp_path: Path, parameter, message):
    template = VALID_SPECS["fine-tune.yaml"] + "    epochs: 2\n"
    found = problems(tmp_path, with_parameters(f"    {parameter}\n", **{"fine-tune.yaml": template}))
    assert found and {p.code for p in found} == {"parameter-value-refused"}, [p.text() for p in found]
    assert all(p.position.line == 11 for p in found)
    assert any(message in p.message for p in found), [p.text() for p in found]


def test_values_the_template_accepts_pass(tmp_path: Path):
    lines = ("    training.scheduler: {choice: [cosine, linear]}\n"
             "    training.packing: {choice: [true, false]}\n"
             "    adapter.dropout: {uniform: [0.0, 0.2]}\n"
             "    training.epochs: {intRange: [1, 4]}\n"
             "    adapter.quantization.bits: {choice: [8]}\n")
    assert problems(tmp_path, with_parameters(lines)) == []


def test_grid_needs_values_it_can_list(tmp_path: Path):
    found = only(problems(tmp_path, {"sweep.yaml": SWEEP + "  algorithm: grid\n"}),
                 "grid-needs-finite-values")
    assert found.position.line == 11 and "logUniform has no list of values" in found.message
    fixed = sweep(**{"{logUniform: [1.0e-5, 1.0e-3]}": "{choice: [1.0e-5, 1.0e-4]}"}) + "  algorithm: grid\n"
    assert problems(tmp_path, {"sweep.yaml": fixed}) == []


def test_pruning_needs_a_metric_the_trainer_logs(tmp_path: Path):
    found = only(problems(tmp_path, {"sweep.yaml": SWEEP + "  pruning: {metric: eval_loss}\n"}),
                 "pruning-metric-not-logged")
    assert found.position.line == 13 and "evaluation.everySteps (or perEpoch)" in (found.hint or "")
    evaluating = VALID_SPECS["fine-tune.yaml"] + "  evaluation: {everySteps: 10}\n"
    assert problems(tmp_path, {"sweep.yaml": SWEEP + "  pruning: {metric: eval_loss}\n",
                               "fine-tune.yaml": evaluating}) == []
    found = only(problems(tmp_path, {"sweep.yaml": SWEEP + "  pruning: {metric: los}\n"}),
                 "pruning-metric-not-logged")
    assert found.hint == "did you mean 'loss'?"
    assert problems(tmp_path, {"sweep.yaml": SWEEP + "  pruning: {metric: loss, minSteps: 20}\n"}) == []


def test_a_sweep_name_leaves_room_for_the_trial_suffix(tmp_path: Path):
    longest = "s" * (63 - TRIAL_SUFFIX_LENGTH)
    assert problems(tmp_path, {"sweep.yaml": sweep(**{"name: sft-lr": f"name: {longest}"})}) == []
    found = only(problems(tmp_path, {"sweep.yaml": sweep(**{"name: sft-lr": f"name: {longest}s"})}),
                 "sweep-name-too-long")
    assert found.path == "metadata.name" and found.position.line == 4
    assert len(trial_evaluation_name(trial_name(longest, "0123456789abcdef"), "quality")) == 63


def test_a_spec_named_like_a_trial_is_an_error(tmp_path: Path):
    taken = VALID_SPECS["fine-tune.yaml"].replace("name: sft", "name: sft-lr-0123456789")
    found = only(problems(tmp_path, {"sweep.yaml": SWEEP, "taken.yaml": taken}), "trial-name-taken")
    assert found.resource == "FineTune/sft-lr-0123456789" and found.position.line == 4
    fine = VALID_SPECS["fine-tune.yaml"].replace("name: sft", "name: sft-lr-final")
    assert problems(tmp_path, {"sweep.yaml": SWEEP, "taken.yaml": fine}) == []


SERVING_THE_SWEEP = VALID_SPECS["deployment.yaml"].replace("fineTune: sft", "sweep: sft-lr")


def test_a_deployment_may_serve_a_sweep(tmp_path: Path):
    assert problems(tmp_path, {"sweep.yaml": SWEEP, "deployment.yaml": SERVING_THE_SWEEP}, strict=True) == []


def test_a_deployment_of_a_sweep_that_does_not_exist(tmp_path: Path):
    found = only(problems(tmp_path, {"deployment.yaml": SERVING_THE_SWEEP}), "missing-reference")
    assert found.path == "spec.model.sweep" and "served sweep refers to Sweep 'sft-lr'" in found.message


def test_a_deployment_of_a_sweep_requires_evaluations_of_its_template(tmp_path: Path):
    other = VALID_SPECS["fine-tune.yaml"].replace("name: sft", "name: sft-2")
    evaluation = VALID_SPECS["evaluation.yaml"].replace("name: sft-quality", "name: other-quality").replace(
        "fineTune: sft", "fineTune: sft-2")
    deployment = SERVING_THE_SWEEP.replace("requires: [sft-quality]", "requires: [other-quality]")
    files = {"sweep.yaml": SWEEP, "other.yaml": other, "e2.yaml": evaluation, "deployment.yaml": deployment}
    found = [p for p in problems(tmp_path, files) if p.code == "gate-for-other-model"]
    assert len(found) == 1 and "the template of the served Sweep 'sft-lr'" in found[0].message


@pytest.mark.parametrize("model, message", [
    ("{fineTune: sft, sweep: sft-lr}", "set exactly one of fineTune or sweep"),
    ("{}", "set exactly one of fineTune or sweep"),
])
def test_a_deployment_serves_a_fine_tune_or_a_sweep(tmp_path: Path, model: str, message: str):
    deployment = VALID_SPECS["deployment.yaml"].replace("model:\n            fineTune: sft",
                                                        f"model: {model}")
    found = only(problems(tmp_path, {"sweep.yaml": SWEEP, "deployment.yaml": deployment}), "invalid-value")
    assert found.path == "spec.model" and message in found.message


@pytest.mark.parametrize("distribution, message", [
    ({}, "set exactly one of logUniform, uniform, intRange or choice"),
    ({"uniform": [0.1, 0.2], "choice": [1]}, "(got uniform, choice)"),
    ({"logUniform": [0.0, 1.0]}, "logUniform needs 0 < low < high"),
    ({"uniform": [0.2, 0.1]}, "uniform needs low < high"),
    ({"intRange": [4, 1]}, "intRange needs low <= high"),
    ({"choice": []}, "at least 1"),
    ({"choice": [1, 1.0]}, "lists 1.0 more than once"),
    ({"choice": [None]}, ""),
    ({"intRange": [1.5, 3]}, ""),
])
def test_a_distribution_is_one_of_four_shapes(distribution: dict, message: str):
    from pydantic import ValidationError
    with pytest.raises(ValidationError) as error:
        Distribution.model_validate(distribution)
    assert message in str(error.value)


def test_values_to_check_and_kind():
    assert Distribution.model_validate({"logUniform": [1e-4, 1e-2]}).values_to_check() == (1e-4, 1e-2)
    assert Distribution.model_validate({"intRange": [2, 2]}).values_to_check() == (2,)
    assert Distribution.model_validate({"choice": [True, 1, "a"]}).values_to_check() == (True, 1, "a")
    assert [Distribution.model_validate(d).kind for d in (
        {"logUniform": [1e-4, 1e-2]}, {"uniform": [0, 1]}, {"intRange": [1, 2]}, {"choice": [1]})] == [
        "logUniform", "uniform", "intRange", "choice"]
    assert trial_name("fruit-lr", "abcdef0123456789") == "fruit-lr-abcdef0123"


def test_how_much_of_a_sweep_runs_is_left_out_of_its_fingerprint():
    import yaml

    from reconciler.fingerprint import produced_spec
    from reconciler.specs.deployment import DeploymentResource
    from reconciler.specs.sweep import SweepResource

    def produced(extra: str) -> dict:
        return produced_spec(SweepResource.model_validate(yaml.safe_load(SWEEP + extra)))

    assert produced("") == produced("  maxTrials: 50\n  parallelTrials: 4\n  budget: {gpuHours: 5}\n"
                                    "  suspend: true\n")
    assert produced("") != produced("  seed: 1\n") and produced("") != produced("  algorithm: random\n")
    served = yaml.safe_load(VALID_SPECS["deployment.yaml"].replace("        ", ""))
    assert "sweep" not in produced_spec(DeploymentResource.model_validate(served))["model"]
