"""Typical axolotl and LLaMA-Factory configs imported, written and validated with the real
validator: the values land in the right fields with their source key beside them, and every key
of each config is mapped or reported, none dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reconciler.importers import import_config, write_result
from reconciler.importers.result import is_covered
from reconciler.specs.validate import validate_paths
from tests.unit.importers.configs import CONFIGS, config_keys, write_config, write_project


@pytest.fixture(autouse=True)
def no_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty Hugging Face cache: what validation reads of a model never depends on the machine."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


def imported(tmp_path: Path, tool: str, shape: str, extra: str = ""):
    root = write_project(tmp_path / "project")
    config = write_config(root, tool, shape, extra)
    out = root / "specs"
    result = import_config(tool, config, out, cwd=root)
    written = write_result(result, out)
    validation = validate_paths([p for p in written if p.suffix == ".yaml"])
    return result, out, validation


def documents(out: Path, name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((out / name).read_text()) if d]


def spec(out: Path, name: str) -> dict:
    return documents(out, name)[0]["spec"]


def line_of(out: Path, name: str, text: str) -> str:
    lines = [line for line in (out / name).read_text().splitlines() if line.strip().startswith(text)]
    assert lines, f"no line starting with {text!r} in {name}"
    return lines[0]


@pytest.mark.parametrize(("tool", "shape"), sorted(CONFIGS))
def test_typical_configs_import_to_specs_that_validate(tmp_path, tool, shape):
    result, out, validation = imported(tmp_path, tool, shape)
    assert validation.errors == [], [p.message for p in validation.errors]
    kinds = sorted(d["kind"] for name in result.files for d in documents(out, name))
    assert kinds.count("BaseModel") == 1 and kinds.count("FineTune") == 1 and "Dataset" in kinds
    # every typical config here holds data out; an Evaluation scores it, but not a reward model
    # (it does not generate) or GRPO (its prompts need not have answers)
    assert ("Evaluation" in kinds) == (shape not in ("grpo", "reward"))


@pytest.mark.parametrize(("tool", "shape"), sorted(CONFIGS))
def test_every_key_is_mapped_or_reported(tmp_path, tool, shape):
    result, _, _ = imported(tmp_path, tool, shape)
    accounted = result.accounted()
    keys = config_keys(tool, shape)
    assert [key for key in keys if not is_covered(key, accounted)] == []
    # and nothing is claimed that the config does not have (a key, or a mapping or list holding keys)
    prefixes = {key[:i] for key in keys for i in range(1, len(key) + 1)}
    assert (
        sorted(
            k
            for k in accounted
            if k not in prefixes and not k.startswith(("plugins: ", "dataset: ", "eval_dataset: "))
        )
        == []
    )


@pytest.mark.parametrize(("tool", "shape"), sorted(CONFIGS))
def test_an_unknown_key_is_reported_not_dropped(tmp_path, tool, shape):
    result, _, validation = imported(tmp_path, tool, shape, extra="frobnicate_level: 3\n")
    unknown = [u for u in result.untranslated if u.category == "unknown"]
    assert [u.key for u in unknown] == ["frobnicate_level"]
    assert validation.valid


def test_axolotl_lora_sft_fields_and_comments(tmp_path):
    result, out, _ = imported(tmp_path, "axolotl", "lora")
    fine_tune = spec(out, "fine-tune.yaml")
    assert fine_tune["adapter"] == {
        "type": "lora",
        "r": 32,
        "alpha": 64,
        "dropout": 0.05,
        "targetModules": "all-linear",
    }
    training = fine_tune["training"]
    assert training["learningRate"] == 2e-4  # a string to PyYAML, a number to axolotl
    assert (training["packing"], training["attention"], training["kernels"]) == (
        True,
        "flash_attention_2",
        "liger",
    )
    assert (training["maxSeqLength"], training["microBatchSize"], training["gradientAccumulation"]) == (
        4096,
        2,
        4,
    )
    assert training["optimizer"] == "adamw_bnb_8bit" and training["tf32"] is True
    assert fine_tune["evaluation"] == {"perEpoch": True} and fine_tune["checkpoint"] == {
        "perEpoch": True,
        "keep": 3,
    }
    assert "# axolotl: lora_r" in line_of(out, "fine-tune.yaml", "r: 32")
    assert "# axolotl: sample_packing" in line_of(out, "fine-tune.yaml", "packing: true")
    assert "# axolotl: flash_attention" in line_of(out, "fine-tune.yaml", "attention:")
    base = spec(out, "base-model.yaml")
    assert base["source"] == "hf://Qwen/Qwen2.5-7B-Instruct"
    assert base["chatTemplate"] == "qwen2.5" and "qwen_25" in line_of(out, "base-model.yaml", "chatTemplate:")
    assert base["tokens"] == {"pad": "<|endoftext|>"}
    dataset = spec(out, "datasets.yaml")
    assert dataset["source"] == "file://../data/support.jsonl"  # resolved from where axolotl ran
    assert dataset["split"] == {"train": 0.95, "validation": 0.05, "test": 0.0}
    assert dataset["clean"] == {"dedup": "none"}  # axolotl keeps repeats unless told
    evaluation = spec(out, "evaluations.yaml")
    assert evaluation["dataset"] == {"name": "support", "split": "validation"}
    assert evaluation["metrics"] == ["perplexity"]
    reported = {u.key: u.category for u in result.untranslated}
    assert reported["wandb_project"] == reported["output_dir"] == reported["logging_steps"] == "ignored"
    assert reported["eval_sample_packing"] == "unsupported"


def test_axolotl_qlora_fields(tmp_path):
    result, out, _ = imported(tmp_path, "axolotl", "qlora")
    fine_tune = spec(out, "fine-tune.yaml")
    assert fine_tune["adapter"]["type"] == "qlora"
    assert fine_tune["adapter"]["targetModules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert fine_tune["adapter"]["quantization"] == {"quantType": "nf4", "doubleQuant": True}
    assert fine_tune["training"]["maxSteps"] == 1000
    assert fine_tune["training"]["warmupRatio"] == 0.05  # 50 of 1000 steps
    assert "50 of max_steps 1000" in line_of(out, "fine-tune.yaml", "warmupRatio:")
    assert fine_tune["training"]["attention"] == "sdpa"
    assert fine_tune["evaluation"] == {"everySteps": 100} and fine_tune["checkpoint"] == {"everySteps": 200}
    datasets = {d["metadata"]["name"]: d["spec"] for d in documents(out, "datasets.yaml")}
    assert datasets["qa"]["schema"] == {
        "type": "instruction",
        "columns": {"instruction": "question", "input": "context", "output": "answer"},
    }
    assert (
        datasets["alpaca"]["source"] == "hf://tatsu-lab/alpaca"
        and datasets["alpaca"]["sourceSplit"] == "train"
    )
    assert datasets["qa-holdout"]["split"]["train"] == 1.0  # evaluation-only data
    assert [d["name"] for d in fine_tune["datasets"]] == ["qa", "alpaca"]
    evaluation = spec(out, "evaluations.yaml")
    assert evaluation["dataset"] == {"name": "qa-holdout", "split": "train"}
    reported = {u.key: u for u in result.untranslated}
    assert reported["datasets[0].type.format"].category == "unsupported"
    assert reported["hub_model_id"].category == "ignored"


def test_axolotl_full_fine_tune_with_zero3(tmp_path):
    result, out, _ = imported(tmp_path, "axolotl", "full")
    fine_tune = spec(out, "fine-tune.yaml")
    assert fine_tune["adapter"] == {"type": "none"}
    assert fine_tune["distributed"] == {"strategy": "zero3"}
    assert "read from deepspeed_configs/zero3_bf16.json" in line_of(out, "fine-tune.yaml", "strategy:")
    assert fine_tune["training"]["precision"] == "bf16" and fine_tune["training"]["seed"] == 7
    assert fine_tune["evaluation"] == {"perEpoch": True, "earlyStopping": {"patience": 3}}
    dataset = spec(out, "datasets.yaml")
    assert dataset["schema"] == {
        "type": "chat",
        "layout": "sharegpt",
        "roles": {"user": ["human"], "assistant": ["gpt"]},
    }
    assert dataset["clean"] == {"dedup": "exact"}
    base = spec(out, "base-model.yaml")
    assert base["chatTemplate"] == "mistral" and base["tokens"] == {"add": ["<tool_call>", "</tool_call>"]}
    assert {u.key: u.category for u in result.untranslated}["tokenizer_config"] == "ignored"


def test_llamafactory_lora_sft_fields_and_comments(tmp_path):
    result, out, _ = imported(tmp_path, "llamafactory", "lora")
    fine_tune = spec(out, "fine-tune.yaml")
    assert fine_tune["adapter"] == {
        "type": "lora",
        "r": 16,
        "alpha": 32,
        "dropout": 0.0,
        "targetModules": "all-linear",
    }
    assert "LLaMA-Factory's default (lora_dropout not set)" in line_of(out, "fine-tune.yaml", "dropout:")
    training = fine_tune["training"]
    assert (training["packing"], training["attention"], training["kernels"]) == (
        True,
        "flash_attention_2",
        "liger",
    )
    assert training["learningRate"] == 1e-4 and training["maxSeqLength"] == 4096
    assert training["gradientCheckpointing"] is True  # LLaMA-Factory's default, unlike tuneops'
    assert fine_tune["datasets"] == [{"name": "support-chats", "maxSamples": 5000}]
    assert fine_tune["evaluation"] == {"everySteps": 500} and fine_tune["checkpoint"] == {"everySteps": 500}
    assert "# LLaMA-Factory: lora_rank" in line_of(out, "fine-tune.yaml", "r: 16")
    dataset = spec(out, "datasets.yaml")
    assert dataset["source"] == "file://../data/support.json"  # dataset_dir/file_name, from the run folder
    assert dataset["schema"]["type"] == "chat" and dataset["schema"]["roles"]["assistant"] == ["assistant"]
    assert dataset["split"] == {"train": 0.9, "validation": 0.1, "test": 0.0}
    base = spec(out, "base-model.yaml")
    assert base["chatTemplate"] == "qwen2.5" and base["trustRemoteCode"] is True
    assert {u.key: u.category for u in result.untranslated}["report_to"] == "ignored"


def test_llamafactory_qlora_fields(tmp_path):
    result, out, _ = imported(tmp_path, "llamafactory", "qlora")
    fine_tune = spec(out, "fine-tune.yaml")
    assert fine_tune["adapter"]["type"] == "qlora"
    assert fine_tune["adapter"]["r"] == 8 and fine_tune["adapter"]["targetModules"] == ["q_proj", "v_proj"]
    assert fine_tune["adapter"]["modulesToSave"] == ["embed_tokens", "lm_head"]
    assert (
        fine_tune["training"]["warmupRatio"] == 0.05
        and fine_tune["training"]["optimizer"] == "paged_adamw_8bit"
    )
    assert fine_tune["training"]["precision"] == "fp16" and fine_tune["training"]["scheduler"] == "linear"
    assert fine_tune["checkpoint"] == {"everySteps": 250, "keep": 2}
    assert spec(out, "base-model.yaml")["tokens"] == {"add": ["<think>", "</think>"]}
    evaluation = spec(out, "evaluations.yaml")
    assert evaluation["dataset"] == {"name": "qa-holdout", "split": "train"}


def test_llamafactory_full_fine_tune_with_zero3_offload_by_name(tmp_path):
    result, out, _ = imported(tmp_path, "llamafactory", "full")
    fine_tune = spec(out, "fine-tune.yaml")
    assert fine_tune["adapter"] == {"type": "none"}
    assert fine_tune["distributed"] == {"strategy": "zero3-offload"}  # ds_z3_offload_config.json: not on disk
    assert "from the file name" in line_of(out, "fine-tune.yaml", "strategy:")
    assert [d["weight"] for d in fine_tune["datasets"]] == [0.75, 0.25]
    assert fine_tune["checkpoint"] == {"perEpoch": True} and fine_tune["evaluation"] == {"perEpoch": True}
    datasets = {d["metadata"]["name"]: d["spec"] for d in documents(out, "datasets.yaml")}
    assert datasets["legacy-chats"]["schema"] == {"type": "chat", "layout": "sharegpt"}
    assert spec(out, "base-model.yaml")["chatTemplate"] == "mistral"
    assert {u.key: u.category for u in result.untranslated}["run_name"] == "ignored"


def test_a_validation_set_the_config_does_not_hold_out_trains_on_every_row(tmp_path):
    root = write_project(tmp_path / "project")
    config = root / "cfg.yml"
    config.write_text(
        "base_model: org/model\ndatasets:\n  - path: data/support.jsonl\n    type: chat_template\n"
        "learning_rate: 0.0001\nmicro_batch_size: 1\ngradient_accumulation_steps: 1\n"
    )
    result = import_config("axolotl", config, root / "specs", cwd=root)
    assert "evaluations.yaml" not in result.files
    text = result.texts()["datasets.yaml"]
    assert yaml.safe_load(text)["spec"]["split"] == {"train": 1.0, "validation": 0.0, "test": 0.0}
    fine_tune = yaml.safe_load(result.texts()["fine-tune.yaml"])["spec"]
    assert fine_tune["training"]["maxSeqLength"] == 512  # axolotl's default, not tuneops' 2048
    assert fine_tune["training"]["epochs"] == 1


def test_data_outside_the_spec_repository_is_named(tmp_path):
    """The specs go to a folder of their own repository; the data stays where axolotl read it."""
    root = write_project(tmp_path / "project")
    config = write_config(root, "axolotl", "lora")
    out = tmp_path / "elsewhere" / "specs"
    (tmp_path / "elsewhere" / ".git").mkdir(parents=True)
    result = import_config("axolotl", config, out, cwd=root)
    validation = validate_paths([p for p in write_result(result, out) if p.suffix == ".yaml"])
    assert any("outside the spec repository" in note and "allowedFileRoots" in note for note in result.notes)
    assert [p.code for p in validation.errors] == ["outside-repository"]


def test_steps_that_need_the_total_are_reported_not_guessed(tmp_path):
    root = write_project(tmp_path / "project")
    config = root / "cfg.yml"
    config.write_text(
        "base_model: org/model\ndatasets:\n  - path: data/support.jsonl\n    type: chat_template\n"
        "learning_rate: 0.0001\nwarmup_steps: 20\nevals_per_epoch: 4\nval_set_size: 100\n"
    )
    result = import_config("axolotl", config, root / "specs", cwd=root)
    reported = {u.key: u.reason for u in result.untranslated}
    assert "warmupRatio" in reported["warmup_steps"]
    assert "everySteps" in reported["evals_per_epoch"]
    assert "a share, not a count" in reported["val_set_size"]


@pytest.mark.parametrize(("tool", "shape"), sorted(CONFIGS))
def test_docs_name_every_key_the_typical_configs_map(tmp_path, tool, shape):
    """docs/migrating.md's tables are what users read: a mapped key missing from them is drift."""
    from tests.conftest import REPO_ROOT

    documented = (REPO_ROOT / "docs" / "migrating.md").read_text()
    result, _, _ = imported(tmp_path, tool, shape)
    missing = set()
    for key in result.mapped:
        leaf = key.split("[")[0].split(".")[0] if not key.startswith("dataset_info.") else key.split(".")[-1]
        if f"`{leaf}" not in documented and f"{leaf}`" not in documented and f"/{leaf}" not in documented:
            missing.add(leaf)
    assert sorted(missing) == []
