"""Migrating from axolotl or LLaMA-Factory: `tuneops import` in a folder where the tool ran,
then `tuneops validate` on what it wrote; and the mistakes a user makes on the way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, run_tuneops
from tests.e2e.test_cli import HEAVY_MODULES
from tests.unit.importers.configs import CONFIGS, write_config, write_project

pytestmark = pytest.mark.slow


def no_hub(tmp_path: Path) -> dict[str, str]:
    return {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), "HF_ENDPOINT": ""}


@pytest.mark.parametrize(("tool", "shape"), sorted(CONFIGS))
def test_import_writes_specs_that_validate_and_lists_what_it_left(tmp_path, tool, shape):
    root = write_project(tmp_path / "project")
    config = write_config(root, tool, shape)
    result = run_tuneops("import", tool, str(config), "--out", "specs", cwd=root, env=no_hub(tmp_path))
    assert result.exit_code == 0, result.output
    assert "wrote specs/fine-tune.yaml" in result.stdout
    assert "valid" in result.stdout and " error " not in result.stdout and "not translated:" in result.stdout
    assert "ignored by design" in result.stdout
    assert "Traceback" not in result.output
    again = run_tuneops("validate", "specs", cwd=root, env=no_hub(tmp_path))
    assert again.exit_code == 0, again.output


def test_json_output_for_ci(tmp_path):
    root = write_project(tmp_path / "project")
    config = write_config(root, "axolotl", "lora", extra="frobnicate_level: 3\n")
    result = run_tuneops(
        "import",
        "axolotl",
        str(config),
        "--out",
        "specs",
        "--name",
        "support-lora",
        "--format",
        "json",
        cwd=root,
        env=no_hub(tmp_path),
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["valid"] is True and answer["validation"]["errors"] == []
    assert answer["mapped"]["lora_r"] == ["FineTune.spec.adapter.r"]
    unknown = [u for u in answer["untranslated"] if u["category"] == "unknown"]
    assert [u["key"] for u in unknown] == ["frobnicate_level"]
    assert "name: support-lora" in (root / "specs" / "fine-tune.yaml").read_text()


def test_existing_files_are_not_overwritten_without_force(tmp_path):
    root = write_project(tmp_path / "project")
    config = write_config(root, "llamafactory", "lora")
    (root / "specs").mkdir()
    (root / "specs" / "fine-tune.yaml").write_text("# mine\n")
    refused = run_tuneops(
        "import", "llamafactory", str(config), "--out", "specs", cwd=root, env=no_hub(tmp_path)
    )
    assert refused.exit_code == 1
    assert "already exist: specs/fine-tune.yaml" in refused.stderr and "--force" in refused.stderr
    assert (root / "specs" / "fine-tune.yaml").read_text() == "# mine\n"
    assert not (root / "specs" / "base-model.yaml").exists()  # nothing written at all
    forced = run_tuneops(
        "import", "llamafactory", str(config), "--out", "specs", "--force", cwd=root, env=no_hub(tmp_path)
    )
    assert forced.exit_code == 0, forced.output
    assert "kind: FineTune" in (root / "specs" / "fine-tune.yaml").read_text()


def test_an_unsupported_method_is_reported_for_review(tmp_path):
    root = write_project(tmp_path / "project")
    config = root / "rl.yml"
    config.write_text(
        "base_model: org/model\nrl: simpo\nsimpo_gamma: 0.5\ndatasets:\n  - path: data/support.jsonl\n"
        "    type: chat_template\nlearning_rate: 0.0001\n"
    )
    result = run_tuneops("import", "axolotl", str(config), "--out", "specs", cwd=root, env=no_hub(tmp_path))
    assert result.exit_code == 0  # reported, not fatal: the SFT spec it wrote is valid, to be reviewed
    assert (
        "rl: rl: simpo is not offered (methods: sft, dpo, pretrain, grpo, kto, orpo, reward)" in result.stdout
    )
    assert "needs review" in result.stdout and "simpo_gamma: SimPO is not offered" in result.stdout


def test_a_grpo_reward_function_outside_the_spec_folder_fails_validation_with_what_to_do(tmp_path):
    """The reward module sits beside the config, as axolotl's docs put it; the specs go to specs/,
    where a `python:` reward cannot reach it: nothing is guessed, the import says what to move."""
    root = write_project(tmp_path / "project")
    (root / "rewards.py").write_text("def correct(prompts, completions, **columns):\n    return [1.0]\n")
    config = root / "grpo.yml"
    config.write_text(
        "base_model: org/model\nrl: grpo\ntrl:\n  num_generations: 2\n  reward_funcs: [rewards.correct]\n"
        "datasets:\n  - path: data/math.jsonl\nmicro_batch_size: 2\nlearning_rate: 0.0001\n"
    )
    refused = run_tuneops("import", "axolotl", str(config), "--out", "specs", cwd=root, env=no_hub(tmp_path))
    assert refused.exit_code == 1, refused.output
    assert (
        "trl.reward_funcs: rewards.correct: " in refused.stdout and "move rewards.py into" in refused.stdout
    )
    assert "method grpo needs rewards" in refused.stdout
    beside = run_tuneops(
        "import", "axolotl", str(config), "--out", ".", "--force", cwd=root, env=no_hub(tmp_path)
    )
    assert beside.exit_code == 0, beside.output
    assert "python: rewards.py:correct" in (root / "fine-tune.yaml").read_text()


def test_specs_that_do_not_validate_exit_1_with_the_reason(tmp_path):
    """Data outside the repository the specs are written into: validation refuses it, and the
    notes say what to do."""
    root = write_project(tmp_path / "project")
    config = write_config(root, "axolotl", "lora")
    (tmp_path / "specs-repo" / ".git").mkdir(parents=True)
    result = run_tuneops(
        "import",
        "axolotl",
        str(config),
        "--out",
        str(tmp_path / "specs-repo"),
        cwd=root,
        env=no_hub(tmp_path),
    )
    assert result.exit_code == 1
    assert "outside" in result.stdout and "policy.allowedFileRoots" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- base_model: x\n", "is a list, not a mapping of settings"),
        ("", "is empty, not a mapping of settings"),
        ("base_model: [unclosed\n", "not valid YAML"),
        ("just a sentence\n", "is a str, not a mapping of settings"),
        (b"\xff\xfe\x00binary", "is not UTF-8 text"),
    ],
)
def test_a_config_that_is_not_one_is_one_clear_line(tmp_path, content, message):
    config = tmp_path / "config.yml"
    if isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text(content)
    result = run_tuneops("import", "axolotl", str(config), "--out", "specs", cwd=tmp_path)
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "specs").exists()


def test_usage_mistakes(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("base_model: x\n")
    assert run_tuneops("import", "unsloth", str(config), cwd=tmp_path).exit_code == 2
    missing = run_tuneops("import", "axolotl", "nope.yml", cwd=tmp_path)
    assert missing.exit_code == 2 and "nope.yml" in missing.stderr
    bad_name = run_tuneops("import", "axolotl", str(config), "--name", "Not_A_Name", cwd=tmp_path)
    assert bad_name.exit_code == 2 and "--name" in bad_name.stderr


def test_an_unreadable_config_is_named(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("base_model: x\n")
    config.chmod(0)
    result = run_tuneops("import", "axolotl", str(config), cwd=tmp_path, file_modes_apply=True)
    assert result.exit_code == 1
    assert (
        "cannot read" in result.stderr and "config.yml" in result.stderr and "Traceback" not in result.output
    )


def test_import_does_not_load_the_training_libraries(tmp_path):
    root = write_project(tmp_path / "project")
    config = write_config(root, "axolotl", "full")
    args = ["import", "axolotl", str(config), "--out", str(root / "specs"), "--run-dir", str(root)]
    probe = (
        "import sys\n"
        "from reconciler.cli import cli\n"
        f"try:\n    cli.main({args!r}, prog_name='tuneops')\n"
        "except SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **no_hub(tmp_path)},
    )
    assert "HEAVY=\n" in done.stdout, done.stdout + done.stderr
    assert (root / "specs" / "fine-tune.yaml").is_file()
