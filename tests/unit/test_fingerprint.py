"""Fingerprints change exactly when what is produced changes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.fingerprint import RECIPE_VERSIONS, canonical_json, fingerprint_inputs
from reconciler.graph import DependencyGraph
from reconciler.sources_digest import MISSING, source_digests
from reconciler.specs.base import ResourceId
from reconciler.specs.validate import validate_path
from tests.conftest import VALID_SPECS, write_repo

DATASET = ResourceId("Dataset", "chats")
BASE = ResourceId("BaseModel", "tiny")
FINE_TUNE = ResourceId("FineTune", "sft")
EVALUATION = ResourceId("Evaluation", "sft-quality")
DEPLOYMENT = ResourceId("Deployment", "bot")


def fingerprints_of(root: Path) -> dict[ResourceId, str]:
    result = validate_path(root)
    assert result.valid, [p.text() for p in result.errors]
    graph = DependencyGraph.from_specs(result.specs)
    inputs = fingerprint_inputs(result.specs, graph, source_digests(result.specs))
    return {rid: item.fingerprint for rid, item in inputs.items()}


def edited(tmp_path: Path, name: str, file: str, old: str, new: str) -> dict[ResourceId, str]:
    files = dict(VALID_SPECS)
    text = textwrap.dedent(files[file])
    assert old in text, f"{old!r} not in {file}"
    files[file] = text.replace(old, new)
    return fingerprints_of(write_repo(tmp_path / name, files))


@pytest.fixture
def original(tmp_path: Path) -> dict[ResourceId, str]:
    return fingerprints_of(write_repo(tmp_path / "original", VALID_SPECS))


def changed(before: dict, after: dict) -> set[ResourceId]:
    return {rid for rid in before if before[rid] != after[rid]}


def test_every_resource_has_a_distinct_sha256(original):
    assert set(original) == {DATASET, BASE, FINE_TUNE, EVALUATION, DEPLOYMENT}
    assert all(len(fp) == 64 and int(fp, 16) >= 0 for fp in original.values())
    assert len(set(original.values())) == 5


def test_the_same_specs_written_again_give_the_same_fingerprints(tmp_path, original):
    assert fingerprints_of(write_repo(tmp_path / "again", VALID_SPECS)) == original


def test_descriptions_labels_and_annotations_change_nothing(tmp_path, original):
    after = edited(tmp_path, "described", "fine-tune.yaml", "  name: sft\n",
                   "  name: sft\n  description: tuned on chats\n  labels:\n    team: support\n"
                   "  annotations:\n    owner: me\n")
    assert after == original


def test_operational_fields_change_nothing(tmp_path, original):
    after = edited(tmp_path, "replicas", "deployment.yaml", "requires: [sft-quality]\n",
                   "requires: [sft-quality]\n  replicas: 3\n  alias: staging\n")
    assert after == original
    after = edited(tmp_path, "scheduling", "fine-tune.yaml", "learningRate: 2e-4\n",
                   "learningRate: 2e-4\n  scheduling:\n    queue: gpu\n  checkpoint:\n    keep: 5\n")
    assert after == original


def test_a_hyperparameter_changes_the_fine_tune_and_everything_downstream(tmp_path, original):
    after = edited(tmp_path, "lr", "fine-tune.yaml", "learningRate: 2e-4", "learningRate: 1e-4")
    assert changed(original, after) == {FINE_TUNE, EVALUATION, DEPLOYMENT}


def test_fields_added_later_change_nothing_at_their_default_and_count_otherwise(tmp_path, original):
    """Upgrading to a release that adds a field rebuilds nothing: at its default (what specs built
    before it already got) the field stays out of the fingerprint; another value is a change."""
    from reconciler.fingerprint import produced_spec
    from reconciler.specs.validate import validate_path as load

    specs = load(write_repo(tmp_path / "read", VALID_SPECS)).specs
    dataset = produced_spec(specs.get(DATASET).resource)
    fine_tune = produced_spec(specs.get(FINE_TUNE).resource)
    assert "layout" not in dataset["schema"] and "roles" not in dataset["schema"]
    assert "trainOn" not in fine_tune["training"]
    written_out = edited(tmp_path, "defaults", "dataset.yaml", "    type: chat\n",
                         "    type: chat\n    layout: messages\n")
    assert written_out == original
    sharegpt = edited(tmp_path, "sharegpt", "dataset.yaml", "    type: chat\n",
                      "    type: chat\n    layout: sharegpt\n")
    assert changed(original, sharegpt) == {DATASET, FINE_TUNE, EVALUATION, DEPLOYMENT}
    last_turn = edited(tmp_path, "last-turn", "fine-tune.yaml", "learningRate: 2e-4",
                       "learningRate: 2e-4\n    trainOn: lastAssistantTurn")
    assert changed(original, last_turn) == {FINE_TUNE, EVALUATION, DEPLOYMENT}


def test_a_default_written_out_is_the_same_spec(tmp_path, original):
    # 2e-4 is 0.0002, and the default epochs (3.0) written as the integer 3 is the same value
    after = edited(tmp_path, "explicit", "fine-tune.yaml", "learningRate: 2e-4",
                   "learningRate: 0.0002\n    epochs: 3")
    assert after == original
    after = edited(tmp_path, "alpha", "fine-tune.yaml", "r: 8", "r: 8\n    alpha: 16")
    assert after == original


def test_key_order_and_formatting_do_not_matter(tmp_path, original):
    files = dict(VALID_SPECS)
    files["fine-tune.yaml"] = """
        spec:
          training: {learningRate: 0.0002}
          adapter: {r: 8}
          datasets: [{name: chats}]
          baseModel: tiny
        metadata: {name: sft}
        kind: FineTune
        apiVersion: tuneops.dev/v1alpha1
        """
    assert fingerprints_of(write_repo(tmp_path / "reordered", files)) == original


def test_a_changed_data_file_reaches_everything_downstream_of_the_dataset(tmp_path, original):
    files = dict(VALID_SPECS)
    files["data/chats.jsonl"] += '{"messages": [{"role": "user", "content": "more"}]}\n'
    after = fingerprints_of(write_repo(tmp_path / "appended", files))
    assert changed(original, after) == {DATASET, FINE_TUNE, EVALUATION, DEPLOYMENT}


def test_a_local_model_folder_is_hashed_by_content(tmp_path, original):
    root = write_repo(tmp_path / "model", {**VALID_SPECS, "models/tiny/config.json": "{}"})
    first = fingerprints_of(root)
    assert first[BASE] != original[BASE]  # a folder with files is not a missing folder
    (root / "models/tiny/config.json").write_text('{"hidden_size": 8}')
    second = fingerprints_of(root)
    assert changed(first, second) == {BASE, FINE_TUNE, EVALUATION, DEPLOYMENT}


def test_a_missing_local_model_folder_has_a_stable_digest(tmp_path):
    result = validate_path(write_repo(tmp_path / "r", VALID_SPECS))
    assert source_digests(result.specs)[(BASE, "spec.source")] == MISSING


def test_the_digest_cache_is_used_and_notices_changes(tmp_path):
    root = write_repo(tmp_path / "cached", VALID_SPECS)
    state = root / ".tuneops"
    state.mkdir()
    result = validate_path(root)
    first = source_digests(result.specs, state)
    assert (state / "digests.json").is_file()
    assert source_digests(result.specs, state) == first
    (root / "data/chats.jsonl").write_text('{"messages": []}\n')
    assert source_digests(result.specs, state) != first


def test_a_recipe_bump_changes_only_that_kind_and_its_dependents(tmp_path, original, monkeypatch):
    monkeypatch.setitem(RECIPE_VERSIONS, "Evaluation", RECIPE_VERSIONS["Evaluation"] + 1)
    after = fingerprints_of(write_repo(tmp_path / "bumped", VALID_SPECS))
    assert changed(original, after) == {EVALUATION, DEPLOYMENT}


def test_canonical_json_is_one_spelling_per_meaning():
    assert canonical_json({"b": 1, "a": [1.0, "é"]}) == '{"a":[1.0,"é"],"b":1}'


@pytest.mark.parametrize("new", ["- name: chats\n      maxSamples: 100",
                                 "- name: chats\n  evaluation: {perEpoch: true}"])
def test_a_row_cap_and_a_per_epoch_cadence_are_part_of_the_fine_tune(tmp_path, original, new):
    """Added later: specs without them keep their fingerprints; set, they change what is trained."""
    after = edited(tmp_path, "knob", "fine-tune.yaml", "- name: chats", new)
    assert changed(original, after) == {FINE_TUNE, EVALUATION, DEPLOYMENT}


def test_a_task_yaml_and_the_data_it_reads_are_part_of_the_evaluation(tmp_path, original):
    """Editing a benchmark's task YAML, or its local data, re-evaluates; nothing upstream changes."""
    evaluation = textwrap.dedent(VALID_SPECS["evaluation.yaml"]) + "  tasks:\n    - path: evals/mc.yaml\n"
    task = "task: mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: mc.jsonl\n"
    root = write_repo(tmp_path / "tasks", {**VALID_SPECS, "evaluation.yaml": evaluation,
                                           "evals/mc.yaml": task, "evals/mc.jsonl": '{"q": 1}\n'})
    first = fingerprints_of(root)
    assert changed(original, first) == {EVALUATION, DEPLOYMENT}
    (root / "evals/mc.yaml").write_text(task + "num_fewshot: 2\n")
    second = fingerprints_of(root)
    assert changed(first, second) == {EVALUATION, DEPLOYMENT}
    (root / "evals/mc.jsonl").write_text('{"q": 2}\n')
    assert changed(second, fingerprints_of(root)) == {EVALUATION, DEPLOYMENT}
