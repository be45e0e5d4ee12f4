"""Rules on Sweeps: the objective is an Evaluation of the template that computes its metric,
every parameter is a searchable field of the template whose values the FineTune accepts, the
algorithm and pruning can work, and trial names are free.

Each value a parameter may take at its ends (both bounds of a range, every choice) is put into
the template as written and read by the FineTune model, so a trial the engine would start later
is refused now, at the parameter's line, with the field's own message.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel as PydanticModel
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from reconciler.specs.base import ResourceId
from reconciler.specs.evaluation import EvaluationResource, computed_metrics, computes_metric
from reconciler.specs.finetune import FineTuneResource, FineTuneSpec
from reconciler.specs.loader import LoadedSpec
from reconciler.specs.problems import Problem, describe_value
from reconciler.specs.rules.registry import ERROR, RuleContext, problem, rule
from reconciler.specs.schema_errors import concrete_types, problems_from_validation_error, suggest
from reconciler.specs.sweep import TRIAL_SUFFIX_LENGTH, Distribution, SweepResource, is_trial_name
from reconciler.values.kubernetes import DNS1123_LABEL_MAX

# Fields that say what the template is rather than how it trains: a trial that changed them would
# be another model, not another setting of this one.
IDENTITY_FIELDS = {
    "baseModel": "what the template starts from",
    "fromFineTune": "what the template starts from",
    "datasets": "what the template trains on",
    "method": "how the template learns (and which data it reads)",
    "register": "where the template's model is registered, not how it trains",
}
SCALARS = (bool, int, float, str)
# What the trainer logs while training, for the median pruner to compare trials on.
ALWAYS_LOGGED = ("loss",)
LOGGED_WITH_VALIDATION = ("eval_loss",)


def sweeps(ctx: RuleContext) -> Iterator[tuple[LoadedSpec, SweepResource]]:
    for spec in ctx.specs.of_kind("Sweep"):
        assert isinstance(spec.resource, SweepResource)
        yield spec, spec.resource


def template_of(ctx: RuleContext, sweep: SweepResource) -> LoadedSpec | None:
    """The template FineTune as loaded (None when it is missing: references_exist says so)."""
    loaded = ctx.specs.get(ResourceId("FineTune", sweep.spec.fine_tune))
    return loaded if loaded is not None and isinstance(loaded.resource, FineTuneResource) else None


@rule
def objective_scores_the_template(ctx: RuleContext) -> Iterator[Problem]:
    for spec, sweep in sweeps(ctx):
        objective = sweep.spec.objective
        evaluation = ctx.specs.resource(ResourceId("Evaluation", objective.evaluation), EvaluationResource)
        if evaluation is None:
            continue
        template = ResourceId("FineTune", sweep.spec.fine_tune)
        if evaluation.spec.model.target != template:
            yield problem(spec, ERROR, "objective-for-other-model",
                          f"Evaluation '{objective.evaluation}' scores {evaluation.spec.model.target}, "
                          f"not the template {template}: it cannot score the trials",
                          ("spec", "objective", "evaluation"),
                          hint=f"name an Evaluation whose model.fineTune is {sweep.spec.fine_tune}")
        elif not computes_metric(evaluation.spec, objective.metric):
            computed = computed_metrics(evaluation.spec)
            yield problem(spec, ERROR, "objective-metric-not-computed",
                          f"Evaluation '{objective.evaluation}' does not compute {objective.metric}; "
                          f"it computes {', '.join(computed)}", ("spec", "objective", "metric"),
                          hint=suggest(objective.metric, computed) or
                          f"add {objective.metric} to that Evaluation's metrics, or pick one it computes")


@rule
def parameters_are_searchable(ctx: RuleContext) -> Iterator[Problem]:
    for spec, sweep in sweeps(ctx):
        template = template_of(ctx, sweep)
        for path, distribution in sweep.spec.parameters.items():
            where = ("spec", "parameters", path)
            refused = _unsearchable(path)
            if refused is not None:
                code, message, hint = refused
                if code == "unknown-parameter":
                    yield problem(spec, ERROR, "unknown-parameter", message, where, key=True, hint=hint)
                else:
                    yield problem(spec, ERROR, "parameter-not-searchable", message, where, key=True,
                                  hint=hint)
                continue
            if sweep.spec.algorithm == "grid" and not distribution.is_finite:
                yield problem(spec, ERROR, "grid-needs-finite-values",
                              f"algorithm grid tries every combination, and {distribution.kind} has "
                              "no list of values", where,
                              hint="use choice or intRange, or algorithm: tpe")
            if template is not None:
                yield from _values_refused(spec, template, path, distribution)


def _fields(model: type[PydanticModel]) -> dict[str, FieldInfo]:
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _unsearchable(path: str) -> tuple[str, str, str | None] | None:
    """(code, message, hint) when `path` is not a field a trial may change, else None."""
    segments = path.split(".")
    if segments[0] in IDENTITY_FIELDS:
        return ("parameter-not-searchable",
                f"{segments[0]} is {IDENTITY_FIELDS[segments[0]]}: every trial keeps the template's, "
                "so that the sweep compares settings of one model",
                "sweep over another FineTune for another starting point, data or method")
    model: type[PydanticModel] = FineTuneSpec
    info: FieldInfo | None = None
    for index, segment in enumerate(segments):
        fields = _fields(model)
        info = fields.get(segment)
        written = ".".join(segments[:index])
        if info is None:
            where = f"FineTune spec.{written}" if written else "FineTune spec"
            return ("unknown-parameter", f"{where} has no field '{segment}'", suggest(segment, fields))
        if _is_operational(info):
            return ("parameter-not-searchable",
                    f"{'.'.join(segments[:index + 1])} is operational: changing it cannot change what "
                    "is trained, so every trial would be the template", None)
        if index == len(segments) - 1:
            break
        models = [c for c in concrete_types(info.annotation)
                  if isinstance(c, type) and issubclass(c, PydanticModel)]
        if not models:
            return ("unknown-parameter", f"FineTune spec.{'.'.join(segments[:index + 1])} is a value, "
                                         "not a mapping of fields", None)
        model = models[0]
    assert info is not None
    if not _is_scalar_field(info):
        return ("parameter-not-searchable",
                f"{path} holds a mapping or a list; a parameter is one value (a number, string or "
                "true/false)", "name a field inside it, e.g. training.learningRate")
    return None


def _is_operational(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("x-operational"))


def _is_scalar_field(info: FieldInfo) -> bool:
    for candidate in concrete_types(info.annotation):
        if typing.get_origin(candidate) is typing.Literal:
            continue
        if not (isinstance(candidate, type) and issubclass(candidate, SCALARS)):
            return False
    return True


def _put(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    *parents, last = path.split(".")
    for segment in parents:
        child = node.get(segment)
        if not isinstance(child, dict):
            child = node[segment] = {}
        node = child
    node[last] = value
    return out


def _values_refused(spec: LoadedSpec, template: LoadedSpec, path: str,
                    distribution: Distribution) -> Iterator[Problem]:
    written = template.document.data.get("spec")
    if not isinstance(written, dict):
        return
    for index, value in enumerate(distribution.values_to_check()):
        try:
            trial = FineTuneSpec.model_validate(_put(written, path, value))
        except ValidationError as error:
            found = problems_from_validation_error(error, FineTuneSpec, template.file,
                                                   lambda _loc, _key: (1, 1))
            reasons = "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in found)
            hints = [p.hint for p in found if p.hint]
            yield problem(spec, ERROR, "parameter-value-refused",
                          f"FineTune '{template.resource.name}' refuses {path} = "
                          f"{describe_value(value)} ({reasons})",
                          ("spec", "parameters", path, distribution.kind, index),
                          hint=hints[0] if hints else None)
            continue
        for conflict in trial.batch_conflicts():  # what the method's trainer would refuse
            yield problem(spec, ERROR, "parameter-value-refused",
                          f"FineTune '{template.resource.name}' refuses {path} = {describe_value(value)} "
                          f"({conflict.message})", ("spec", "parameters", path, distribution.kind, index),
                          hint=conflict.hint)


@rule
def pruning_metric_is_logged(ctx: RuleContext) -> Iterator[Problem]:
    for spec, sweep in sweeps(ctx):
        pruning = sweep.spec.pruning
        template_spec = template_of(ctx, sweep)
        if pruning is None or template_spec is None:
            continue
        assert isinstance(template_spec.resource, FineTuneResource)
        template = template_spec.resource.spec
        cadence = template.evaluation.every_steps is not None or template.evaluation.per_epoch
        validation = any((d := ctx.dataset(data.name)) is not None and d.spec.split.validation > 0
                         for data in template.datasets)
        logged = ALWAYS_LOGGED + (LOGGED_WITH_VALIDATION if cadence and validation else ())
        if pruning.metric in logged:
            continue
        where = ("spec", "pruning", "metric")
        if pruning.metric in LOGGED_WITH_VALIDATION:
            missing = [] if cadence else ["evaluation.everySteps (or perEpoch)"]
            missing += [] if validation else ["a dataset with split.validation > 0"]
            yield problem(spec, ERROR, "pruning-metric-not-logged",
                          f"{pruning.metric} is logged only while FineTune '{sweep.spec.fine_tune}' "
                          "evaluates a validation split during training, and it does not", where,
                          hint=f"give the template {' and '.join(missing)}, or prune on loss")
        else:
            yield problem(spec, ERROR, "pruning-metric-not-logged",
                          f"the trainer does not log {pruning.metric} while training; it logs "
                          f"{', '.join(logged)}", where, value=pruning.metric,
                          hint=suggest(pruning.metric, logged) or "prune on loss")


@rule
def trial_names_fit_and_are_free(ctx: RuleContext) -> Iterator[Problem]:
    for spec, sweep in sweeps(ctx):
        limit = DNS1123_LABEL_MAX - TRIAL_SUFFIX_LENGTH
        if len(sweep.name) > limit:
            yield problem(spec, ERROR, "sweep-name-too-long",
                          f"a Sweep's name is at most {limit} characters (it has {len(sweep.name)}): its "
                          "trials are named <sweep>-<10 hex digits>, their Evaluations that and "
                          f"-<4 hex digits>, at most {DNS1123_LABEL_MAX}",
                          ("metadata", "name"), value=sweep.name)
        for other in ctx.specs:
            if is_trial_name(other.resource.name, sweep.name):
                yield problem(other, ERROR, "trial-name-taken",
                              f"{other.id} is named like a trial of Sweep '{sweep.name}' "
                              "(<sweep>-<10 hex digits>), a name its trials take",
                              ("metadata", "name"), value=other.resource.name,
                              hint="rename it")
