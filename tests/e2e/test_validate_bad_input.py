"""Every kind of bad input gets exit 1, a message naming file and line, and no traceback.

Each case replaces or adds files in a valid repository. The line the error must point at is
marked in the fixture with a trailing `#!` comment (line 1 when no line is marked).
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from tests.conftest import API, VALID_SPECS, Symlink, run_tuneops, write_repo

# The fixture's FineTune up to its adapter block, to which cases append their own lines.
FT_HEAD = "\n" + textwrap.dedent(VALID_SPECS["fine-tune.yaml"]).lstrip("\n").split("  adapter:")[0]


def dataset_source(uri: str) -> str:
    """The valid Dataset reading `uri` as CSV, its source line marked."""
    return VALID_SPECS["dataset.yaml"].replace("file://data/chats.jsonl", f"{uri} #!\n          format: csv")


def fine_tune(extra: str) -> str:
    """The valid FineTune plus `extra` lines, written already indented under `spec:`."""
    return FT_HEAD + extra.lstrip("\n")


def appended(file: str, extra: str) -> str:
    """A valid spec file with `extra` lines appended (indented as under `spec:`)."""
    return textwrap.dedent(VALID_SPECS[file]).lstrip("\n") + extra.lstrip("\n")


def with_metadata(file: str, extra: str) -> str:
    """A valid spec file with `extra` lines added under `metadata:` (after its name)."""
    text = textwrap.dedent(VALID_SPECS[file]).lstrip("\n")
    head, name_line, rest = text.partition("\n  name: ")
    name, _, rest = rest.partition("\n")
    return f"{head}{name_line}{name}\n{extra.lstrip(chr(10))}{rest}"


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
"""


def sweep(old: str = "", new: str = "", extra: str = "") -> str:
    """The valid Sweep over the fixture's FineTune, with `old` replaced by `new` and `extra` lines
    appended (indented as under `spec:`)."""
    assert old in SWEEP
    return SWEEP.replace(old, new, 1) + extra


def sweep_parameter(line: str) -> str:
    """The valid Sweep searching only `line` (a parameter, marked)."""
    return sweep("    training.learningRate: {logUniform: [1.0e-5, 1.0e-3]}", f"    {line} #!")


ON_KUBERNETES = "backend: kubernetes\n"


def alias_bomb() -> str:
    lines = [f"{API}", "kind: Dataset", "metadata: {name: bomb}", "spec:",
             '  a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"] #!']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"  a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


