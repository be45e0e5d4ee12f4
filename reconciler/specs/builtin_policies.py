"""The `policy:` settings of tuneops.yaml as built-in Policies: `allowedSources`,
`trustRemoteCode` and `maxGpusPerFineTune` are CEL rules written like any Policy, checked by
the same engine (specs/rules/policies.py), reported the same way (`violates Policy
'builtin-max-gpus-per-fine-tune': ...` at the spec's line) and approved the same way
(`--approve builtin-max-gpus-per-fine-tune`). Their rule's position is the setting's line in
tuneops.yaml, where a reader goes to change them.

A Policy of the repository may not take a `builtin-` name (specs/rules/policies.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.config import PROJECT_FILE, ProjectSettings
from reconciler.specs.loader import LoadedSpec
from reconciler.specs.policy import PolicyResource
from reconciler.specs.problems import Position
from reconciler.specs.yamldoc import Document, read_documents

BUILTIN_PREFIX = "builtin-"
ALL_SCHEMES = ("hf", "s3", "file")


@dataclass(frozen=True)
class BuiltinPolicy(LoadedSpec):
    """A Policy made from a setting: every position is the setting's line in tuneops.yaml."""

    at: Position = Position(PROJECT_FILE, 1, 1)
    setting: str = ""  # "policy.maxGpusPerFineTune"
    written: bool = True  # False: the setting's default, tuneops.yaml does not say it

    def position(self, path: tuple[Any, ...] = (), *, key: bool = False) -> Position:
        return self.at

    def where(self) -> str:
        """Where the rule comes from, for a violation's hint."""
        if self.written:
            return f"built-in policy from {self.setting} at {self.at.file}:{self.at.line}"
        return f"built-in policy from {self.setting} (its default)"


def _policy(name: str, kinds: list[str], rule: str, message: str, severity: str = "error") -> str:
    return "\n".join([
        "apiVersion: tuneops.dev/v1alpha1", "kind: Policy", f"metadata: {{name: {BUILTIN_PREFIX}{name}}}",
        "spec:", f"  match: {{kinds: {json.dumps(kinds)}}}", f"  rule: {json.dumps(rule)}",
        f"  message: {json.dumps(message)}", f"  severity: {severity}", ""])


def builtin_policy_texts(settings: ProjectSettings) -> list[tuple[tuple[str, ...], str]]:
    """(the setting's path in tuneops.yaml, the Policy written out) for each setting that
    restricts anything."""
    policy = settings.policy
    found = []
    if set(policy.allowed_sources) != set(ALL_SCHEMES):
        allowed = sorted(set(policy.allowed_sources))
        schemes = " or ".join(f"{scheme}://" for scheme in allowed) or "none"
        found.append((("policy", "allowedSources"), _policy(
            "allowed-sources", ["Dataset", "BaseModel"],
            f"{json.dumps(allowed)}.exists(s, spec.source.startsWith(s + '://'))",
            f"sources must be {schemes} in this project (policy.allowedSources in {PROJECT_FILE})")))
    if policy.trust_remote_code != "allow":
        found.append((("policy", "trustRemoteCode"), _policy(
            "trust-remote-code", ["BaseModel"], "!spec.trustRemoteCode",
            "trustRemoteCode runs Python code from the model repository (policy.trustRemoteCode: "
            f"{policy.trust_remote_code} in {PROJECT_FILE}; allow sets it free)",
            "error" if policy.trust_remote_code == "deny" else "warning")))
    if policy.max_gpus_per_fine_tune is not None:
        limit = policy.max_gpus_per_fine_tune
        found.append((("policy", "maxGpusPerFineTune"), _policy(
            "max-gpus-per-fine-tune", ["FineTune"],
            f"spec.resources.nodes * spec.resources.gpusPerNode <= {limit}",
            f"a FineTune may ask for at most {limit} GPUs, nodes x gpusPerNode (policy.maxGpusPerFineTune "
            f"in {PROJECT_FILE})")))
    if not policy.python_rewards_allowed:
        setting = ("allowPythonRewards: false" if policy.allow_python_rewards is not None
                   else "trustRemoteCode: deny, and allowPythonRewards is not set")
        found.append((("policy", "allowPythonRewards" if policy.allow_python_rewards is not None
                       else "trustRemoteCode"), _policy(
            "python-rewards", ["FineTune"], "spec.rewards.all(r, r.python == null)",
            f"Python reward functions run repository code in the training job, and this project "
            f"forbids them (policy.{setting} in {PROJECT_FILE}); use a builtin or rewardModel reward")))
    return found


def builtin_policies(settings: ProjectSettings, root: Path, settings_file: str | None,
                     settings_document: Document | None) -> tuple[BuiltinPolicy, ...]:
    """The built-in Policies of these settings, each placed at its setting's line."""
    made = []
    for path, text in builtin_policy_texts(settings):
        (document,) = read_documents(text)
        written = settings_document is not None and settings_document.has(path)
        line, column = settings_document.position(path) if settings_document is not None else (1, 1)
        made.append(BuiltinPolicy(PolicyResource.model_validate(document.data), settings_file or PROJECT_FILE,
                                  root / PROJECT_FILE, document,
                                  Position(settings_file or PROJECT_FILE, line, column),
                                  ".".join(path), written))
    return tuple(made)

