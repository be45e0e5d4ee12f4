"""`Sweep`: a hyperparameter search over a FineTune, each trial the template with some fields
changed, scored by one of the template's Evaluations.

Only the spec lives here (pure, no optuna): what is searched, how trials are scored and how
many may run. The engine that proposes and runs trials reads it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from reconciler.specs.base import (
    Bool,
    Float,
    Int,
    Reference,
    ReferenceName,
    Resource,
    ResourceId,
    SpecModel,
    SpecValueError,
    Str,
    field,
)

TRIAL_DIGEST_LENGTH = 10
EVALUATION_DIGEST_LENGTH = 4
TRIAL_SUFFIX_LENGTH = 1 + TRIAL_DIGEST_LENGTH + 1 + EVALUATION_DIGEST_LENGTH
"""A trial's FineTune is named `<sweep>-<10 hex digits>`, its copy of an Evaluation that name and
`-<4 hex digits>`: the suffix a sweep's name must leave room for."""
# A parameter: a dotted camelCase path into FineTune.spec, as the fields are written.
PARAMETER_PATH_PATTERN = r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$"
_PARAMETER_PATH = re.compile(PARAMETER_PATH_PATTERN)


def trial_name(sweep: str, digest: str) -> str:
    """The name of a sweep's trial FineTune: the sweep's name and the start of the trial's digest."""
    return f"{sweep}-{digest[:TRIAL_DIGEST_LENGTH]}"


def trial_evaluation_name(trial: str, evaluation: str) -> str:
    """A trial's copy of an Evaluation: the trial's name and the start of the Evaluation's digest."""
    return f"{trial}-{hashlib.sha256(evaluation.encode()).hexdigest()[:EVALUATION_DIGEST_LENGTH]}"


def is_trial_name(name: str, sweep: str) -> bool:
    """Whether `name` has the shape of a trial of `sweep` (`<sweep>-<10 lowercase hex>`), or of a
    trial's Evaluation (and `-<4 lowercase hex>`)."""
    pattern = (re.escape(sweep) + f"-[0-9a-f]{{{TRIAL_DIGEST_LENGTH}}}"
               + f"(-[0-9a-f]{{{EVALUATION_DIGEST_LENGTH}}})?")
    return re.fullmatch(pattern, name) is not None


# A trial's parameters are recorded as one MLflow tag (8,000 characters at most): these bound it.
MAX_PARAMETERS = 32
MAX_CHOICES = 64
MAX_CHOICE_LENGTH = 100
ChoiceValue = Bool | Int | Float | Str
DistributionKind = Literal["logUniform", "uniform", "intRange", "choice"]


def _distinct_key(value: Any) -> tuple[str, Any]:
    # true and 1 differ in a spec (a bool field refuses 1); 1 and 1.0 are one number
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    return ("text", value)