CASES = {
    "empty file": ({"empty.yaml": ""}, "empty.yaml", "no spec documents"),
    "only comments": ({"notes.yaml": "# a comment\n# another\n"}, "notes.yaml", "no spec documents"),
    "yaml syntax error": ({"bad.yaml": f"{API}\nkind: Dataset\nmetadata: {{name: [x\nspec: 1 #!\n"},
                          "bad.yaml", "invalid YAML"),
    "tab indentation": ({"tabs.yaml": f"{API}\nkind: Dataset\nmetadata:\n\tname: x #!\n"},
                        "tabs.yaml", "tab character"),
    "non-mapping document": ({"list.yaml": "- apiVersion: x #!\n- kind: y\n"}, "list.yaml",
                             "must be a mapping"),
    "list where a mapping is expected": (
        {"fine-tune.yaml": fine_tune("  adapter: [lora, 8] #!\n")}, "fine-tune.yaml",
        "spec.adapter: must be a mapping"),
    "duplicate keys": ({"fine-tune.yaml": fine_tune("  method: sft\n  method: dpo #!\n")},
                       "fine-tune.yaml", "duplicate key 'method'"),
    "alias bomb": ({"bomb.yaml": alias_bomb()}, "bomb.yaml", "alias bomb"),
    "alias that contains itself": ({"loop.yaml": f"{API}\nkind: Dataset\nmetadata: &m #!\n  x: *m\n"},
                                   "loop.yaml", "contains it"),
    "deep nesting": ({"deep.yaml": "a: " + "[" * 20_000 + "]" * 20_000 + "\n"}, "deep.yaml",
                     "nesting deeper"),
    "binary garbage": ({"garbage.yaml": bytes(range(256)) * 4}, "garbage.yaml", "binary file"),
    "non-UTF-8 bytes": (
        {"latin1.yaml": f"{API}\nkind: Dataset\n".encode() + b"metadata: {name: caf\xe9} #!\n"},
        "latin1.yaml", "not valid UTF-8"),
    "name of 64 characters": (
        {"dataset.yaml": VALID_SPECS["dataset.yaml"].replace("name: chats", "name: " + "a" * 64 + " #!")},
        "dataset.yaml", "at most 63 characters"),
    "name with uppercase": (
        {"base-model.yaml": VALID_SPECS["base-model.yaml"].replace("name: tiny", "name: Tiny #!")},
        "base-model.yaml", "DNS-1123"),
    "name with ..": (
        {"base-model.yaml": VALID_SPECS["base-model.yaml"].replace("name: tiny", "name: a..b #!")},
        "base-model.yaml", "DNS-1123"),
    "reference to a missing spec": (
        {"deployment.yaml": VALID_SPECS["deployment.yaml"].replace("requires: [sft-quality]",
                                                                   "requires: [sft-qualty] #!")},
        "deployment.yaml", "did you mean 'sft-quality'"),
    "dependency cycle": (
        {"more.yaml": f"""
            {API}
            kind: FineTune
            metadata: {{name: a}}
            spec:
              fromFineTune: b #!
              datasets: [{{name: chats}}]
            ---
            {API}
            kind: FineTune
            metadata: {{name: b}}
            spec:
              fromFineTune: a
              datasets: [{{name: chats}}]
            """}, "more.yaml", "dependency cycle: FineTune/a -> FineTune/b -> FineTune/a"),
    "duplicate names across files": (
        {"zz-copy.yaml": VALID_SPECS["dataset.yaml"].replace("name: chats", "name: chats #!")},
        "zz-copy.yaml", "Dataset/chats is already defined at dataset.yaml"),
    "unknown kind": ({"kind.yaml": f"{API}\nkind: Finetune #!\nmetadata: {{name: x}}\nspec: {{}}\n"},
                     "kind.yaml", "did you mean 'FineTune'"),
    "wrong apiVersion": (
        {"api.yaml": "apiVersion: tuneops.dev/v1 #!\nkind: Dataset\nmetadata: {name: x}\nspec: {}\n"},
        "api.yaml", "unsupported apiVersion"),
    "negative learning rate": ({"fine-tune.yaml": fine_tune("  training:\n    learningRate: -1e-3 #!\n")},
                               "fine-tune.yaml", "spec.training.learningRate: must be > 0 (got -0.001)"),
    "adapter r of 0": ({"fine-tune.yaml": fine_tune("  adapter:\n    r: 0 #!\n")},
                       "fine-tune.yaml", "spec.adapter.r: must be > 0 (got 0)"),
    "split ratios sum to 0.9": (
        {"dataset.yaml": textwrap.dedent(VALID_SPECS["dataset.yaml"])
         + "  split: #!\n    train: 0.8\n    validation: 0.05\n    test: 0.05\n"},
        "dataset.yaml", "must sum to 1 (they sum to 0.9)"),
    "a chat role value under two roles": (
        {"dataset.yaml": textwrap.dedent(VALID_SPECS["dataset.yaml"])
         + "    roles: #!\n      user: [human]\n      assistant: [gpt, human]\n"},
        "dataset.yaml", "role value 'human' is listed under both user and assistant"),
    "string where a number is expected": (
        {"fine-tune.yaml": fine_tune("  training:\n    epochs: \"three\" #!\n")},
        "fine-tune.yaml", "spec.training.epochs: must be a number (got 'three')"),
    "unknown field": ({"fine-tune.yaml": fine_tune("  training:\n    learning_rate: 1e-4 #!\n")},
                      "fine-tune.yaml", "did you mean 'learningRate'"),
    "a 10 MB file": ({"huge.yaml": "# padding\n" * 1_000_000}, "huge.yaml", "limited to 4 MiB"),
    # Indentation: the line to fix, which is not always where libyaml stopped.
    "a line indented under a key that has a value": (
        {"fine-tune.yaml": fine_tune("  adapter:\n    r: 8\n      alpha: 16 #!\n")}, "fine-tune.yaml",
        "invalid YAML: this line is indented under `r` (line 10), which already has a value"),
    "a line indented one space too few": (
        {"fine-tune.yaml": fine_tune("  adapter:\n    r: 8\n   alpha: 16 #!\n")}, "fine-tune.yaml",
        "indented 3 spaces, between `r` on line 10 (4 spaces) and `adapter` on line 9 (2 spaces)"),
    "a key without a colon, read into the next line": (
        {"fine-tune.yaml": fine_tune("  adapter:\n    r 8 #!\n    alpha: 16\n")}, "fine-tune.yaml",
        "this line has no `:` after its key"),
    "a key without a colon, before a dedent": (
        {"fine-tune.yaml": fine_tune("  adapter:\n    r: 8\n    alpha 16 #!\n  training:\n    epochs: 2\n")},
        "fine-tune.yaml", "this line has no `:` after its key"),
    # file:// paths stay inside the spec repository (here the project folder: it is not in Git).
    "a dataset at an absolute path outside the repository": (
        {"dataset.yaml": dataset_source("file:///etc/passwd")}, "dataset.yaml",
        "dataset file /etc/passwd is outside the spec repository"),
    "a dataset path that climbs out with ..": (
        {"dataset.yaml": dataset_source("file://../../../../../../etc/passwd")}, "dataset.yaml",
        "resolves to /etc/passwd, outside the spec repository"),
    "a committed symlink to a file outside": (
        {"data/link.csv": Symlink("/etc/passwd"), "dataset.yaml": dataset_source("file://data/link.csv")},
        "dataset.yaml", "data/link.csv resolves to /etc/passwd, outside the spec repository"),
    "a committed symlink to a folder outside": (
        {"system": Symlink("/etc"), "dataset.yaml": dataset_source("file://system/passwd")},
        "dataset.yaml", "resolves to /etc/passwd, outside the spec repository"),
    "a chat template outside the repository": (
        {"base-model.yaml": VALID_SPECS["base-model.yaml"].replace(
            "file://models/tiny", "file://models/tiny\n          chatTemplate: file:///etc/x.jinja #!")},
        "base-model.yaml", "chat template /etc/x.jinja is outside the spec repository"),
    "a model folder that is a symlink to a folder outside": (
        {"models/tiny": Symlink("/etc"),
         "base-model.yaml": VALID_SPECS["base-model.yaml"].replace("models/tiny", "models/tiny #!")},
        "base-model.yaml", "models/tiny resolves to /etc, outside the spec repository"),
    "a model folder holding a symlink to a file outside": (
        {"models/tiny/config.json": Symlink("/etc/passwd"),
         "base-model.yaml": VALID_SPECS["base-model.yaml"].replace("models/tiny", "models/tiny #!")},
        "base-model.yaml", "config.json resolves to /etc/passwd, outside the spec repository"),
    "a model folder holding a symlinked folder outside": (
        {"models/tiny/config.json": "{}", "models/tiny/extra": Symlink("/etc"),
         "base-model.yaml": VALID_SPECS["base-model.yaml"].replace("models/tiny", "models/tiny #!")},
        "base-model.yaml", "extra resolves to /etc, outside the spec repository"),
    "an allowed file root that is relative": (
        {"tuneops.yaml": "policy:\n  allowedFileRoots: [data] #!\n"}, "tuneops.yaml",
        "policy.allowedFileRoots[0]: must be an absolute folder"),
    "an allowed file root of /": (
        {"tuneops.yaml": "policy:\n  allowedFileRoots: [/] #!\n"}, "tuneops.yaml",
        "allowing / would let a spec read every file"),
    # Strings that become parts of Kubernetes objects obey the rule of the field they become
    # (values/kubernetes.py); a final newline no longer slips past a `$`.
    "name with a trailing newline": (
        {"base-model.yaml": VALID_SPECS["base-model.yaml"].replace("name: tiny", 'name: "tiny\\n" #!')},
        "base-model.yaml", "DNS-1123"),
    "reference with a trailing newline": (
        {"deployment.yaml": VALID_SPECS["deployment.yaml"].replace("fineTune: sft", 'fineTune: "sft\\n" #!')},
        "deployment.yaml", "DNS-1123"),
    "label value with a trailing newline": (
        {"fine-tune.yaml": with_metadata("fine-tune.yaml", '  labels:\n    team: "ml\\n" #!\n')},
        "fine-tune.yaml", "must be a Kubernetes label value"),
    "label key with a trailing newline": (
        {"fine-tune.yaml": with_metadata("fine-tune.yaml", '  labels:\n    "team\\n": ml #!\n')},
        "fine-tune.yaml", "label or annotation key must be a Kubernetes qualified name"),
    "label key with an empty prefix": (
        {"fine-tune.yaml": with_metadata("fine-tune.yaml", "  labels:\n    /team: ml #!\n")},
        "fine-tune.yaml", "the part before '/' must not be empty"),
    "label key tuneops sets": (
        {"fine-tune.yaml": with_metadata("fine-tune.yaml", "  labels:\n    tuneops.dev/kind: x #!\n")},
        "fine-tune.yaml", "'tuneops.dev/kind' is set by tuneops"),
    "label value of 64 characters": (
        {"fine-tune.yaml": with_metadata("fine-tune.yaml", f"  labels:\n    team: {'a' * 64} #!\n")},
        "fine-tune.yaml", "must be at most 63 characters"),
    "annotation key tuneops sets": (
        {"evaluation.yaml": with_metadata("evaluation.yaml",
                                          "  annotations:\n    tuneops.dev/fingerprint: x #!\n")},
        "evaluation.yaml", "'tuneops.dev/fingerprint' is set by tuneops"),
    "annotation the cluster acts on": (
        {"evaluation.yaml": with_metadata(
            "evaluation.yaml", "  annotations:\n    container.apparmor.security.beta.kubernetes.io/job: "
                               "unconfined #!\n")},
        "evaluation.yaml", "is a Kubernetes system annotation"),
    "annotations over 256 KiB": (
        {"evaluation.yaml": with_metadata("evaluation.yaml",
                                          f"  annotations: #!\n    notes: {'a' * 262_144}\n")},
        "evaluation.yaml", "Kubernetes allows 262144 (256 KiB)"),
    "metadata.namespace": (
        {"deployment.yaml": with_metadata("deployment.yaml", "  namespace: ml-serving #!\n")},
        "deployment.yaml", "metadata.namespace is not supported: a project's objects all go to one"),
    "queue with a trailing newline": (
        {"fine-tune.yaml": fine_tune('  scheduling:\n    queue: "gpu\\n" #!\n')},
        "fine-tune.yaml", "DNS-1123"),
    "priority class with capitals": (
        {"fine-tune.yaml": fine_tune("  scheduling:\n    priority: High #!\n")},
        "fine-tune.yaml", "must be a DNS-1123 subdomain (it becomes a PriorityClass's name)"),
    "gpuProduct with a space": (
        {"fine-tune.yaml": fine_tune("  resources:\n    gpuProduct: NVIDIA H100 #!\n")},
        "fine-tune.yaml", "must be a Kubernetes label value (it becomes a node selector value)"),
    "evaluation gpuProduct with a trailing newline": (
        {"evaluation.yaml": appended("evaluation.yaml", '  resources:\n    gpuProduct: "NVIDIA-L4\\n" #!\n')},
        "evaluation.yaml", "must be a Kubernetes label value"),
    "deployment gpuProduct with a slash": (
        {"deployment.yaml": appended("deployment.yaml", "  resources:\n    gpuProduct: nvidia/l4 #!\n")},
        "deployment.yaml", "must be a Kubernetes label value"),
    "cpu with a trailing newline": (
        {"fine-tune.yaml": fine_tune('  resources:\n    cpu: "8\\n" #!\n')},
        "fine-tune.yaml", "must be a Kubernetes quantity"),
    "memory in GB": (
        {"evaluation.yaml": appended("evaluation.yaml", "  resources:\n    memory: 64GB #!\n")},
        "evaluation.yaml", "binary units are written Ki, Mi, Gi, Ti"),
    "autoscaling metric with a slash": (
        {"deployment.yaml": appended("deployment.yaml",
                                     "  autoscaling:\n    maxReplicas: 2\n    metric: queue/length #!\n")},
        "deployment.yaml", "may not contain '/' or '%'"),
    "deployment name that starts with a digit": (
        {"tuneops.yaml": ON_KUBERNETES,
         "deployment.yaml": VALID_SPECS["deployment.yaml"].replace("name: bot", "name: 1bot #!")},
        "deployment.yaml", "must start with a letter (a DNS-1035 label)"),
    "multi-node fine-tune name that starts with a digit": (
        {"tuneops.yaml": ON_KUBERNETES,
         "fine-tune.yaml": VALID_SPECS["fine-tune.yaml"].replace("name: sft", "name: 7b-sft #!").replace(
             "  adapter:", "  resources: {nodes: 2}\n          adapter:"),
         "evaluation.yaml": VALID_SPECS["evaluation.yaml"].replace("fineTune: sft", "fineTune: 7b-sft"),
         "deployment.yaml": VALID_SPECS["deployment.yaml"].replace("fineTune: sft", "fineTune: 7b-sft")},
        "fine-tune.yaml", "the Service that connects its nodes, which must start with a letter"),
    "alias with a trailing newline": (
        {"deployment.yaml": appended("deployment.yaml", '  alias: "production\\n" #!\n')},
        "deployment.yaml", "must start with a letter or '_'"),
    "target module with a trailing newline": (
        {"fine-tune.yaml": fine_tune('  adapter:\n    targetModules: ["q_proj\\n"] #!\n')},
        "fine-tune.yaml", "is not a module name"),
    "hf:// repository with a trailing newline": (
        {"base-model.yaml": VALID_SPECS["base-model.yaml"].replace(
            "source: file://models/tiny", 'source: "hf://org/model\\n" #!')},
        "base-model.yaml", "spec.source"),
    # Sweeps (specs/rules/sweeps.py) and Deployments that serve one.
    "sweep of a FineTune that does not exist": (
        {"sweep.yaml": sweep("fineTune: sft", "fineTune: sfx #!")}, "sweep.yaml",
        "template fine-tune refers to FineTune 'sfx', which is not defined"),
    "sweep objective that is no Evaluation": (
        {"sweep.yaml": sweep("evaluation: sft-quality", "evaluation: quality #!")}, "sweep.yaml",
        "objective evaluation refers to Evaluation 'quality', which is not defined"),
    "sweep objective that scores another model": (
        {"sweep.yaml": sweep("evaluation: sft-quality", "evaluation: other-quality #!"),
         "other.yaml": VALID_SPECS["evaluation.yaml"].replace("name: sft-quality", "name: other-quality")
         .replace("fineTune: sft", "baseModel: tiny")},
        "sweep.yaml", "scores BaseModel/tiny, not the template FineTune/sft"),
    "sweep objective metric the Evaluation does not compute": (
        {"sweep.yaml": sweep("metric: rougeL", "metric: exact_match #!")}, "sweep.yaml",
        "does not compute exact_match; it computes perplexity, rougeL"),
    "sweep parameter that is no field": (
        {"sweep.yaml": sweep_parameter("training.learnRate: {uniform: [0.1, 0.2]}")}, "sweep.yaml",
        "has no field 'learnRate' (did you mean 'learningRate'?)"),
    "sweep choice too long to record": (
        {"sweep.yaml": sweep_parameter("adapter.targetModules: {choice: [" + "q" * 101 + "]}")},
        "sweep.yaml", "a choice is at most 100 characters"),
    "sweep parameter that is a mapping": (
        {"sweep.yaml": sweep_parameter("adapter: {choice: [lora]}")}, "sweep.yaml",
        "holds a mapping or a list"),
    "sweep parameter that is operational": (
        {"sweep.yaml": sweep_parameter("checkpoint.keep: {intRange: [1, 3]}")}, "sweep.yaml",
        "checkpoint.keep is operational"),
    "sweep parameter that is the template's identity": (
        {"sweep.yaml": sweep_parameter("baseModel: {choice: [tiny]}")}, "sweep.yaml",
        "baseModel is what the template starts from"),
    "sweep value the FineTune refuses": (
        {"sweep.yaml": sweep_parameter("adapter.r: {choice: [8, -4]}")}, "sweep.yaml",
        "refuses adapter.r = -4 (adapter.r: must be > 0)"),
    "sweep of floats on an integer field": (
        {"sweep.yaml": sweep_parameter("adapter.r: {uniform: [4, 64]}")}, "sweep.yaml",
        "adapter.r: must be an integer"),
    "sweep distribution with two shapes": (
        {"sweep.yaml": sweep_parameter("adapter.r: {choice: [8], intRange: [4, 8]}")}, "sweep.yaml",
        "set exactly one of logUniform, uniform, intRange or choice"),
    "grid sweep over a continuous range": (
        {"sweep.yaml": sweep("    training.learningRate: {logUniform: [1.0e-5, 1.0e-3]}",
                             "    training.learningRate: {logUniform: [1.0e-5, 1.0e-3]} #!",
                             "  algorithm: grid\n")},
        "sweep.yaml", "algorithm grid tries every combination"),
    "sweep pruning on eval_loss without evaluations": (
        {"sweep.yaml": sweep(extra="  pruning: {metric: eval_loss} #!\n")}, "sweep.yaml",
        "eval_loss is logged only while FineTune 'sft' evaluates a validation split"),
    "sweep name without room for its trials": (
        {"sweep.yaml": sweep("name: sft-lr", f"name: {'s' * 48} #!")}, "sweep.yaml",
        "a Sweep's name is at most 47 characters"),
    "spec named like a sweep's trial": (
        {"sweep.yaml": SWEEP, "trial.yaml": VALID_SPECS["fine-tune.yaml"].replace(
            "name: sft", "name: sft-lr-0123abcdef #!")},
        "trial.yaml", "is named like a trial of Sweep 'sft-lr'"),
    "deployment of a sweep that does not exist": (
        {"deployment.yaml": VALID_SPECS["deployment.yaml"].replace("fineTune: sft", "sweep: sft-lr #!")},
        "deployment.yaml", "served sweep refers to Sweep 'sft-lr', which is not defined"),
    "deployment of a fine-tune and a sweep": (
        {"sweep.yaml": SWEEP, "deployment.yaml": VALID_SPECS["deployment.yaml"].replace(
            "model:\n            fineTune: sft", "model: {fineTune: sft, sweep: sft-lr} #!")},
        "deployment.yaml", "set exactly one of fineTune or sweep"),
    "deployment of a sweep requiring another model's evaluation": (
        {"sweep.yaml": SWEEP,
         "other.yaml": VALID_SPECS["evaluation.yaml"].replace("name: sft-quality", "name: other-quality")
         .replace("fineTune: sft", "baseModel: tiny"),
         "deployment.yaml": VALID_SPECS["deployment.yaml"].replace("fineTune: sft", "sweep: sft-lr").replace(
             "requires: [sft-quality]", "requires: [sft-quality, other-quality] #!")},
        "deployment.yaml", "the template of the served Sweep 'sft-lr'"),
    # tuneops.yaml: the settings that name Kubernetes objects.
    "namespace with capitals": (
        {"tuneops.yaml": "kubernetes:\n  namespace: ML #!\n"}, "tuneops.yaml",
        "must be a DNS-1123 label (it becomes a Kubernetes namespace)"),
    "namespace with a trailing newline": (
        {"tuneops.yaml": 'kubernetes:\n  namespace: "ml\\n" #!\n'}, "tuneops.yaml", "DNS-1123 label"),
    "storage claim with an underscore": (
        {"tuneops.yaml": "kubernetes:\n  storageClaim: tuneops_store #!\n"}, "tuneops.yaml",
        "it becomes a PersistentVolumeClaim's name"),
    "service account with a trailing newline": (
        {"tuneops.yaml": 'kubernetes:\n  serviceAccount: "trainer\\n" #!\n'}, "tuneops.yaml",
        "it becomes a ServiceAccount's name"),
    "secret name with capitals": (
        {"tuneops.yaml": "kubernetes:\n  secrets:\n    huggingFace: HF-Token #!\n"}, "tuneops.yaml",
        "it becomes a Secret's name"),
    "image with a trailing space": (
        {"tuneops.yaml": 'kubernetes:\n  image: "registry.example/trainer:1 " #!\n'}, "tuneops.yaml",
        "must not have leading or trailing whitespace"),
}


