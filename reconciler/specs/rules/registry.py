"""What every whole-repository rule is given (RuleContext), how it reports (problem), and the
registry it joins with `@rule` (RULES), kept apart from the rules so each family can import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from reconciler.config import ProjectSettings
from reconciler.specs.base import ResourceId
from reconciler.specs.basemodel import BaseModelResource
from reconciler.specs.dataset import DatasetResource
from reconciler.specs.deployment import DeploymentResource
from reconciler.specs.evaluation import EvaluationResource
from reconciler.specs.finetune import FineTuneResource
from reconciler.specs.loader import LoadedSpec
from reconciler.specs.policy import NO_APPROVAL, Approval
from reconciler.specs.problems import Problem, Severity, describe_value
from reconciler.specs.schema_errors import format_path
from reconciler.specs.specset import SpecSet


@dataclass(frozen=True)
class RuleContext:
    specs: SpecSet
    declared: frozenset[ResourceId]
    settings: ProjectSettings
    approval: Approval = NO_APPROVAL  # policies whose violations the command line approves

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

    def base_model_of(self, fine_tune: FineTuneResource) -> BaseModelResource | None:
        """The BaseModel under a FineTune, following fromFineTune (None where a link is missing
        or the chain loops: the reference rules report those)."""
        seen: set[str] = set()
        while fine_tune.spec.base_model is None:
            parent = fine_tune.spec.from_fine_tune or ""
            found = self.specs.resource(ResourceId("FineTune", parent), FineTuneResource)
            if found is None or parent in seen:
                return None
            seen.add(parent)
            fine_tune = found
        return self.specs.resource(ResourceId("BaseModel", fine_tune.spec.base_model), BaseModelResource)


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
