"""What validation reports: one Problem per finding, with where it is and what to do.

A Problem is plain data so that every output (terminal text, JSON, a pull-request comment)
renders the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

# C0 and C1 controls, DEL, and bidirectional overrides: shown escaped, so that a key in a spec
# cannot rewrite the terminal or forge lines in a CI log.
_UNPRINTABLE = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
_UNPRINTABLE.update({code: f"\\u{code:04x}" for code in [*range(0x202A, 0x202F),
                                                          *range(0x2066, 0x206A)]})


def printable(text: str) -> str:
    return text.translate(_UNPRINTABLE)


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a file: 1-based line and column, as editors count them."""

    file: str
    line: int = 1
    column: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: `file:line:col severity path: message`.

    `code` is stable and machine-readable (`unknown-field`, `missing-reference`, ...);
    `message` is for people and already carries the value given and any hint.
    """

    severity: Severity
    code: str
    message: str
    position: Position
    path: str = ""
    value: str | None = None
    hint: str | None = None
    resource: str | None = None  # "FineTune/support-sft" when the problem belongs to one
    source_line: str | None = None  # the line as written, for text output to show with a caret

    def as_error(self) -> Problem:
        return replace(self, severity=Severity.ERROR)

    def sort_key(self) -> tuple:
        p = self.position
        return (p.file, p.line, p.column, self.severity != Severity.ERROR, self.code, self.path)

    def to_json(self) -> dict:
        return {
            "severity": str(self.severity),
            "code": self.code,
            "file": self.position.file,
            "line": self.position.line,
            "column": self.position.column,
            "path": self.path,
            "message": self.message,
            "value": self.value,
            "hint": self.hint,
            "resource": self.resource,
        }

    def text(self) -> str:
        """The problem on one line: `specs/ft.yaml:12:5 error spec.adapter.r: must be > 0 (got -4)`."""
        label = f"{self.position} {self.severity}"
        message = self.message
        if self.value is not None:
            message += f" (got {self.value})"
        if self.hint:
            message += f" ({self.hint})"
        line = f"{label} {self.path}: {message}" if self.path else f"{label}: {message}"
        return printable(line)


def describe_value(value: object, limit: int = 60) -> str:
    """How a value given in YAML is echoed back in a message: short, YAML-flavoured."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        shown = value if len(value) <= limit else value[: limit - 3] + "..."
        return repr(shown)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