def expected_line(content: str | bytes) -> int:
    if isinstance(content, bytes):
        content = content.decode("latin-1")
    text = textwrap.dedent(content).lstrip("\n")
    for number, line in enumerate(text.splitlines(), start=1):
        if line.rstrip().endswith("#!"):
            return number
    return 1


@pytest.mark.parametrize("files, bad_file, message", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_reported_with_file_and_line(tmp_path: Path, files, bad_file, message):
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, **files})
    result = run_tuneops("validate", ".", cwd=repo)

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    line = expected_line(files[bad_file])
    located = [row for row in result.stdout.splitlines() if row.startswith(f"{bad_file}:{line}:")]
    assert located, f"no problem reported at {bad_file}:{line}:\n{result.stdout}"
    assert any(message in row for row in located), result.stdout


def test_the_valid_repository_used_by_the_table_is_valid(valid_repo: Path):
    result = run_tuneops("validate", ".", cwd=valid_repo)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("valid: 5 valid specs in 5 files")


def test_anchors_aliases_and_merge_keys_are_allowed(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "fine-tune.yaml": f"""
        {API}
        kind: FineTune
        metadata:
          name: sft
          labels: &labels {{team: ml}}
          annotations: *labels
        spec:
          baseModel: tiny
          datasets:
            - name: chats
          training:
            <<: &defaults {{learningRate: 1.0e-4, epochs: 2}}
            epochs: 5
        """})
    result = run_tuneops("validate", ".", cwd=repo)
    assert result.exit_code == 0, result.output


