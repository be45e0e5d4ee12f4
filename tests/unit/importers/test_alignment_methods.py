"""The alignment methods imported: axolotl's `rl: kto|orpo|grpo` and `reward_model`, LLaMA-Factory's
`stage: kto|rm` and `pref_loss: orpo`, each to its method, data type and β with the key it came
from; GRPO's reward functions only where tuneops can read them; and what stays unsupported, with
why. The typical configs (alignment_configs.py) are also validated by test_round_trip.py."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from reconciler.importers import import_config, write_result
from reconciler.importers.fine_tune import GRPO_DEFAULTS, METHODS
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


AXOLOTL_HEAD = """
base_model: org/model
learning_rate: 0.0001
micro_batch_size: 2
"""


# --- axolotl -----------------------------------------------------------------------------------


def test_axolotl_kto_is_kto_on_binary_feedback(root):
    result, validation = typical(root, "axolotl", "kto")
    assert validation.errors == []
    spec = fine_tune(result)
    assert spec["method"] == "kto" and spec["training"]["beta"] == 0.2
    assert "# axolotl: rl" in line(result, "fine-tune.yaml", "method: kto")
    assert "# axolotl: rl_beta" in line(result, "fine-tune.yaml", "beta: 0.2")
    data = datasets(result)
    assert data["feedback"]["schema"] == {
        "type": "binary-feedback"
    }  # llama3.ultra: prompt, completion, label
    assert data["feedback-qa"]["schema"] == {
        "type": "binary-feedback",
        "columns": {"prompt": "question", "completion": "answer", "label": "good"},
    }
    assert "# axolotl: datasets[1].type.field_label" in line(result, "datasets.yaml", "label: good")
    assert [e["spec"]["dataset"]["name"] for e in specs(result, "evaluations.yaml")] == [
        "feedback",
        "feedback-qa",
    ]
    reported = untranslated(result)
    assert reported["kto_desirable_weight"][0] == "ignored" and "1.0" in reported["kto_desirable_weight"][1]
    assert any("llama3's tokens" in note for note in result.notes)


@pytest.mark.parametrize(
    ("kind", "columns"),
    [("chatml.argilla", {"prompt": "instruction"}), ("llama3.intel", {"prompt": "question"}), (None, None)],
)
def test_axolotl_kto_types_name_the_prompt_column(root, kind, columns):
    typed = f"\n    type: {kind}" if kind else ""
    result, validation = run(
        root, "axolotl", AXOLOTL_HEAD + f"rl: kto\ndatasets:\n  - path: data/feedback.jsonl{typed}\n"
    )
    assert validation.errors == []
    schema = datasets(result)["feedback"]["schema"]
    assert schema["type"] == "binary-feedback" and schema.get("columns") == columns
    if kind is None:
        assert "trl's columns prompt, completion, label" in line(
            result, "datasets.yaml", "type: binary-feedback"
        )


def test_axolotl_kto_conversations_and_uneven_weights_are_reported(root):
    result, _ = run(
        root,
        "axolotl",
        AXOLOTL_HEAD + "rl: kto\nkto_desirable_weight: 1.33\ndatasets:\n  - path: data/feedback.jsonl\n"
        "    type: llama3.argilla_chat\n",
    )
    reported = untranslated(result)
    assert reported["kto_desirable_weight"][0] == "unsupported"
    assert "conversations" in reported["datasets[0].type"][1]
    assert "prompt, completion, label" in reported["datasets[0].type"][1]


def test_axolotl_orpo_takes_orpo_alpha_as_its_beta(root):
    result, validation = typical(root, "axolotl", "orpo")
    assert validation.errors == []
    spec = fine_tune(result)
    assert spec["method"] == "orpo" and spec["training"]["beta"] == 0.2
    assert "axolotl: orpo_alpha (ORPO's λ" in line(result, "fine-tune.yaml", "beta: 0.2")
    data = datasets(result)
    assert data["pairs"]["schema"] == {"type": "preference"}  # no type: trl's prompt, chosen, rejected
    category, reason = untranslated(result)["datasets[1].type"]
    assert category == "unsupported" and "chat_template.argilla reads its rows as conversations" in reason


def test_beta_is_the_first_key_axolotl_reads(root):
    result, _ = run(
        root,
        "axolotl",
        AXOLOTL_HEAD + "rl: orpo\norpo_alpha: 0.3\nrl_beta: 0.2\ntrl:\n  beta: 0.15\n"
        "datasets:\n  - path: data/pairs.jsonl\n",
    )
    assert fine_tune(result)["training"]["beta"] == 0.15
    assert result.mapped["trl.beta"] == ["FineTune.spec.training.beta"]
    reported = untranslated(result)
    assert reported["rl_beta"] == ("ignored", "trl.beta is set, which axolotl passes as β first")
    assert reported["orpo_alpha"] == ("ignored", "trl.beta is set, which axolotl passes as β first")


def test_dpo_still_maps_its_types_and_beta(root):
    result, validation = run(
        root,
        "axolotl",
        AXOLOTL_HEAD
        + "rl: dpo\nrl_beta: 0.05\ndatasets:\n  - path: data/pairs.jsonl\n    type: chatml.intel\n",
    )
    assert validation.errors == []
    assert fine_tune(result)["method"] == "dpo" and fine_tune(result)["training"]["beta"] == 0.05
    assert datasets(result)["pairs"]["schema"] == {"type": "preference", "columns": {"prompt": "question"}}


def test_axolotl_grpo_generations_and_rewards(root):
    result, validation = typical(root, "axolotl", "grpo")
    assert validation.errors == []
    spec = fine_tune(result)
    assert spec["method"] == "grpo"
    assert spec["grpo"] == {
        "beta": 0.001,
        "numGenerations": 4,
        "maxCompletionLength": 128,
        "temperature": 0.7,
        "useVllm": True,
    }
    assert spec["rewards"] == [
        {"python": "rewards/math.py:accuracy", "weight": 1.0},
        {"python": "rewards/math.py:brevity", "weight": 0.5},
    ]
    assert "trl.reward_funcs (specs.rewards.math.accuracy)" in line(
        result, "fine-tune.yaml", "- python: rewards/math.py:accuracy"
    )
    assert "# axolotl: trl.num_generations" in line(result, "fine-tune.yaml", "numGenerations: 4")
    assert "colocated" in line(result, "fine-tune.yaml", "useVllm: true")
    assert datasets(result)["math"]["schema"] == {"type": "prompt"}
    assert "evaluations.yaml" not in result.files  # GRPO's prompts need not have answers
    reported = untranslated(result)
    assert reported["trl.vllm_server_host"][0] == "ignored" and reported["vllm"][0] == "unsupported"
    assert any("function(prompts, completions, **columns)" in note for note in result.notes)


def test_grpo_settings_left_to_trl_are_named_with_tuneops_defaults(root):
    (root / "specs").mkdir()
    (root / "specs" / "score.py").write_text("def ok(prompts, completions, **columns):\n    return [1.0]\n")
    result, validation = run(
        root,
        "axolotl",
        AXOLOTL_HEAD + "rl: grpo\ntrl:\n  num_generations: 2\n  reward_funcs: [specs.score.ok]\n"
        "datasets:\n  - path: data/math.jsonl\n",
    )
    assert validation.errors == []
    assert fine_tune(result)["rewards"] == [{"python": "score.py:ok"}]
    note = next(n for n in result.notes if n.startswith("trl.max_completion_length"))
    assert "trl.temperature" in note and "trl.beta" in note and "trl.num_generations" not in note
    assert f"grpo.temperature: {GRPO_DEFAULTS['temperature']}" in note


def test_a_reward_file_beside_the_config_maps_when_the_specs_go_beside_it(root):
    (root / "rewards.py").write_text("def correct(prompts, completions, **columns):\n    return [1.0]\n")
    config = AXOLOTL_HEAD + (
        "rl: grpo\ntrl:\n  num_generations: 2\n  reward_funcs: [rewards.correct]\n"
        "datasets:\n  - path: data/math.jsonl\n"
    )
    result, validation = run(root, "axolotl", config)  # specs/ cannot reach ../rewards.py
    category, reason = untranslated(result)["trl.reward_funcs: rewards.correct"]
    assert category == "unsupported" and "outside the spec folder" in reason and "move rewards.py" in reason
    assert untranslated(result)["trl.reward_funcs"][0] == "unsupported"
    assert "rewards" not in fine_tune(result)
    assert [p.message for p in validation.errors] == [
        "method grpo needs rewards to maximise"
    ]  # nothing is guessed: the spec says what is missing
    beside, validation = run(root, "axolotl", config, out=".")
    assert validation.errors == []
    assert fine_tune(beside)["rewards"] == [{"python": "rewards.py:correct"}]


@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        ("OpenAssistant/reward-model-deberta-v3-large-v2", None, "rewardModel: {fineTune"),
        ("trl.rewards.accuracy_reward", None, "not a file of the repository"),
        (
            "specs.bad.score",
            "def score(completions, **kwargs):\n    return [0.0]\n",
            "def score_tuneops(prompts",
        ),
        (
            "specs.bad.score",
            "def score(completions, prompts, **kw):\n    return [0.0]\n",
            "takes (completions, prompts) first",
        ),
        (
            "specs.bad.score",
            "def other(prompts, completions):\n    return [0.0]\n",
            "defines no function 'score'",
        ),
        ("specs.bad.score", "def score(prompts, completions:\n", "cannot be read as Python"),
    ],
)
def test_reward_functions_tuneops_cannot_call_are_reported_with_what_to_write(root, name, source, expected):
    if source is not None:
        (root / "specs").mkdir()
        (root / "specs" / "bad.py").write_text(source)
    result, _ = run(
        root,
        "axolotl",
        AXOLOTL_HEAD + f"rl: grpo\ntrl:\n  reward_funcs: [{name}]\ndatasets:\n  - path: data/math.jsonl\n",
    )
    category, reason = untranslated(result)[f"trl.reward_funcs: {name}"]
    assert category == "unsupported" and expected in reason
    assert "rewards" not in fine_tune(result)


def test_reward_weights_follow_their_functions(root):
    (root / "specs").mkdir()
    (root / "specs" / "score.py").write_text("def a(prompts, completions, **c):\n    return [1.0]\n")
    result, _ = run(
        root,
        "axolotl",
        AXOLOTL_HEAD + "rl: grpo\ntrl:\n  num_generations: 2\n  reward_funcs: [specs.score.a, org/rm]\n"
        "  reward_weights: [2.0, 1.0]\ndatasets:\n  - path: data/math.jsonl\n",
    )
    assert fine_tune(result)["rewards"] == [{"python": "score.py:a", "weight": 2.0}]
    assert untranslated(result)["trl.reward_funcs: org/rm"][0] == "unsupported"


def test_a_grpo_transform_type_is_reported(root):
    result, _ = run(
        root,
        "axolotl",
        AXOLOTL_HEAD + "rl: grpo\ndatasets:\n  - path: data/math.jsonl\n    type: rewards.gsm8k_transform\n",
    )
    category, reason = untranslated(result)["datasets[0].type"]
    assert category == "unsupported" and "Python transform" in reason
    assert datasets(result)["math"]["schema"] == {"type": "prompt"}


def test_axolotl_reward_model(root):
    result, validation = typical(root, "axolotl", "reward")
    assert validation.errors == []
    assert fine_tune(result)["method"] == "reward"
    assert "# axolotl: reward_model" in line(result, "fine-tune.yaml", "method: reward")
    assert datasets(result)["bt-pairs"]["schema"] == {"type": "preference", "columns": {"prompt": "input"}}
    assert result.mapped["num_labels"] == ["FineTune.spec.method"]
    assert "evaluations.yaml" not in result.files  # a reward model does not generate
    assert any(
        n.startswith("val_set_size: no Evaluation was written for method reward") for n in result.notes
    )


def test_a_reward_model_with_test_data_or_many_labels_is_reported(root):
    result, validation = run(
        root,
        "axolotl",
        AXOLOTL_HEAD + "reward_model: true\nnum_labels: 3\ndatasets:\n  - path: data/bt-pairs.jsonl\n"
        "    type: bradley_terry.chat_template\ntest_datasets:\n  - path: data/pairs.jsonl\n",
    )
    assert validation.errors == []
    reported = untranslated(result)
    assert reported["num_labels"][0] == "unsupported" and "num_labels: 1" in reported["num_labels"][1]
    assert reported["test_datasets"][0] == "unsupported" and "val_set_size" in reported["test_datasets"][1]
    assert list(datasets(result)) == ["bt-pairs"]


@pytest.mark.parametrize("rl", ["simpo", "ipo", "gdpo"])
def test_methods_tuneops_lacks_stay_unsupported_with_the_methods_it_has(root, rl):
    result, validation = run(
        root,
        "axolotl",
        AXOLOTL_HEAD + f"rl: {rl}\nrl_beta: 0.1\nsimpo_gamma: 0.5\nrpo_alpha: 1.0\ncpo_alpha: 1.0\n"
        "datasets:\n  - path: data/support.jsonl\n    type: chat_template\n",
    )
    assert validation.errors == []
    reported = untranslated(result)
    assert reported["rl"][1].startswith(f"rl: {rl} is not offered (methods: {METHODS})")
    assert "needs review" in reported["rl"][1] and fine_tune(result)["method"] == "sft"
    assert METHODS == "sft, dpo, pretrain, grpo, kto, orpo, reward"
    for key in ("simpo_gamma", "rpo_alpha", "cpo_alpha"):
        assert reported[key][0] == "unsupported" and METHODS in reported[key][1]
    assert reported["rl_beta"] == ("unsupported", f"a setting of rl: {rl}")


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
