"""A trial as ordinary resources: the template FineTune with the trial's parameters, and each
Evaluation the sweep scores it with, pointed at it.

A trial's FineTune is named `<sweep>-<digest>`, the digest taken over the template's
fingerprint and the parameters, so a trial is identified by what it trains: the same parameters
on the same template are the same trial (and the same fingerprint) whatever order the YAML
lists them in and whichever trial number suggested them. Its model registers under its own name.
Pure: specs and fingerprint inputs in, resources and fingerprint inputs out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler.fingerprint import (
    RECIPE_VERSIONS,
    FingerprintInput,
    canonical_json,
    produced_spec,
    resolved_spec,
)
from reconciler.specs.base import ResourceId
from reconciler.specs.deployment import DeploymentResource
from reconciler.specs.evaluation import EvaluationResource
from reconciler.specs.finetune import FineTuneResource
from reconciler.specs.loader import LoadedSpec
from reconciler.specs.specset import SpecSet
from reconciler.specs.sweep import (
    TRIAL_DIGEST_LENGTH,
    SweepResource,
    is_trial_name,
    trial_evaluation_name,
    trial_name,
)


@dataclass(frozen=True)
class TrialResources:
    """One trial's FineTune and Evaluations, with their fingerprint inputs."""

    number: int | None
    params: Mapping[str, Any]
    fine_tune: LoadedSpec
    evaluations: Mapping[str, LoadedSpec]  # the sweep's Evaluation name -> the trial's copy
    inputs: Mapping[ResourceId, FingerprintInput]

    @property
    def fine_tune_id(self) -> ResourceId:
        return self.fine_tune.id

    @property
    def fingerprint(self) -> str:
        return self.inputs[self.fine_tune_id].fingerprint

    def evaluation_id(self, evaluation: str) -> ResourceId:
        return self.evaluations[evaluation].id

    def evaluation_fingerprint(self, evaluation: str) -> str:
        return self.inputs[self.evaluation_id(evaluation)].fingerprint


def sweep_evaluations(specs: SpecSet, sweep: SweepResource) -> tuple[str, ...]:
    """The Evaluations every trial is scored with: the objective's, and those that gate the
    Deployments serving the sweep. Sorted, the objective's first."""
    gating = set()
    for loaded in specs.of_kind("Deployment"):
        deployment = loaded.resource
        if isinstance(deployment, DeploymentResource) and deployment.spec.model.sweep == sweep.name:
            gating.update(deployment.spec.requires)
    objective = sweep.spec.objective.evaluation
    return (objective, *sorted(gating - {objective}))