def test_errors_are_all_collected_not_just_the_first(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "fine-tune.yaml": fine_tune(
        "  adapter:\n    r: 0\n  training:\n    learningRate: -1.0\n    epochs: \"3\"\n")})
    result = run_tuneops("validate", ".", cwd=repo)
    assert result.exit_code == 1
    for path in ("spec.adapter.r", "spec.training.learningRate", "spec.training.epochs"):
        assert f"error {path}:" in result.stdout, result.stdout


def test_one_unreadable_document_does_not_hide_the_others(tmp_path: Path):
    broken_first = (f"{API}\nkind: BaseModel\nmetadata: {{name: other}}\n"
                    "spec: {source: x, source: y}\n---\n")
    repo = write_repo(tmp_path / "specs", {
        **VALID_SPECS,
        "dataset.yaml": broken_first + textwrap.dedent(VALID_SPECS["dataset.yaml"]).lstrip("\n")
        + "  bogus: 1\n",
    })
    result = run_tuneops("validate", ".", cwd=repo)
    lines = [line for line in result.stdout.splitlines() if line.startswith("dataset.yaml:")]
    assert lines == ["dataset.yaml:4:19 error: duplicate key 'source' (first defined at line 4)",
                     "dataset.yaml:14:3 error spec.bogus: unknown field"], result.stdout


