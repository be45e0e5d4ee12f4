"""Whole-repository rules, each shown firing (and not firing) on a small fixture repository."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from reconciler.specs.policy import NO_APPROVAL, Approval
from reconciler.specs.problems import CODES, Problem
from reconciler.specs.validate import validate_path
from tests.conftest import REPO_ROOT, VALID_SPECS, write_repo


def spec_text(name: str) -> str:
    return textwrap.dedent(VALID_SPECS[name]).lstrip("\n")


def edit(name: str, old: str, new: str) -> dict[str, str]:
    text = spec_text(name)
    assert old in text, f"{old!r} not in {name}"
    return {name: text.replace(old, new, 1)}


def problems(tmp_path: Path, files: dict[str, str], strict: bool = False,
             approval: Approval = NO_APPROVAL) -> list[Problem]:
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, **files})
    return list(validate_path(repo, strict=strict, approval=approval).problems)


def only(found: list[Problem], code: str) -> Problem:
    matching = [p for p in found if p.code == code]
    assert len(matching) == 1, "\n".join(p.text() for p in found)
    assert [p for p in found if p.code != code] == [], "\n".join(p.text() for p in found)
    return matching[0]


def test_fixture_repository_is_clean(tmp_path: Path):
    assert problems(tmp_path, {}) == []


def test_method_must_fit_the_data(tmp_path: Path):
    found = only(problems(tmp_path, edit("fine-tune.yaml", "  adapter:", "  method: dpo\n  adapter:")),
                 "method-data-mismatch")
    assert found.path == "spec.datasets[0].name" and found.position.line == 8
    assert "method dpo needs preference data, but Dataset 'chats' has schema type chat" in found.message
    assert found.hint == "use method: sft, or another dataset"


@pytest.mark.parametrize("adapter, strategy, code, severity", [
    ("qlora", "ddp", "needs-gpu", "error"),
])
def test_qlora_needs_a_gpu(tmp_path: Path, adapter, strategy, code, severity):
    files = edit("fine-tune.yaml", "    r: 8", f"    r: 8\n    type: {adapter}")
    found = only(problems(tmp_path, files), code)
    assert found.severity == severity and found.path == "spec.adapter.type"


@pytest.mark.parametrize("strategy, code, severity", [
    ("fsdp", "unsupported-combination", "error"),
    ("zero3", "fragile-combination", "warning"),
    ("zero3-offload", "fragile-combination", "warning"),
    ("zero2", None, None),
])
def test_qlora_with_sharding_strategies(tmp_path: Path, strategy, code, severity):
    files = edit("fine-tune.yaml", "    r: 8", "    r: 8\n    type: qlora\n  resources:\n"
                 f"    gpusPerNode: 2\n  distributed:\n    strategy: {strategy}")
    found = problems(tmp_path, files)
    if code is None:
        assert found == []
    else:
        assert only(found, code).severity == severity


def test_fp16_on_cpu_is_refused(tmp_path: Path):
    found = only(problems(tmp_path, edit("fine-tune.yaml", "    learningRate: 2e-4",
                                         "    learningRate: 2e-4\n    precision: fp16")), "needs-gpu")
    assert found.path == "spec.training.precision"


@pytest.mark.parametrize("evaluation, checkpoint, message", [
    ("earlyStopping: {patience: 2}", "", "needs evaluation.everySteps"),
    ("everySteps: 50\n    earlyStopping: {patience: 2}", "", "must be a multiple"),
    ("everySteps: 50\n    earlyStopping: {patience: 2}", "everySteps: 75", "must be a multiple"),
])
def test_early_stopping_needs_evaluation(tmp_path: Path, evaluation, checkpoint, message):
    extra = f"  evaluation:\n    {evaluation}\n"
    extra += f"  checkpoint:\n    {checkpoint}\n" if checkpoint else ""
    found = only(problems(tmp_path, {"fine-tune.yaml": spec_text("fine-tune.yaml") + extra}),
                 "early-stopping-needs-evaluation")
    assert message in found.message


def test_early_stopping_with_aligned_checkpoints_is_fine(tmp_path: Path):
    extra = ("  evaluation:\n    everySteps: 50\n    earlyStopping: {patience: 2}\n"
             "  checkpoint:\n    everySteps: 100\n")
    assert problems(tmp_path, {"fine-tune.yaml": spec_text("fine-tune.yaml") + extra}) == []


def test_early_stopping_on_per_epoch_evaluations_keeps_per_epoch_checkpoints(tmp_path: Path):
    extra = "  evaluation:\n    perEpoch: true\n    earlyStopping: {patience: 2}\n"
    assert problems(tmp_path, {"fine-tune.yaml": spec_text("fine-tune.yaml") + extra}) == []
    extra += "  checkpoint:\n    everySteps: 100\n"
    found = only(problems(tmp_path, {"fine-tune.yaml": spec_text("fine-tune.yaml") + extra}),
                 "early-stopping-needs-evaluation")
    assert found.path == "spec.checkpoint.everySteps" and found.hint == "drop checkpoint.everySteps"


@pytest.mark.parametrize("cadence", ["everySteps: 50", "perEpoch: true"])
def test_evaluations_without_validation_rows_are_a_warning(tmp_path: Path, cadence: str):
    dataset = spec_text("dataset.yaml") + "  split: {train: 0.9, validation: 0, test: 0.1}\n"
    fine_tune = spec_text("fine-tune.yaml") + f"  evaluation:\n    {cadence}\n"
    found = only(problems(tmp_path, {"fine-tune.yaml": fine_tune, "dataset.yaml": dataset}),
                 "no-validation-data")
    assert found.path == f"spec.evaluation.{cadence.split(':')[0]}"


def test_early_stopping_needs_validation_rows(tmp_path: Path):
    extra = ("  evaluation:\n    everySteps: 50\n    earlyStopping: {patience: 2}\n"
             "  checkpoint:\n    everySteps: 100\n")
    dataset = spec_text("dataset.yaml") + "  split: {train: 0.9, validation: 0, test: 0.1}\n"
    found = only(problems(tmp_path, {"fine-tune.yaml": spec_text("fine-tune.yaml") + extra,
                                     "dataset.yaml": dataset}), "early-stopping-needs-evaluation")
    assert "no dataset has a validation split" in found.message


def test_dpo_beta_without_dpo_is_a_warning(tmp_path: Path):
    found = only(problems(tmp_path, edit("fine-tune.yaml", "    learningRate: 2e-4",
                                         "    learningRate: 2e-4\n    dpoBeta: 0.2")), "ignored-setting")
    assert found.severity == "warning"


def test_two_fine_tunes_cannot_register_one_model(tmp_path: Path):
    second = spec_text("fine-tune.yaml").replace("name: sft", "name: sft-2") + "  register:\n    model: sft\n"
    found = only(problems(tmp_path, {"second.yaml": second}), "duplicate-registered-model")
    assert found.path == "spec.register.model"


def test_gates_must_name_computed_metrics(tmp_path: Path):
    found = only(problems(tmp_path, edit("evaluation.yaml", "- metric: rougeL", "- metric: bleu")),
                 "gate-metric-not-computed")
    assert found.path == "spec.gates[0].metric" and found.hint == "add bleu to metrics"


def test_a_min_gate_on_perplexity_is_a_warning(tmp_path: Path):
    text = spec_text("evaluation.yaml").replace("- metric: rougeL\n      min: 0.3",
                                                "- metric: perplexity\n      min: 5")
    found = only(problems(tmp_path, {"evaluation.yaml": text}), "gate-direction")
    assert found.hint == "did you mean max?"


def test_text_metrics_need_reference_answers(tmp_path: Path):
    dataset = spec_text("dataset.yaml").replace("type: chat", "type: text")
    fine_tune = spec_text("fine-tune.yaml").replace("  adapter:", "  method: pretrain\n  adapter:")
    found = only(problems(tmp_path, {"dataset.yaml": dataset, "fine-tune.yaml": fine_tune}),
                 "metric-needs-reference")
    assert found.path == "spec.metrics[1]"


def test_evaluation_of_an_empty_split(tmp_path: Path):
    dataset = spec_text("dataset.yaml") + "  split: {train: 0.9, validation: 0.1, test: 0}\n"
    found = only(problems(tmp_path, {"dataset.yaml": dataset}), "empty-split")
    assert "puts no rows in its test split" in found.message


def test_baseline_cannot_be_the_model_itself(tmp_path: Path):
    text = spec_text("evaluation.yaml") + "  baseline:\n    fineTune: sft\n"
    assert only(problems(tmp_path, {"evaluation.yaml": text}), "baseline-is-model")


def test_deployment_without_gates_is_refused_unless_allowed(tmp_path: Path):
    ungated = edit("deployment.yaml", "requires: [sft-quality]", "requires: []")
    found = only(problems(tmp_path, ungated), "ungated-deployment")
    assert found.hint == "add one to requires, or set allowUngated: true"
    allowed = edit("deployment.yaml", "requires: [sft-quality]", "allowUngated: true")
    assert problems(tmp_path / "b", allowed) == []


def test_deployment_requires_an_evaluation_of_its_own_model(tmp_path: Path):
    other = spec_text("fine-tune.yaml").replace("name: sft", "name: other")
    evaluation = spec_text("evaluation.yaml").replace("fineTune: sft", "fineTune: other")
    found = problems(tmp_path, {"other.yaml": other, "evaluation.yaml": evaluation})
    assert {p.code for p in found} == {"gate-for-other-model", "ungated-deployment"}


def test_two_deployments_cannot_move_one_alias(tmp_path: Path):
    second = spec_text("deployment.yaml").replace("name: bot", "name: bot-2")
    assert only(problems(tmp_path, {"second.yaml": second}), "duplicate-alias")


@pytest.mark.parametrize("revision, expected", [
    (None, "hf:// source without a revision"),
    ("main", "revision is not a commit sha"),
    ("0e9e39f249a16976918f6564b8830bc894c89659", None),
])
def test_hub_revisions_should_be_pinned(tmp_path: Path, revision, expected):
    text = spec_text("base-model.yaml").replace("file://models/tiny", "hf://org/model")
    if revision:
        text += f"  revision: {revision}\n"
    found = problems(tmp_path, {"base-model.yaml": text})
    if expected is None:
        assert found == []
    else:
        assert expected in only(found, "unpinned-revision").message
        assert only(problems(tmp_path / "s", {"base-model.yaml": text}, strict=True),
                    "unpinned-revision").severity == "error"


@pytest.mark.parametrize("policy, severity", [(None, "warning"), ("deny", "error"), ("allow", None)])
def test_trust_remote_code_follows_policy(tmp_path: Path, policy, severity):
    files = {"base-model.yaml": spec_text("base-model.yaml") + "  trustRemoteCode: true\n"}
    if policy:
        files["tuneops.yaml"] = f"policy:\n  trustRemoteCode: {policy}\n"
    found = problems(tmp_path, files)
    if severity is None:
        assert found == []
    else:  # the setting is the built-in Policy builtin-trust-remote-code
        violated = only(found, "policy-violated")
        assert violated.severity == severity and violated.path == "spec.trustRemoteCode"
        assert "violates Policy 'builtin-trust-remote-code': trustRemoteCode runs Python" in violated.message
        where = "tuneops.yaml:2:" if policy else "policy.trustRemoteCode (its default)"
        assert where in (violated.hint or "")
        assert "--approve builtin-trust-remote-code" in (violated.hint or "")


def test_policy_limits_sources_and_gpus(tmp_path: Path):
    files = {"tuneops.yaml": "policy:\n  allowedSources: [hf]\n  maxGpusPerFineTune: 4\n",
             "fine-tune.yaml": spec_text("fine-tune.yaml") + "  resources: {nodes: 2, gpusPerNode: 4}\n"}
    found = [p for p in problems(tmp_path, files) if p.code == "policy-violated"]
    assert sorted((p.resource, p.path, p.message.split(":")[0]) for p in found) == [
        ("BaseModel/tiny", "spec.source", "violates Policy 'builtin-allowed-sources'"),
        ("Dataset/chats", "spec.source", "violates Policy 'builtin-allowed-sources'"),
        ("FineTune/sft", "spec.resources.nodes", "violates Policy 'builtin-max-gpus-per-fine-tune'")]
    assert "at most 4 GPUs" in found[-1].message and "sources must be hf://" in found[0].message
    approved = problems(tmp_path / "approved", files, approval=Approval(
        frozenset({"builtin-max-gpus-per-fine-tune"}), "a one-off 8-GPU run", "ada"))
    assert [p.code for p in approved if p.resource == "FineTune/sft"] == ["policy-approved"]


def test_a_policy_may_not_take_a_builtin_name(tmp_path: Path):
    files = {"p.yaml": """
        apiVersion: tuneops.dev/v1alpha1
        kind: Policy
        metadata: {name: builtin-mine}
        spec: {rule: "true", message: "m"}
        """}
    found = only(problems(tmp_path, files), "policy-rule-invalid")
    assert "built-in policies'" in found.message and found.path == "metadata.name"


def test_local_files_must_exist(tmp_path: Path):
    files = {"base-model.yaml": spec_text("base-model.yaml") + "  chatTemplate: file://t.jinja\n",
             "dataset.yaml": spec_text("dataset.yaml").replace("data/chats.jsonl", "data/gone.jsonl")}
    found = problems(tmp_path, files)
    assert sorted(p.path for p in found if p.code == "missing-file") == ["spec.chatTemplate", "spec.source"]


def test_a_reference_to_the_wrong_kind_says_so(tmp_path: Path):
    found = only(problems(tmp_path, edit("fine-tune.yaml", "baseModel: tiny", "baseModel: chats")),
                 "missing-reference")
    assert found.hint == "'chats' is a Dataset, not a BaseModel"


def test_a_reference_to_an_invalid_spec_is_not_reported_twice(tmp_path: Path):
    found = problems(tmp_path, edit("dataset.yaml", "type: chat", "type: chatt"))
    assert [p.code for p in found] == ["invalid-value"]


def test_every_problem_code_used_in_the_code_is_documented():
    source = "\n".join(p.read_text() for p in (REPO_ROOT / "reconciler").rglob("*.py"))
    code = r'"([a-z][a-z0-9]*(?:-[a-z0-9]+)*)"'
    used = set(re.findall(r"(?:ERROR|WARNING),\s*" + code, source))  # problem(...), Problem(...)
    used |= set(re.findall(r"return " + code + ", ", source))  # pydantic error translation
    used |= set(re.findall(r"(?:error|problem)\(" + code, source))  # the loader's helpers
    assert used, "the pattern found no codes"
    assert used - set(CODES) == set()
    assert set(CODES) - used == set(), "codes documented but never reported"


@pytest.mark.parametrize("gate, code", [
    ("- metric: rougeL\n      min: 35", "gate-out-of-range"),
    ("- metric: perplexity\n      max: 0.5", "gate-out-of-range"),
])
def test_gate_bounds_must_fit_the_metric_scale(tmp_path: Path, gate, code):
    text = spec_text("evaluation.yaml").replace("- metric: rougeL\n      min: 0.3", gate)
    found = only(problems(tmp_path, {"evaluation.yaml": text}), code)
    assert "can never decide as meant" in found.message


def test_gates_on_the_training_split_are_a_warning(tmp_path: Path):
    text = spec_text("evaluation.yaml").replace("name: chats", "name: chats\n    split: train")
    assert only(problems(tmp_path, {"evaluation.yaml": text}), "gate-on-training-data").severity == "warning"


def test_required_evaluations_are_listed_once(tmp_path: Path):
    found = only(problems(tmp_path, edit("deployment.yaml", "[sft-quality]", "[sft-quality, sft-quality]")),
                 "invalid-value")
    assert "lists sft-quality more than once" in found.message


def test_adapter_settings_under_full_fine_tuning_are_a_warning(tmp_path: Path):
    found = only(problems(tmp_path, edit("fine-tune.yaml", "    r: 8", "    type: none\n    r: 8")),
                 "ignored-setting")
    assert found.severity == "warning"
    assert problems(tmp_path / "b", edit("fine-tune.yaml", "    r: 8", "    type: none")) == []


def test_vllm_without_a_gpu_on_kubernetes_is_a_warning(tmp_path: Path):
    found = only(problems(tmp_path, {"tuneops.yaml": "backend: kubernetes\n"}), "needs-gpu")
    assert found.severity == "warning" and found.path == "spec.runtime"
    assert problems(tmp_path / "local", {}) == []  # the local backend serves with transformers


def test_dataset_helpers_resolve_columns_and_format():
    from reconciler.specs.dataset import DataSchema, DatasetSpec

    schema = DataSchema.model_validate({"type": "instruction", "columns": {"output": "answer"}})
    assert (schema.column("instruction"), schema.column("output")) == ("instruction", "answer")
    spec = DatasetSpec.model_validate({"source": "file://data/rows.ndjson"})
    assert spec.resolved_format == "jsonl"
    assert DatasetSpec.model_validate({"source": "hf://org/data"}).resolved_format is None


def with_tokens(tokens: str, modules: str | None = None) -> dict[str, str]:
    files = edit("base-model.yaml", "  source: file://models/tiny",
                 f"  source: file://models/tiny\n  tokens: {tokens}")
    if modules is not None:
        files |= edit("fine-tune.yaml", "    r: 8", f"    r: 8\n    modulesToSave: {modules}")
    return files


def test_added_tokens_need_the_embeddings_trained(tmp_path: Path):
    found = only(problems(tmp_path, with_tokens("{add: ['<tool_call>']}")), "untrained-new-tokens")
    assert found.severity == "error" and found.path == "spec.adapter" and found.position.line == 9
    assert found.message == ("BaseModel 'tiny' adds tokens (<tool_call>), but this lora adapter does not "
                             "train the embedding and output head that hold them")
    assert found.hint == "add them to adapter.modulesToSave: [embed_tokens, lm_head]"


def test_added_tokens_need_the_head_trained_too(tmp_path: Path):
    found = only(problems(tmp_path, with_tokens("{add: ['<x>']}", "[embed_tokens]")), "untrained-new-tokens")
    assert found.path == "spec.adapter.modulesToSave" and "does not train the output head" in found.message


@pytest.mark.parametrize("modules", ["[embed_tokens, lm_head]", "[model.embed_tokens, lm_head]",
                                     "[wte, lm_head]", "[embed_in, embed_out]"])
def test_added_tokens_with_embeddings_trained_are_fine(tmp_path: Path, modules: str):
    assert problems(tmp_path, with_tokens("{add: ['<x>'], pad: '<pad>'}", modules)) == []


def test_special_tokens_that_may_be_new_are_a_warning(tmp_path: Path):
    found = only(problems(tmp_path, with_tokens("{pad: '<|pad|>', eos: '<|im_end|>'}")),
                 "untrained-new-tokens")
    assert found.severity == "warning" and "sets pad, eos tokens; if any is new" in found.message


def test_full_fine_tuning_trains_every_embedding(tmp_path: Path):
    files = with_tokens("{add: ['<x>']}") | edit("fine-tune.yaml", "    r: 8", "    type: none")
    assert problems(tmp_path, files) == []


def test_added_tokens_are_checked_through_from_fine_tune(tmp_path: Path):
    second = spec_text("fine-tune.yaml").replace("name: sft", "name: sft-2").replace(
        "baseModel: tiny", "fromFineTune: sft").replace("    r: 8", "    r: 8\n    modulesToSave: [lm_head]")
    files = with_tokens("{add: ['<x>']}", "[embed_tokens, lm_head]") | {"second.yaml": second}
    found = problems(tmp_path, files)
    problem = only(found, "untrained-new-tokens")
    assert problem.resource == "FineTune/sft-2" and "does not train the embedding that" in problem.message


def test_fail_on_contamination_needs_a_fine_tune_whose_training_data_is_known(tmp_path: Path):
    text = spec_text("evaluation.yaml").replace("fineTune: sft", "baseModel: tiny").replace(
        "name: chats", "name: chats\n  failOnContamination: true").replace("sft-quality", "base-quality")
    found = only(problems(tmp_path, {"base-evaluation.yaml": text}), "contamination-of-base-model")
    assert found.severity == "error" and "base model" in found.message
    fixed = text.replace("baseModel: tiny", "fineTune: sft")
    assert [p.code for p in problems(tmp_path / "fixed", {"base-evaluation.yaml": fixed})] == []