class Distribution(SpecModel):
    """Where one parameter's values are drawn from: set exactly one of the four."""

    log_uniform: tuple[Float, Float] | None = field(
        None, "`[low, high]`, 0 < low < high: drawn evenly on a log scale (learning rates).",
        example=[1.0e-4, 1.0e-2])
    uniform: tuple[Float, Float] | None = field(None, "`[low, high]`, low < high: drawn evenly.",
                                                example=[0.0, 0.1])
    int_range: tuple[Int, Int] | None = field(None, "`[low, high]`, low <= high: an integer, both "
                                                    "ends included.", example=[1, 4])
    choice: Annotated[tuple[ChoiceValue, ...], Field(min_length=1, max_length=MAX_CHOICES)] | None = field(
        None, f"One of these values (true/false, numbers or strings of at most {MAX_CHOICE_LENGTH} "
              f"characters, each listed once; at most {MAX_CHOICES}).",
        example=[8, 16, 32])

    @field_validator("choice")
    @classmethod
    def _choices_distinct(cls, value: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        if value is None:
            return value
        seen: set[tuple[str, Any]] = set()
        for item in value:
            if isinstance(item, str) and len(item) > MAX_CHOICE_LENGTH:
                raise SpecValueError(f"a choice is at most {MAX_CHOICE_LENGTH} characters (one has "
                                     f"{len(item)}): each trial's values are recorded in MLflow tags")
            key = _distinct_key(item)
            if key in seen:
                raise SpecValueError(f"lists {item!r} more than once")
            seen.add(key)
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [name for name in ("log_uniform", "uniform", "int_range", "choice")
                 if getattr(self, name) is not None]
        if len(given) != 1:
            named = f" (got {', '.join(self._alias(name) for name in given)})" if given else ""
            raise SpecValueError("set exactly one of logUniform, uniform, intRange or choice" + named,
                                 "e.g. {logUniform: [1.0e-4, 1.0e-2]} or {choice: [8, 16]}")
        if self.log_uniform is not None:
            low, high = self.log_uniform
            if not 0 < low < high:
                raise SpecValueError(f"logUniform needs 0 < low < high (got [{low:g}, {high:g}])")
        if self.uniform is not None:
            low, high = self.uniform
            if not low < high:
                raise SpecValueError(f"uniform needs low < high (got [{low:g}, {high:g}])",
                                     "for one value, use choice: [value]")
        if self.int_range is not None:
            low, high = self.int_range
            if low > high:
                raise SpecValueError(f"intRange needs low <= high (got [{low}, {high}])")
        return self

    @staticmethod
    def _alias(name: str) -> str:
        return {"log_uniform": "logUniform", "int_range": "intRange"}.get(name, name)

    @property
    def kind(self) -> DistributionKind:
        if self.log_uniform is not None:
            return "logUniform"
        if self.uniform is not None:
            return "uniform"
        if self.int_range is not None:
            return "intRange"
        return "choice"

    @property
    def is_finite(self) -> bool:
        """Whether a grid can list every value (choice and intRange can)."""
        return self.kind in ("choice", "intRange")

    def values_to_check(self) -> tuple[Any, ...]:
        """The values validation puts into the template: both ends of a range, every choice."""
        for bounds in (self.log_uniform, self.uniform, self.int_range):
            if bounds is not None:
                return tuple(dict.fromkeys(bounds))
        return tuple(self.choice or ())


ParameterPath = Annotated[Str, Field(pattern=PARAMETER_PATH_PATTERN)]


class Objective(SpecModel):
    evaluation: ReferenceName = field(
        doc="An Evaluation of the template FineTune: each trial is scored by it.",
                             example="support-sft-quality")
    metric: Str = field(doc="The metric of that Evaluation to optimise.", example="exact_match")
    direction: Literal["maximize", "minimize"] = field("maximize", "Whether higher or lower is better.")


class Pruning(SpecModel):
    """Stop trials early that are behind: the median rule on a metric logged while training."""

    metric: Str = field(doc="A metric the trainer logs while training: `loss`, or `eval_loss` when "
                            "the template evaluates a validation split during training.",
                        example="eval_loss")
    min_steps: Int = field(0, "Steps a trial trains before it may be stopped.", unit="steps", ge=0,
                           example=20)
    direction: Literal["minimize", "maximize"] = field("minimize", "Whether lower or higher is better.")
    min_trials: Int = field(2, "Finished trials needed before the median rule applies.", ge=1)


class SweepBudget(SpecModel):
    gpu_hours: Float = field(doc="Start no new trial once the sweep's trials have used this many "
                                 "GPU-hours together.", unit="GPU-hours", gt=0, example=50)


class SweepSpec(SpecModel):
    fine_tune: ReferenceName = field(
        doc="The template: every trial is this FineTune with `parameters` changed.",
                            example="support-sft")
    objective: Objective = field(doc="How trials are scored.")
    parameters: Annotated[dict[ParameterPath, Distribution],
                          Field(min_length=1, max_length=MAX_PARAMETERS)] = field(
        doc="What is searched: dotted camelCase paths into the FineTune's spec, each with where its "
            "values come from.",
        example={"training.learningRate": {"logUniform": [1.0e-4, 1.0e-2]},
                 "adapter.r": {"choice": [8, 16, 32]}})
    algorithm: Literal["tpe", "random", "grid", "cmaes"] = field(
        "tpe", "How the next trial is proposed: `tpe` (Tree-structured Parzen Estimator), `random`, "
               "`grid` (every combination; choice and intRange parameters only) or `cmaes`.")
    seed: Int = field(0, "Seed of the proposals: the same spec proposes the same trials.", ge=0,
                      le=2**32 - 1)
    max_trials: Int = field(10, "Trials to run at most.", ge=1, le=1000, operational=True)
    parallel_trials: Int = field(1, "Trials that may train at the same time.", ge=1, le=64,
                                 operational=True)
    pruning: Pruning | None = field(None, "Stop trials early that fall behind the median.",
                                    example={"metric": "eval_loss", "minSteps": 20})
    budget: SweepBudget | None = field(None, "A limit on what the sweep may spend.", operational=True,
                                       example={"gpuHours": 50})
    suspend: Bool = field(False, "Keep the spec but start no new trial.", operational=True)

    @field_validator("parameters", mode="before")
    @classmethod
    def _paths_written_as_paths(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                if isinstance(key, str) and not _PARAMETER_PATH.fullmatch(key):
                    raise SpecValueError(f"{key!r} is not a dotted path into the FineTune's spec",
                                         "e.g. training.learningRate")
        return value


class SweepResource(Resource):
    """A hyperparameter search whose trials are FineTunes, scored by an Evaluation."""

    KIND: ClassVar[str] = "Sweep"
    kind: Literal["Sweep"] = field(doc="`Sweep`.")
    spec: SweepSpec = field(doc="The template, what is searched, and how trials are scored.")

    def references(self) -> list[Reference]:
        return [
            Reference(ResourceId("FineTune", self.spec.fine_tune), ("spec", "fineTune"),
                      "template fine-tune"),
            Reference(ResourceId("Evaluation", self.spec.objective.evaluation),
                      ("spec", "objective", "evaluation"), "objective evaluation"),
        ]