def test_document_end_markers_are_valid_yaml(tmp_path: Path):
    dataset = textwrap.dedent(VALID_SPECS["dataset.yaml"]).lstrip("\n")
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "dataset.yaml": dataset + "...\n"})
    result = run_tuneops("validate", ".", cwd=repo)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("value, message", [
    (".inf", "must be a finite number"), (".nan", "must be a finite number"),
])
def test_infinite_and_nan_numbers_are_refused(tmp_path: Path, value: str, message: str):
    files = {"fine-tune.yaml": fine_tune(f"  training:\n    epochs: {value}\n")}
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, **files})
    result = run_tuneops("validate", ".", cwd=repo)
    assert result.exit_code == 1
    assert f"spec.training.epochs: {message}" in result.stdout


def test_an_unusable_local_path_is_an_error_not_a_crash(tmp_path: Path):
    dataset = VALID_SPECS["dataset.yaml"].replace("data/chats.jsonl", "a" * 300 + ".jsonl")
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "dataset.yaml": dataset})
    result = run_tuneops("validate", ".", cwd=repo)
    assert result.exit_code == 1
    assert "internal error" not in result.output
    assert "dataset file path is not usable: File name too long" in result.stdout


# The FineTune with its `datasets:` key indented under `baseModel: tiny`'s value: not YAML.
OVER_INDENTED_FINE_TUNE = textwrap.dedent(VALID_SPECS["fine-tune.yaml"]).lstrip("\n").replace(
    "  datasets:", "    datasets:")