def with_path(spec: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of a camelCase spec dict with the dotted `path` set to `value`."""
    out = dict(spec)
    head, _, rest = path.partition(".")
    if rest:
        inner = out.get(head)
        out[head] = with_path(inner if isinstance(inner, Mapping) else {}, rest, value)
    else:
        out[head] = value
    return out


def trial_digest(template_fingerprint: str, params: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"template": template_fingerprint, "params": dict(params)})
                          .encode("utf-8")).hexdigest()


def _copy(loaded: LoadedSpec, kind: type, name: str, spec: Mapping[str, Any]) -> LoadedSpec:
    """A copy of a spec under another name: its labels and annotations kept (they reach the
    trial's Kubernetes objects), its file and positions those of the spec it copies."""
    metadata = loaded.resource.metadata
    document = {"apiVersion": loaded.resource.api_version, "kind": kind.KIND,  # type: ignore[attr-defined]
                "metadata": {"name": name, "labels": dict(metadata.labels),
                             "annotations": dict(metadata.annotations)},
                "spec": dict(spec)}
    return replace(loaded, resource=kind.model_validate(document, context={"qualified": True}))


def materialize(specs: SpecSet, inputs: Mapping[ResourceId, FingerprintInput], sweep: SweepResource,
                params: Mapping[str, Any], number: int | None = None) -> TrialResources:
    """The trial with these parameters, as resources the job builder and the planner take."""
    template_id = ResourceId("FineTune", sweep.spec.fine_tune)
    template = specs.get(template_id)
    assert template is not None, template_id
    template_input = inputs[template_id]
    name = trial_name(sweep.name, trial_digest(template_input.fingerprint, params))
    spec = resolved_spec(template.resource)
    for path, value in sorted(params.items()):
        spec = with_path(spec, path, value)
    spec = with_path(spec, "register.model", name)
    fine_tune = _copy(template, FineTuneResource, name, spec)
    fine_tune_id = ResourceId("FineTune", name)
    found: dict[ResourceId, FingerprintInput] = {
        fine_tune_id: FingerprintInput("FineTune", name, RECIPE_VERSIONS["FineTune"],
                                       produced_spec(fine_tune.resource), dict(template_input.inputs),
                                       dict(template_input.sources))}
    evaluations: dict[str, LoadedSpec] = {}
    for evaluation in sweep_evaluations(specs, sweep):
        eid = ResourceId("Evaluation", evaluation)
        loaded = specs.get(eid)
        if loaded is None or eid not in inputs:
            continue
        copy_name = trial_evaluation_name(name, evaluation)
        copy = _copy(loaded, EvaluationResource, copy_name,
                     with_path(resolved_spec(loaded.resource), "model", {"fineTune": name}))
        original = inputs[eid]
        upstream = {key: value for key, value in original.inputs.items() if key != str(template_id)}
        upstream[str(fine_tune_id)] = found[fine_tune_id].fingerprint
        evaluations[evaluation] = copy
        found[copy.id] = FingerprintInput("Evaluation", copy_name, RECIPE_VERSIONS["Evaluation"],
                                          produced_spec(copy.resource), upstream, dict(original.sources))
    return TrialResources(number, dict(params), fine_tune, evaluations, found)


def with_trials(specs: SpecSet, inputs: Mapping[ResourceId, FingerprintInput],
                trials: Iterable[TrialResources]) -> tuple[SpecSet, dict[ResourceId, FingerprintInput]]:
    """The project's specs and fingerprint inputs with these trials' resources added, for the
    job builder (a trial's jobs resolve their upstreams like any FineTune's)."""
    by_id = dict(specs.by_id)
    all_inputs = dict(inputs)
    for trial in trials:
        by_id[trial.fine_tune_id] = trial.fine_tune
        for copy in trial.evaluations.values():
            by_id[copy.id] = copy
        all_inputs.update(trial.inputs)
    return replace(specs, by_id=by_id), all_inputs


def trial_origin(specs: SpecSet, rid: ResourceId) -> ResourceId | None:
    """The spec a sweep trial's FineTune or Evaluation copies (its template, or the Evaluation it
    scores with), for what only the spec says: labels, resources, scheduling. None otherwise."""
    for loaded in specs.of_kind("Sweep"):
        sweep = loaded.resource
        if not isinstance(sweep, SweepResource) or not is_trial_name(rid.name, sweep.name):
            continue
        if rid.kind == "FineTune":
            return ResourceId("FineTune", sweep.spec.fine_tune)
        trial = rid.name[:len(sweep.name) + 1 + TRIAL_DIGEST_LENGTH]
        for evaluation in sweep_evaluations(specs, sweep):
            if trial_evaluation_name(trial, evaluation) == rid.name:
                return ResourceId("Evaluation", evaluation)
    return None


def largest_rank(specs: SpecSet, sweep: SweepResource) -> int | None:
    """The largest LoRA rank a sweep's trials can have: what a server of any of them must allow."""
    template = specs.resource(ResourceId("FineTune", sweep.spec.fine_tune), FineTuneResource)
    if template is None:
        return None
    ranks = [template.spec.adapter.r]
    searched = sweep.spec.parameters.get("adapter.r")
    if searched is not None:
        ranks += [int(value) for value in searched.values_to_check() if isinstance(value, int)]
    return max(ranks)
