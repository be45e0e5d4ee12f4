"""Whole-repository rules: what no single spec can check on its own.

Each rule is a function from the RuleContext to Problems, registered in RULES, so a rule is
easy to find, to test from a fixture, and to document. Rules only see specs that passed their
own schema; a reference to a spec that exists but is invalid is not reported again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.config import ProjectSettings
from reconciler.specs.base import ResourceId
from reconciler.specs.basemodel import BaseModelResource
from reconciler.specs.confinement import SETTING, FileRoots, OutsideRoots, resolve_inside
from reconciler.specs.dataset import DatasetResource
from reconciler.specs.dependencies import find_cycles
from reconciler.specs.deployment import DeploymentResource
from reconciler.specs.evaluation import (
    GENERATION_METRICS,
    LOWER_IS_BETTER,
    METRIC_RANGES,
    EvaluationResource,
)
from reconciler.specs.finetune import FineTuneResource
from reconciler.specs.loader import LoadedSpec
from reconciler.specs.problems import Problem, Severity, describe_value
from reconciler.specs.schema_errors import format_path, suggest
from reconciler.specs.sources import is_pinned_hf_revision, parse_source
from reconciler.specs.specset import SpecSet
from reconciler.values import kubernetes as kube

# What each training method reads, in the user's words.
METHOD_DATA = {
    "sft": ("instruction", "chat"),
    "dpo": ("preference",),
    "pretrain": ("text",),
}
METHOD_FOR_DATA = {"instruction": "sft", "chat": "sft", "preference": "dpo", "text": "pretrain"}


@dataclass(frozen=True)
class RuleContext:
    specs: SpecSet
    declared: frozenset[ResourceId]
    settings: ProjectSettings

    def fine_tunes(self) -> Iterator[tuple[LoadedSpec, FineTuneResource]]:
        for spec in self.specs.of_kind("FineTune"):
            assert isinstance(spec.resource, FineTuneResource)
            yield spec, spec.resource

    def evaluations(self) -> Iterator[tuple[LoadedSpec, EvaluationResource]]:
        for spec in self.specs.of_kind("Evaluation"):
            assert isinstance(spec.resource, EvaluationResource)
            yield spec, spec.resource

    def deployments(self) -> Iterator[tuple[LoadedSpec, DeploymentResource]]:
        for spec in self.specs.of_kind("Deployment"):
            assert isinstance(spec.resource, DeploymentResource)
            yield spec, spec.resource

    def dataset(self, name: str) -> DatasetResource | None:
        return self.specs.resource(ResourceId("Dataset", name), DatasetResource)


def problem(spec: LoadedSpec, severity: Severity, code: str, message: str,
            path: tuple[Any, ...] = (), *, key: bool = False, value: Any = None,
            hint: str | None = None) -> Problem:
    return Problem(
        severity=severity, code=code, message=message,
        position=spec.position(path, key=key), path=format_path(path),
        value=describe_value(value) if value is not None else None,
        hint=hint, resource=str(spec.id),
    )


ERROR, WARNING = Severity.ERROR, Severity.WARNING
Rule = Callable[[RuleContext], Iterator[Problem]]
RULES: list[Rule] = []


def rule(function: Rule) -> Rule:
    RULES.append(function)
    return function


class DefinedNames:
    """The names defined per kind, to say why one is not: `tuneops logs` and the reference rule
    give the same hint."""

    def __init__(self, defined: Iterable[ResourceId]):
        self.names_by_kind: dict[str, list[str]] = {}
        self.kinds_by_name: dict[str, list[str]] = {}
        for rid in sorted(defined):
            self.names_by_kind.setdefault(rid.kind, []).append(rid.name)
            self.kinds_by_name.setdefault(rid.name, []).append(rid.kind)

    def hint(self, target: ResourceId) -> str | None:
        other = self.kinds_by_name.get(target.name)
        if other:  # the name exists, as another kind: that says more than a near spelling
            return f"'{target.name}' is a {other[0]}, not a {target.kind}"
        return suggest(target.name, self.names_by_kind.get(target.kind, []))


@rule
def references_exist(ctx: RuleContext) -> Iterator[Problem]:
    defined: DefinedNames | None = None  # built on the first miss only
    for spec in ctx.specs:
        for ref in spec.resource.references():
            if ref.target in ctx.specs or ref.target in ctx.declared:
                continue
            if defined is None:
                defined = DefinedNames(ctx.declared | set(ctx.specs.by_id))
            yield problem(spec, ERROR, "missing-reference",
                          f"{ref.role} refers to {ref.target.kind} '{ref.target.name}', "
                          "which is not defined", ref.path, hint=defined.hint(ref.target))


@rule
def no_cycles(ctx: RuleContext) -> Iterator[Problem]:
    for cycle in find_cycles(ctx.specs.depends_on()):
        first = ctx.specs.by_id[cycle[0]]
        ref = next(r for r in first.resource.references() if r.target == cycle[1])
        yield problem(first, ERROR, "dependency-cycle",
                      "dependency cycle: " + " -> ".join(str(node) for node in cycle), ref.path)


@rule
def method_matches_data(ctx: RuleContext) -> Iterator[Problem]:
    for spec, fine_tune in ctx.fine_tunes():
        method = fine_tune.spec.method
        for index, data in enumerate(fine_tune.spec.datasets):
            dataset = ctx.dataset(data.name)
            if dataset is None:
                continue
            schema_type = dataset.spec.data_schema.type
            if schema_type not in METHOD_DATA[method]:
                wanted = " or ".join(METHOD_DATA[method])
                yield problem(spec, ERROR, "method-data-mismatch",
                              f"method {method} needs {wanted} data, but Dataset '{data.name}' has "
                              f"schema type {schema_type}", ("spec", "datasets", index, "name"),
                              hint=f"use method: {METHOD_FOR_DATA[schema_type]}, or another dataset")


@rule
def hardware_fits_adapter(ctx: RuleContext) -> Iterator[Problem]:
    for spec, fine_tune in ctx.fine_tunes():
        s = fine_tune.spec
        quantized = s.adapter.quantization is not None
        if quantized and s.resources.gpus_per_node == 0:
            qlora = s.adapter.type == "qlora"
            yield problem(spec, ERROR, "needs-gpu",
                          f"{'qlora' if qlora else 'a quantized base'} needs a GPU: bitsandbytes "
                          "4- and 8-bit training runs on CUDA only",
                          ("spec", "adapter", "type" if qlora else "quantization"),
                          hint="set resources.gpusPerNode to 1 or more")
        if quantized and s.distributed.strategy == "fsdp":
            yield problem(spec, ERROR, "unsupported-combination",
                          "a quantized base is refused with fsdp: sharding 4-bit weights needs "
                          "FSDP-QLoRA settings that tuneops does not generate",
                          ("spec", "distributed", "strategy"), hint="use ddp or zero2")
        elif quantized and s.distributed.strategy in ("zero3", "zero3-offload"):
            yield problem(spec, WARNING, "fragile-combination",
                          f"{s.distributed.strategy} with a quantized base is fragile (ZeRO-3 shards "
                          "4-bit weights poorly)", ("spec", "distributed", "strategy"),
                          hint="prefer zero2 or ddp for qlora")
        if s.training.precision == "fp16" and s.resources.gpus_per_node == 0:
            yield problem(spec, ERROR, "needs-gpu", "fp16 mixed precision needs a GPU",
                          ("spec", "training", "precision"), hint="use bf16, fp32 or auto on CPU")
        limit = ctx.settings.policy.max_gpus_per_fine_tune
        gpus = s.resources.nodes * s.resources.gpus_per_node
        if limit is not None and gpus > limit:
            yield problem(spec, ERROR, "policy", f"asks for {gpus} GPUs; the project allows at most "
                          f"{limit} (policy.maxGpusPerFineTune)", ("spec", "resources"))


@rule
def early_stopping_has_evaluation(ctx: RuleContext) -> Iterator[Problem]:
    for spec, fine_tune in ctx.fine_tunes():
        s = fine_tune.spec
        validation_rows = any(
            (d := ctx.dataset(data.name)) is not None and d.spec.split.validation > 0
            for data in s.datasets)
        known_datasets = all(ctx.dataset(data.name) is not None for data in s.datasets)
        if s.evaluation.early_stopping is None:
            if s.evaluation.every_steps and known_datasets and not validation_rows:
                yield problem(spec, WARNING, "no-validation-data",
                              "evaluation.everySteps is set but no dataset has a validation split",
                              ("spec", "evaluation", "everySteps"),
                              hint="give a dataset split.validation > 0")
            continue
        path = ("spec", "evaluation", "earlyStopping")
        every = s.evaluation.every_steps
        if every is None:
            yield problem(spec, ERROR, "early-stopping-needs-evaluation",
                          "early stopping needs evaluation.everySteps", path, key=True)
            continue
        if known_datasets and not validation_rows:
            yield problem(spec, ERROR, "early-stopping-needs-evaluation",
                          "early stopping needs validation data, but no dataset has a validation "
                          "split", path, key=True, hint="give a dataset split.validation > 0")
        saving = s.checkpoint.every_steps
        if saving is None or saving % every:
            yield problem(spec, ERROR, "early-stopping-needs-evaluation",
                          f"with early stopping, checkpoint.everySteps must be a multiple of "
                          f"evaluation.everySteps ({every}) so the best checkpoint can be kept",
                          ("spec", "checkpoint", "everySteps") if saving else path, key=saving is None,
                          value=saving)


@rule
def method_specific_settings(ctx: RuleContext) -> Iterator[Problem]:
    for spec, fine_tune in ctx.fine_tunes():
        s = fine_tune.spec
        if s.method != "dpo" and "dpo_beta" in s.training.model_fields_set:
            yield problem(spec, WARNING, "ignored-setting", "dpoBeta only applies to method dpo",
                          ("spec", "training", "dpoBeta"), key=True)
        if s.adapter.type == "none":
            ignored = sorted(s.adapter.model_fields_set & {"r", "alpha", "dropout", "target_modules"})
            if ignored:
                yield problem(spec, WARNING, "ignored-setting",
                              "adapter settings have no effect with full fine-tuning (type: none)",
                              ("spec", "adapter", "type"))
        if s.method == "dpo" and s.training.packing:
            yield problem(spec, WARNING, "ignored-setting",
                          "packing does not apply to dpo (pairs are scored whole)",
                          ("spec", "training", "packing"), key=True)


@rule
def registered_models_unique(ctx: RuleContext) -> Iterator[Problem]:
    owners: dict[str, LoadedSpec] = {}
    for spec, fine_tune in ctx.fine_tunes():
        name = fine_tune.registered_model
        if name in owners:
            yield problem(spec, ERROR, "duplicate-registered-model",
                          f"registered model '{name}' is already written by "
                          f"{owners[name].id} ({owners[name].position()})",
                          ("spec", "register", "model") if fine_tune.spec.registration.model
                          else ("metadata", "name"),
                          hint="give each FineTune its own register.model")
        else:
            owners[name] = spec


@rule
def gates_are_computed(ctx: RuleContext) -> Iterator[Problem]:
    for spec, evaluation in ctx.evaluations():
        s = evaluation.spec
        for index, gate in enumerate(s.gates):
            if gate.metric not in s.metrics:
                yield problem(spec, ERROR, "gate-metric-not-computed",
                              f"gate on {gate.metric}, which this Evaluation does not compute",
                              ("spec", "gates", index, "metric"),
                              hint=f"add {gate.metric} to metrics")
            low, high = METRIC_RANGES[gate.metric]
            for bound_name in ("min", "max"):
                bound = getattr(gate, bound_name)
                if bound is not None and not low <= bound <= high:
                    scale = f"between {low:g} and {high:g}" if high != float("inf") else f"{low:g} or more"
                    yield problem(spec, ERROR, "gate-out-of-range",
                                  f"{gate.metric} is reported {scale}, so this gate can never decide "
                                  "as meant", ("spec", "gates", index, bound_name), value=bound)
            if gate.metric in LOWER_IS_BETTER and gate.min is not None and gate.max is None:
                yield problem(spec, WARNING, "gate-direction",
                              f"{gate.metric} is better when lower; a min gate rejects good models",
                              ("spec", "gates", index, "min"), key=True, hint="did you mean max?")


@rule
def evaluation_data_fits(ctx: RuleContext) -> Iterator[Problem]:
    for spec, evaluation in ctx.evaluations():
        s = evaluation.spec
        dataset = ctx.dataset(s.dataset.name)
        if dataset is None:
            continue
        schema_type = dataset.spec.data_schema.type
        for index, metric in enumerate(s.metrics):
            if metric in GENERATION_METRICS and schema_type not in ("instruction", "chat"):
                yield problem(spec, ERROR, "metric-needs-reference",
                              f"{metric} compares generated text with a reference answer, but "
                              f"Dataset '{s.dataset.name}' has schema type {schema_type}",
                              ("spec", "metrics", index),
                              hint="use instruction or chat data, or only perplexity")
        if dataset.spec.split.ratio(s.dataset.split) == 0:
            yield problem(spec, ERROR, "empty-split",
                          f"Dataset '{s.dataset.name}' puts no rows in its {s.dataset.split} split "
                          f"(split.{s.dataset.split}: 0)", ("spec", "dataset", "split"))
        if s.dataset.split == "train" and evaluation.spec.is_gating:
            yield problem(spec, WARNING, "gate-on-training-data",
                          "gates scored on the training split overstate quality: the model has "
                          "seen these rows", ("spec", "dataset", "split"), hint="use test")
        if s.baseline and s.baseline.target == s.model.target:
            yield problem(spec, ERROR, "baseline-is-model",
                          "the baseline is the model under evaluation itself", ("spec", "baseline"),
                          key=True)


@rule
def deployments_are_gated(ctx: RuleContext) -> Iterator[Problem]:
    aliases: dict[tuple[str, str], LoadedSpec] = {}
    for spec, deployment in ctx.deployments():
        s = deployment.spec
        served = ResourceId("FineTune", s.model.fine_tune)
        resolved = True
        gating = False
        for index, name in enumerate(s.requires):
            evaluation = ctx.specs.resource(ResourceId("Evaluation", name), EvaluationResource)
            if evaluation is None:
                resolved = False
                continue
            if evaluation.spec.model.target != served:
                yield problem(spec, ERROR, "gate-for-other-model",
                              f"Evaluation '{name}' scores {evaluation.spec.model.target}, not "
                              f"the served {served}", ("spec", "requires", index))
            elif evaluation.spec.is_gating:
                gating = True
        if resolved and not gating and not s.allow_ungated:
            yield problem(spec, ERROR, "ungated-deployment",
                          f"nothing gates what this Deployment serves: no Evaluation with gates of "
                          f"{served} is in requires", ("spec", "requires") if s.requires else ("spec",),
                          key=True, hint="add one to requires, or set allowUngated: true")
        if ctx.settings.backend == "local" and s.autoscaling is not None:
            yield problem(spec, WARNING, "ignored-setting",
                          "the local backend runs one server: autoscaling takes effect on Kubernetes only",
                          ("spec", "autoscaling"))
        if (ctx.settings.backend == "kubernetes" and s.runtime == "vllm" and s.resources.gpus == 0):
            yield problem(spec, WARNING, "needs-gpu",
                          "vLLM on Kubernetes expects a GPU per replica, and resources.gpus is 0",
                          ("spec", "runtime"), hint="set resources.gpus, or use runtime: transformers")
        fine_tune = ctx.specs.resource(served, FineTuneResource)
        if fine_tune is not None:
            slot = (fine_tune.registered_model, s.alias)
            if slot in aliases:
                written = "alias" in s.model_fields_set
                yield problem(spec, ERROR, "duplicate-alias",
                              f"alias '{s.alias}'{'' if written else ' (the default)'} of registered "
                              f"model '{slot[0]}' is already moved by {aliases[slot].id}",
                              ("spec", "alias") if written else ("spec",), key=not written,
                              hint="give one of the Deployments another alias")
            else:
                aliases[slot] = spec


@rule
def service_names_start_with_a_letter(ctx: RuleContext) -> Iterator[Problem]:
    """A Deployment's Service, and the headless Service of a multi-node FineTune, are named after
    the spec; Service names are DNS-1035 labels (IsDNS1035Label), which start with a letter."""
    on_kubernetes = ctx.settings.backend == "kubernetes"  # elsewhere only `tuneops render` meets it
    for spec in ctx.specs:
        resource = spec.resource
        if isinstance(resource, DeploymentResource):
            service = "its Service"
        elif isinstance(resource, FineTuneResource) and resource.spec.resources.nodes > 1:
            service = "the Service that connects its nodes"
        else:
            continue
        if not kube.is_dns1035_label(resource.name):
            yield problem(spec, ERROR if on_kubernetes else WARNING, "invalid-kubernetes-name",
                          f"{resource.KIND} names become the name of {service}, which must start with a "
                          "letter (a DNS-1035 label)", ("metadata", "name"), value=resource.name,
                          hint="start the name with a letter")


@rule
def sources_are_pinned_and_allowed(ctx: RuleContext) -> Iterator[Problem]:
    allowed = ctx.settings.policy.allowed_sources
    for spec in ctx.specs:
        resource = spec.resource
        if not isinstance(resource, BaseModelResource | DatasetResource):
            continue
        source = parse_source(resource.spec.source)
        if source.scheme not in allowed:
            yield problem(spec, ERROR, "policy",
                          f"{source.scheme}:// sources are not allowed in this project "
                          f"(policy.allowedSources: {', '.join(allowed)})", ("spec", "source"))
        if source.scheme == "hf":
            revision = resource.spec.revision
            if revision is None:
                yield problem(spec, WARNING, "unpinned-revision",
                              "hf:// source without a revision: the Hub copy can change under you",
                              ("spec", "source"), hint="pin revision to a 40-character commit sha")
            elif not is_pinned_hf_revision(revision):
                yield problem(spec, WARNING, "unpinned-revision",
                              "revision is not a commit sha, so it can move",
                              ("spec", "revision"), value=revision,
                              hint="pin revision to a 40-character commit sha")
        if isinstance(resource, BaseModelResource) and resource.spec.trust_remote_code:
            setting = ctx.settings.policy.trust_remote_code
            if setting != "allow":
                yield problem(spec, ERROR if setting == "deny" else WARNING, "trust-remote-code",
                              "trustRemoteCode runs Python code from the model repository",
                              ("spec", "trustRemoteCode"),
                              hint="allow it for the project with policy.trustRemoteCode: allow"
                              if setting == "warn" else "the project policy denies it")


@rule
def local_files_exist(ctx: RuleContext) -> Iterator[Problem]:
    """Local data is part of what a spec means, so it must be there, and inside the spec
    repository (or policy.allowedFileRoots): see specs/confinement.py. A local *model* folder
    may not exist yet (a first step can build it), so only where it leads is checked."""
    roots = FileRoots.of_project(ctx.specs.root, ctx.settings.policy.allowed_file_roots)
    for spec in ctx.specs:
        resource = spec.resource
        checks: list[tuple[str, tuple[Any, ...], str]] = []
        if isinstance(resource, DatasetResource):
            checks.append((resource.spec.source, ("spec", "source"), "dataset file"))
        elif isinstance(resource, BaseModelResource):
            checks.append((resource.spec.source, ("spec", "source"), "model folder"))
            if resource.spec.chat_template.startswith("file://"):
                checks.append((resource.spec.chat_template, ("spec", "chatTemplate"), "chat template"))
        for uri, path, what in checks:
            source = parse_source(uri)
            if source.scheme != "file":
                continue
            local = source.local_path(spec.path.parent)
            try:
                found = local.exists()
                resolve_inside(local, roots.all, roots.describe())  # not built yet: where it would be
            except OutsideRoots as error:
                yield problem(spec, ERROR, "outside-repository", f"{what} {error}", path, value=uri,
                              hint=f"keep {what}s in the spec repository, or list the folder in "
                                   f"{SETTING} of tuneops.yaml")
                continue
            except (OSError, ValueError) as error:  # a name too long, a NUL byte
                yield problem(spec, ERROR, "missing-file", f"{what} path is not usable: "
                              f"{getattr(error, 'strerror', None) or error}", path, value=uri)
                continue
            if what == "model folder":
                continue
            if not found:
                yield problem(spec, ERROR, "missing-file",
                              f"{what} not found: {local}", path, value=uri,
                              hint="paths in file:// are relative to the spec file's folder")
                continue
            unreadable = _unreadable(local)
            if unreadable:
                yield problem(spec, ERROR, "missing-file", f"{what} cannot be read: {unreadable}: {local}",
                              path, value=uri)


def _unreadable(path: Path) -> str | None:
    """Why a file or folder that exists cannot be read, or None. Opened without blocking (a
    FIFO would wait for a writer) and closed at once: what a job reads, tried now."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as error:
        return error.strerror or str(error)
    return None


def check(specs: SpecSet, declared: set[ResourceId]) -> list[Problem]:
    ctx = RuleContext(specs, frozenset(declared), specs.settings)
    return [found for check_rule in RULES for found in check_rule(ctx)]


def find_duplicates(loaded: list[LoadedSpec]) -> tuple[dict[ResourceId, LoadedSpec], list[Problem]]:
    """First definition wins; every later one is an error pointing back at the first."""
    by_id: dict[ResourceId, LoadedSpec] = {}
    problems = []
    for spec in loaded:
        first = by_id.get(spec.id)
        if first is None:
            by_id[spec.id] = spec
            continue
        problems.append(problem(spec, ERROR, "duplicate-name",
                                f"{spec.id} is already defined at "
                                f"{first.position(('metadata', 'name'))}",
                                ("metadata", "name"), hint="names are unique per kind"))
    return by_id, problems