def test_a_file_that_does_not_parse_is_reported_first_and_its_consequences_are_not(tmp_path: Path):
    # evaluation.yaml and deployment.yaml refer to FineTune 'sft', which fine-tune.yaml defines
    # but cannot be read to say so; deployment.yaml also has a mistake of its own.
    repo = write_repo(tmp_path / "specs", {
        **VALID_SPECS, "fine-tune.yaml": OVER_INDENTED_FINE_TUNE,
        "deployment.yaml": VALID_SPECS["deployment.yaml"].replace("[sft-quality]", "[sft-qualty]"),
    })
    result = run_tuneops("validate", ".", cwd=repo)
    assert result.exit_code == 1
    problems = [line for line in result.stdout.splitlines() if re.match(r"\S+:\d+:\d+ error", line)]
    assert problems[0].startswith("fine-tune.yaml:7:") and "invalid YAML" in problems[0], result.stdout
    assert "FineTune 'sft', which is not defined" not in result.stdout
    assert "did you mean 'sft-quality'" in result.stdout  # not a consequence: still reported
    assert len(problems) == 2, result.stdout
    assert ("note: 2 references to specs in files that did not parse were not checked "
            "(FineTune/sft: fine-tune.yaml)") in result.stdout
    report = json.loads(run_tuneops("validate", ".", "--format", "json", cwd=repo).stdout)
    assert [error["code"] for error in report["errors"]] == ["yaml-syntax", "missing-reference"]
    assert report["unchecked_references"] == 2


