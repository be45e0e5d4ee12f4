"""The alignment methods imported: LLaMA-Factory's `stage: kto|rm` and `pref_loss: orpo`, each to
its method, data type and β with the key it came from; and what stays unsupported, with why. The
typical configs (alignment_configs.py) are also validated by test_round_trip.py."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from reconciler.importers import import_config, write_result
from reconciler.specs.validate import validate_paths
from tests.unit.importers.configs import write_config, write_project


@pytest.fixture(autouse=True)
def no_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_project(tmp_path / "project")


def run(root: Path, tool: str, config: str, out: str = "specs"):
    """Import `config` (YAML text) as if the tool ran in `root`; write and validate the specs."""
    path = root / "configs" / "config.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(config).lstrip())
    result = import_config(tool, path, root / out, cwd=root)
    written = write_result(result, root / out, force=True)
    validation = validate_paths([p for p in written if p.suffix == ".yaml"])
    return result, validation


def typical(root: Path, tool: str, shape: str):
    config = write_config(root, tool, shape)
    result = import_config(tool, config, root / "specs", cwd=root)
    written = write_result(result, root / "specs")
    return result, validate_paths([p for p in written if p.suffix == ".yaml"])


def specs(result, name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(result.texts()[name]) if d]


def fine_tune(result) -> dict:
    return specs(result, "fine-tune.yaml")[0]["spec"]


def datasets(result) -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"] for d in specs(result, "datasets.yaml")}


def line(result, name: str, starts: str) -> str:
    found = [t for t in result.texts()[name].splitlines() if t.strip().startswith(starts)]
    assert found, f"no line starting with {starts!r} in {name}"
    return found[0]


def untranslated(result) -> dict[str, tuple[str, str]]:
    return {u.key: (u.category, u.reason) for u in result.untranslated}


# --- LLaMA-Factory -----------------------------------------------------------------------------


def test_llamafactory_kto_reads_kto_tag_as_the_label(root):
    result, validation = typical(root, "llamafactory", "kto")
    assert validation.errors == []
    spec = fine_tune(result)
    assert spec["method"] == "kto" and spec["training"]["beta"] == 0.1
    assert datasets(result)["fruit-feedback"]["schema"] == {
        "type": "binary-feedback",
        "columns": {"prompt": "instruction", "completion": "output", "label": "kto_tag"},
    }
    assert "LLaMA-Factory: dataset_info.fruit_feedback.columns.kto_tag" in line(
        result, "datasets.yaml", "label: kto_tag"
    )
    assert untranslated(result)["kto_chosen_weight"][0] == "ignored"


def test_llamafactory_kto_conversations_are_reported(root):
    info = json.loads((root / "data" / "dataset_info.json").read_text())
    info["chats_kto"] = {
        "file_name": "legacy.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "kto_tag": "label"},
    }
    (root / "data" / "dataset_info.json").write_text(json.dumps(info))
    result, _ = run(root, "llamafactory", "model_name_or_path: org/model\nstage: kto\ndataset: chats_kto\n")
    category, reason = untranslated(result)["dataset_info.chats_kto.formatting"]
    assert category == "unsupported" and "KTO rows as conversations" in reason


def test_llamafactory_orpo_is_stage_dpo_with_the_orpo_loss(root):
    result, validation = typical(root, "llamafactory", "orpo")
    assert validation.errors == []
    spec = fine_tune(result)
    assert spec["method"] == "orpo" and spec["training"]["beta"] == 0.25
    assert "LLaMA-Factory: stage, pref_loss" in line(result, "fine-tune.yaml", "method: orpo")
    assert "ORPO's λ" in line(result, "fine-tune.yaml", "beta: 0.25")
    assert result.mapped["pref_loss"] == ["FineTune.spec.method"]


@pytest.mark.parametrize("loss", ["simpo", "ipo", "hinge"])
def test_other_preference_losses_stay_unsupported(root, loss):
    result, _ = run(
        root,
        "llamafactory",
        f"model_name_or_path: org/model\nstage: dpo\npref_loss: {loss}\ndataset: fruit_pairs\n",
    )
    category, reason = untranslated(result)["pref_loss"]
    assert category == "unsupported" and f"{loss} loss is not offered" in reason and "needs review" in reason
    assert fine_tune(result)["method"] == "dpo"


def test_llamafactory_rm_is_a_reward_model_without_evaluations(root):
    result, validation = typical(root, "llamafactory", "reward")
    assert validation.errors == []
    assert fine_tune(result)["method"] == "reward"
    assert datasets(result)["fruit-pairs"]["schema"]["type"] == "preference"
    assert "evaluations.yaml" not in result.files and list(datasets(result)) == ["fruit-pairs"]
    reported = untranslated(result)
    assert reported["eval_dataset"][0] == "unsupported" and "val_size" in reported["eval_dataset"][1]


def test_llamafactory_ppo_stays_unsupported_and_points_at_grpo(root):
    result, validation = run(
        root,
        "llamafactory",
        "model_name_or_path: org/model\nstage: ppo\nreward_model: saves/rm\nppo_epochs: 4\n"
        "dataset: support_chats\n",
    )
    assert validation.errors == []
    reported = untranslated(result)
    assert reported["stage"][0] == "unsupported"
    assert "PPO is not offered" in reported["stage"][1] and "grpo" in reported["stage"][1]
    assert "rewardModel" in reported["reward_model"][1] and reported["ppo_epochs"][0] == "unsupported"
    assert fine_tune(result)["method"] == "sft"
