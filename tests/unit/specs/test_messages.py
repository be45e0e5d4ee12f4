"""One mistake, one precise message: no echoes, and hints that point at the right fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.specs.base import suggest_dns_label
from reconciler.specs.schema_errors import suggest
from reconciler.specs.validate import validate_path
from tests.conftest import VALID_SPECS, write_repo


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "specs").mkdir()
    monkeypatch.chdir(tmp_path / "specs")  # paths print relative, as for a user in the repo


def report(tmp_path: Path, files: dict[str, str]) -> list[str]:
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, **files})
    return [problem.text() for problem in validate_path(repo).problems]


def spec(name: str) -> str:
    return textwrap.dedent(VALID_SPECS[name]).lstrip("\n")


def test_a_misspelt_required_field_is_reported_once(tmp_path: Path):
    found = report(tmp_path, {"base-model.yaml": spec("base-model.yaml").replace("source:", "sorce:")})
    assert found == ["base-model.yaml:6:3 error spec.sorce: unknown field (did you mean 'source'?)"]


def test_an_invalid_list_item_does_not_also_make_the_list_too_short(tmp_path: Path):
    found = report(tmp_path, {"fine-tune.yaml": spec("fine-tune.yaml").replace(
        "- name: chats", "- name: chats\n      wieght: 2")})
    assert found == ["fine-tune.yaml:9:7 error spec.datasets[0].wieght: unknown field "
                     "(did you mean 'weight'?)"]


def test_a_foreign_manifest_gets_one_error(tmp_path: Path):
    manifest = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 2}\n"
    [only] = report(tmp_path, {"k8s.yaml": manifest})
    assert "unsupported apiVersion" in only and "this is not a tuneops spec" in only


def test_an_api_version_typo_is_not_called_foreign(tmp_path: Path):
    [only] = report(tmp_path, {"base-model.yaml": spec("base-model.yaml").replace(
        "tuneops.dev/v1alpha1", "tuneops/v1alpha1")})
    assert "unsupported apiVersion" in only and "not a tuneops spec" not in only


def test_a_reference_to_another_kind_says_so_before_guessing_a_spelling(tmp_path: Path):
    found = report(tmp_path, {"fine-tune.yaml": spec("fine-tune.yaml").replace(
        "- name: chats", "- name: sft")})
    assert any("'sft' is a FineTune, not a Dataset" in line for line in found), found


def test_misnamed_project_file(tmp_path: Path):
    found = report(tmp_path, {"tuneops.yml": "backend: local\n"})
    assert found == ["tuneops.yml:1:1 error: project settings are read from tuneops.yaml only "
                     "(rename this file to tuneops.yaml)"]


@pytest.mark.parametrize("word, choices, expected", [
    ("adamw", ["adamw_torch", "adamw_torch_fused", "adamw_8bit"], "adamw_torch"),
    ("learning_rate", ["learningRate", "epochs"], "learningRate"),
    ("LearningRate", ["learningRate"], "learningRate"),
    ("epoch", ["epochs", "maxSteps"], "epochs"),
    ("zzz", ["epochs"], None),
])
def test_suggestions(word, choices, expected):
    hint = suggest(word, choices)
    assert hint == (f"did you mean {expected!r}?" if expected else None)


@pytest.mark.parametrize("typed, suggested", [
    ("Support_SFT", "support-sft"), ("données", "donnees"), ("a..b", "a-b"), ("--x--", "x"),
])
def test_name_suggestions(typed, suggested):
    assert suggest_dns_label(typed) == suggested


def test_cross_field_errors_point_at_the_field(tmp_path: Path):
    dataset = spec("dataset.yaml").replace("type: chat", "type: chat\n    columns: {mesages: convo}")
    dataset += "  clean: {minChars: 50, maxChars: 10}\n"
    found = report(tmp_path, {"dataset.yaml": dataset})
    assert any(line.startswith("dataset.yaml:9:5 error spec.schema.columns: 'mesages' is not a "
                               "column role") and "did you mean 'messages'" in line for line in found), found
    assert "dataset.yaml:10:35 error spec.clean.maxChars: is below minChars (50) (got 10)" in found


def test_an_autoscaler_below_the_replicas_is_refused_at_its_line(tmp_path: Path):
    deployment = spec("deployment.yaml").replace(
        "spec:\n", "spec:\n  replicas: 3\n  autoscaling: {maxReplicas: 2}\n", 1)
    found = report(tmp_path, {"deployment.yaml": deployment})
    assert any(line.endswith("deployment.yaml:7:3 error spec.autoscaling: maxReplicas (2) is below "
                             "replicas (3)") for line in found), found


def test_autoscaling_on_the_local_backend_is_said_to_do_nothing(tmp_path: Path):
    deployment = spec("deployment.yaml").replace("spec:\n", "spec:\n  autoscaling: {maxReplicas: 2}\n", 1)
    found = report(tmp_path, {"deployment.yaml": deployment})
    assert any(line.endswith("deployment.yaml:6:3 warning spec.autoscaling: the local backend runs one "
                             "server: autoscaling takes effect on Kubernetes only") for line in found), found


def test_a_default_alias_clash_says_it_is_the_default(tmp_path: Path):
    found = report(tmp_path, {"second.yaml": spec("deployment.yaml").replace("name: bot", "name: bot-2")})
    assert found == ["second.yaml:5:1 error spec: alias 'production' (the default) of registered model "
                     "'sft' is already moved by Deployment/bot (give one of the Deployments another alias)"]


def test_the_caret_sits_under_the_column_of_what_is_shown():
    from reconciler.specs.problems import Position, Problem, Severity
    from reconciler.specs.report import caret_lines

    def shown(line: str, column: int) -> list[str]:
        where = Position("f.yaml", 12, column)
        return caret_lines(Problem(Severity.ERROR, "yaml-syntax", "invalid YAML", where, source_line=line))

    assert shown("    datasets:", 5) == ["    12 |     datasets:", "       |     ^"]
    assert shown("\tname: x", 2) == ["    12 | \\x09name: x", "       |     ^"]  # escaped, and counted so
    long = "a: [" + "1, " * 200 + "oops ]"
    text, caret = shown(long, long.index("oops") + 1)
    assert len(text) < 130 and text.startswith("    12 | ...")
    assert text[caret.index("^"):].startswith("oops")


def test_a_row_cap_of_zero_is_refused_at_its_line(tmp_path: Path):
    found = report(tmp_path, {"fine-tune.yaml": spec("fine-tune.yaml").replace(
        "- name: chats", "- name: chats\n      maxSamples: 0")})
    assert any(line.startswith("fine-tune.yaml:9:19 error spec.datasets[0].maxSamples:")
               for line in found), found


@pytest.mark.parametrize("block", ["evaluation", "checkpoint"])
def test_per_epoch_and_every_steps_together_say_to_pick_one(tmp_path: Path, block: str):
    fine_tune = spec("fine-tune.yaml") + f"  {block}:\n    perEpoch: true\n    everySteps: 10\n"
    found = report(tmp_path, {"fine-tune.yaml": fine_tune})
    assert any(line.startswith(f"fine-tune.yaml:13:3 error spec.{block}: perEpoch and everySteps both "
                               "set a cadence: pick one") for line in found), found


@pytest.mark.parametrize("written, meant", [
    ("qwen2_5", "qwen2.5"), ("qwen25", "qwen2.5"), ("llama-3", "llama3"), ("Gemma", "gemma"),
    # axolotl's chat_template names
    ("qwen_25", "qwen2.5"), ("phi_3", "phi3"), ("phi_35", "phi3"), ("mistral_v3", "mistral"),
    ("gemma3", "gemma"), ("chatml_", "chatml"),
    # LLaMA-Factory's template names
    ("qwen", "qwen2.5"), ("qwen3_nothink", "qwen3-no-thinking"), ("phi", "phi3"),
])
def test_a_chat_template_named_another_way_gets_the_name_it_means(tmp_path: Path, written: str,
                                                                   meant: str):
    found = report(tmp_path, {"base-model.yaml": spec("base-model.yaml") + f"  chatTemplate: {written}\n"})
    assert found == [f"base-model.yaml:7:17 error spec.chatTemplate: must be one of tokenizer, chatml, "
                     f"llama3, qwen2.5, qwen3, qwen3-no-thinking, mistral, gemma, phi3, phi4, or "
                     f"file://path/to/template.jinja (got {written!r}) (did you mean {meant!r}?)"]


@pytest.mark.parametrize("name", ["tokenizer", "chatml", "llama3", "qwen2.5", "qwen3", "qwen3-no-thinking",
                                  "mistral", "gemma", "phi3", "phi4"])
def test_every_built_in_chat_template_name_is_accepted(tmp_path: Path, name: str):
    assert report(tmp_path, {"base-model.yaml": spec("base-model.yaml") + f"  chatTemplate: {name}\n"}) == []


@pytest.mark.parametrize("tokens, message", [
    ("{pad: ''}", "spec.tokens.pad: a token must not be empty"),
    ("{add: ['<x>', '']}", "spec.tokens.add: a token must not be empty"),
    ("{add: ['<x>', '<x>']}", "spec.tokens.add: '<x>' listed more than once"),
    ("{unk: '<u>'}", "spec.tokens.unk: unknown field"),
])
def test_tokens_are_checked(tmp_path: Path, tokens: str, message: str):
    [found] = report(tmp_path, {"base-model.yaml": spec("base-model.yaml") + f"  tokens: {tokens}\n"})
    assert message in found and found.startswith("base-model.yaml:7:")