def test_a_syntax_error_comes_first_in_its_file(tmp_path: Path):
    dataset = textwrap.dedent(VALID_SPECS["dataset.yaml"]).lstrip("\n").replace("name: chats", "name: other")
    both = dataset + "  bogus: 1\n---\n" + OVER_INDENTED_FINE_TUNE
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "fine-tune.yaml": both})
    result = run_tuneops("validate", ".", cwd=repo)
    lines = [line for line in result.stdout.splitlines() if line.startswith("fine-tune.yaml:")]
    assert "invalid YAML" in lines[0] and "spec.bogus: unknown field" in lines[1], result.stdout


def test_a_syntax_error_shows_its_line_with_a_caret_and_json_keeps_the_position(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "fine-tune.yaml": OVER_INDENTED_FINE_TUNE})
    lines = run_tuneops("validate", ".", cwd=repo).stdout.splitlines()
    first = lines.index("fine-tune.yaml:7:5 error: invalid YAML: this line is indented under `baseModel` "
                        "(line 6), which already has a value (indent it like `baseModel`; or, if the value "
                        "goes on, quote it)")
    assert lines[first + 1:first + 3] == ["    7 |     datasets:",
                                          "      |     ^"]
    report = json.loads(run_tuneops("validate", ".", "--format", "json", cwd=repo).stdout)
    [error] = report["errors"]
    assert (error["line"], error["column"]) == (7, 5) and "source_line" not in error