CODES: dict[str, str] = {
    # Reading files (layer 1)
    "yaml-syntax": "The file is not valid YAML (syntax, tabs, duplicate keys, alias bombs, "
                   "unsupported tags, nesting too deep).",
    "not-utf8": "The file is not UTF-8 text.",
    "binary-file": "The file holds binary data.",
    "file-too-large": "The file is over the 4 MiB limit for a spec file.",
    "unreadable-file": "The file could not be read (permissions, a broken link).",
    "empty-file": "The file holds no documents, only comments or nothing.",
    "no-specs": "The folder holds no spec files at all (warning): usually a wrong path.",
    # One document (layer 2)
    "not-a-mapping": "A document is a list or a scalar instead of a mapping.",
    "unknown-kind": "`kind` is not one of the tuneops kinds.",
    "unsupported-api-version": "`apiVersion` is not tuneops.dev/v1alpha1.",
    "missing-field": "A required field is absent.",
    "unknown-field": "A field the kind does not have; usually a typo.",
    "unsupported-field": "A field users may expect that tuneops refuses, with why (metadata.namespace).",
    "wrong-type": "A value of the wrong type, e.g. a string where a number belongs.",
    "out-of-range": "A number outside its allowed range.",
    "invalid-value": "A value of the right type that is still not allowed.",
    "invalid-settings": "tuneops.yaml is not a single mapping of settings.",
    # The repository as a whole (layer 3)
    "duplicate-name": "Two specs of one kind share a name.",
    "missing-reference": "A spec names another spec that does not exist.",
    "dependency-cycle": "Specs depend on each other in a circle.",
    "method-data-mismatch": "The training method does not fit the dataset's schema type.",
    "reward-file": "A GRPO reward's Python file does not parse or does not define the function.",
    "not-a-reward-model": "A rewardModel names a FineTune that is not trained with method reward.",
    "reward-model-misused": "A reward model (method reward) served, evaluated or trained further as "
                            "a language model.",
    "grpo-group-size": "grpo.numGenerations does not divide the completions of one optimizer step.",
    "margin-below-detectable": "A comparison gate's margin is below the smallest effect its split can "
                               "detect at 80% power (a plan warning).",
    "no-champion": "A comparison gate (notWorseThan) with nothing to compare with.",
    "contamination": "Rows an Evaluation scores appear in the training data of the FineTune it "
                     "scores (a plan warning).",
    "contamination-of-base-model": "failOnContamination on a base model, whose training data "
                                   "tuneops does not know.",
    "needs-gpu": "A setting that only works on a GPU, on a FineTune with gpusPerNode 0.",
    "offload-without-gpus": "distributed.offload on a FineTune that trains on CPU (warning).",
    "unsupported-combination": "Settings that cannot work together.",
    "fragile-combination": "Settings that work together badly (warning).",
    "early-stopping-needs-evaluation": "Early stopping without evaluations (everySteps or perEpoch), "
                                       "validation data or aligned checkpoints.",
    "no-validation-data": "Evaluations during training without any validation split (warning).",
    "ignored-setting": "A setting that has no effect with the chosen method (warning).",
    "duplicate-registered-model": "Two FineTunes register the same model name.",
    "untrained-new-tokens": "An adapter on a base model that adds tokens does not train the embeddings "
                            "and output head (adapter.modulesToSave); a warning when it only sets "
                            "pad, eos or bos, which may already be in the vocabulary.",
    "gate-metric-not-computed": "A gate names a metric the Evaluation does not compute.",
    "task-file": "A benchmark's task YAML (Evaluation tasks[].path) that lm-evaluation-harness could "
                 "not read either: not YAML, no `task:`, a missing include.",
    "gate-direction": "A min gate on a lower-is-better metric (warning).",
    "gate-out-of-range": "A gate bound outside the metric's scale (text metrics are 0 to 1).",
    "gate-on-training-data": "Gates scored on the training split (warning).",
    "metric-needs-reference": "A text metric on data that has no reference answers.",
    "empty-split": "An Evaluation reads a split the dataset leaves empty.",
    "judge-endpoint-unknown": "A judge's endpoint names a Deployment that does not exist.",
    "judge-needs-champion": "A pairwise judge with neither a Deployment that requires the Evaluation "
                            "nor a baseline to compare with.",
    "judge-needs-prompts": "A judge on data without prompts (text or preference rows).",
    "baseline-is-model": "An Evaluation's baseline is the model under evaluation.",
    "gate-for-other-model": "A Deployment requires an Evaluation of a different model (for a Deployment "
                            "of a Sweep: of another model than the Sweep's template FineTune).",
    "objective-for-other-model": "A Sweep's objective names an Evaluation that does not score its "
                                 "template FineTune.",
    "objective-metric-not-computed": "A Sweep's objective metric is not one its Evaluation computes.",
    "unknown-parameter": "A Sweep parameter is a path that does not exist in FineTune.spec.",
    "parameter-not-searchable": "A Sweep parameter names a field a trial may not change: a mapping "
                                "or list, an operational field, or one that says what the template "
                                "is (baseModel, fromFineTune, datasets, method, register).",
    "team-unknown": "With teams in tuneops.yaml, a spec whose file is in no team's paths.",
    "team-ambiguous": "A spec whose file is in the paths of two teams.",
    "team-not-exported": "A spec naming another team's spec (`team.name`) that team does not export.",
    "team-name-collision": "Two teams' Deployments that would take the same server name in one namespace.",
    "policy-unknown-team": "A Policy matching a team tuneops.yaml does not define.",
    "policy-violated": "A spec that breaks a Policy's rule (an error or a warning, as the Policy says).",
    "policy-approved": "A Policy violation let through by --approve or the spec's approval annotations: "
                       "shown, with who approved it and why, and never an error.",
    "policy-rule-invalid": "A Policy rule that does not compile, or reads a variable a rule does not have.",
    "policy-unknown-field": "A Policy rule that names a field no kind it matches has.",
    "policy-rule-failed": "A Policy rule that failed on a spec it matches, or gave something other than "
                          "true or false.",
    "approval-without-reason": "A tuneops.dev/approved-by annotation without tuneops.dev/approval-reason.",
    "approval-of-unknown-policy": "A tuneops.dev/approved-by annotation naming a Policy that is not defined.",
    "parameter-value-refused": "A value a Sweep parameter may take (a range's end, a choice) that "
                               "the template FineTune refuses.",
    "grid-needs-finite-values": "algorithm: grid with a logUniform or uniform parameter.",
    "pruning-metric-not-logged": "A Sweep prunes on a metric the trainer does not log while training "
                                 "(eval_loss needs evaluations on a validation split).",
    "sweep-name-too-long": "A Sweep's name leaves no room for its trials' suffix (-<10 hex digits>).",
    "trial-name-taken": "A spec is named like a trial of a Sweep (<sweep>-<10 hex digits>).",
    "ungated-deployment": "A Deployment with no gating Evaluation and no allowUngated.",
    "invalid-kubernetes-name": "A name Kubernetes would refuse for the object it becomes (a Service "
                               "name starts with a letter); an error on the kubernetes backend, else a "
                               "warning.",
    "duplicate-alias": "Two Deployments move the same registry alias of the same model.",
    "unpinned-revision": "An hf:// source without a commit-sha revision (warning; an error "
                         "under --strict).",
    "trust-remote-code": "A benchmark's task YAML runs Python (`!function`) (warning, or an error "
                         "under policy.trustRemoteCode: deny). A BaseModel's trustRemoteCode is the "
                         "built-in Policy builtin-trust-remote-code.",
    "missing-file": "A local file a spec names does not exist or cannot be read.",
    "outside-repository": "A file:// path (or a symlink on its way, or in a model folder) leads "
                          "outside the spec repository and policy.allowedFileRoots.",
    "does-not-fit": "A FineTune's estimated GPU memory exceeds its declared GPUs' (when the "
                    "architecture and the GPU's memory are known).",
    "unknown-module": "adapter.targetModules names a module the base model does not have (checked "
                      "when its weights or config are known; fetched from the Hub only at plan time).",
}
"""Every problem code, with what it means. docs/specs.md is generated from this table."""