def test_a_symlink_out_of_the_repository_stops_plan_and_render_too(tmp_path: Path):
    repo = write_repo(tmp_path / "specs", {**VALID_SPECS, "data/link.csv": Symlink("/etc/passwd"),
                                           "dataset.yaml": dataset_source("file://data/link.csv")})
    for command in (("plan", "--offline"), ("render", "--out", str(tmp_path / "rendered"))):
        result = run_tuneops(*command, cwd=repo)
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert "dataset.yaml:6:11" in result.output, result.output
        assert "resolves to /etc/passwd" in result.output, result.output
        assert "root:" not in result.output  # nothing of the file itself


def test_paths_inside_the_git_repository_or_an_allowed_root_are_valid(tmp_path: Path):
    """The repository is the Git root, above the project folder; links inside it are fine, and
    an absolute path is fine below a root tuneops.yaml allows."""
    shared = write_repo(tmp_path / "shared", {"chats.jsonl": VALID_SPECS["data/chats.jsonl"]})
    specs = {name: content for name, content in VALID_SPECS.items() if name != "data/chats.jsonl"}
    repo = write_repo(tmp_path / "repo", {
        "data/chats.jsonl": VALID_SPECS["data/chats.jsonl"],
        "data/latest.jsonl": Symlink("chats.jsonl"),
        "ml/tuneops.yaml": f"policy:\n  allowedFileRoots: [{shared}]\n",
        **{f"ml/{name}": content for name, content in specs.items()},
        "ml/dataset.yaml": VALID_SPECS["dataset.yaml"].replace("file://data/chats.jsonl",
                                                               "file://../data/latest.jsonl"),
        "ml/shared.yaml": VALID_SPECS["dataset.yaml"].replace("name: chats", "name: shared").replace(
            "file://data/chats.jsonl", f"file://{shared}/chats.jsonl"),
    })
    (repo / ".git").mkdir()  # where git would find the repository, which is all that is asked of it
    result = run_tuneops("validate", ".", cwd=repo / "ml")
    assert result.exit_code == 0, result.output

    (repo / "ml" / "tuneops.yaml").write_text("{}\n")
    result = run_tuneops("validate", ".", cwd=repo / "ml")
    assert result.exit_code == 1, result.output
    assert f"shared.yaml:6:11 error spec.source: dataset file {shared}/chats.jsonl is outside the spec " \
           f"repository {repo}" in result.stdout, result.stdout
