"""`Deployment`: serve the newest model version of a FineTune (or a Sweep's best trial) that
passed its gates."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Strict, ValidationInfo, field_validator, model_validator

from reconciler.specs.base import (
    Bool,
    Float,
    Int,
    Quantity,
    Reference,
    ReferenceName,
    Resource,
    ResourceId,
    SpecModel,
    SpecValueError,
    field,
    require_exactly_one,
)
from reconciler.values.kubernetes import MetricName, NodeLabelValue

# Matched whole: `$` also matches before a final newline.
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,254}")
_RESERVED_ALIAS = re.compile(r"[vV][0-9]+")


def check_alias(value: str) -> str:
    if _RESERVED_ALIAS.fullmatch(value):
        raise SpecValueError("aliases of the form v<number> are reserved by the MLflow registry")
    if not _ALIAS.fullmatch(value):
        raise SpecValueError("must start with a letter or '_' and contain only letters, digits, "
                             "'_' and '-'")
    return value


class DeployedModel(SpecModel):
    fine_tune: ReferenceName | None = field(
        None, "The FineTune whose model versions are served.",
                                   example="support-sft")
    sweep: ReferenceName | None = field(
        None, "A Sweep: its best trial that passes `requires` is served.",
                               example="support-lr", added_later=True)

    @model_validator(mode="after")
    def _exactly_one(self) -> DeployedModel:
        require_exactly_one(self, "fine_tune", "sweep")
        return self

    @property
    def source(self) -> ResourceId:
        """What the served versions come from: a FineTune, or a Sweep's trials."""
        if self.sweep is not None:
            return ResourceId("Sweep", self.sweep)
        return ResourceId("FineTune", self.fine_tune or "")


class ServingResources(SpecModel):
    gpus: Int = field(0, "GPUs per replica.", ge=0, le=64)
    gpu_product: NodeLabelValue | None = field(
        None, "GPU model to schedule on (the node label `nvidia.com/gpu.product`).", example="NVIDIA-L40S")
    cpu: Quantity | None = field(None, "CPU request per replica.", example="8")
    memory: Quantity | None = field(None, "Memory request per replica.", example="48Gi")


class Autoscaling(SpecModel):
    """A HorizontalPodAutoscaler between `replicas` and `maxReplicas`, on a per-pod metric. GPU
    servers do not scale on CPU: the default is vLLM's queue length, which a metrics adapter
    (e.g. prometheus-adapter) must serve to the HPA as a Pods metric."""

    max_replicas: Int = field(doc="At most this many replicas; `replicas` is the least.", example=4,
                              ge=1, le=1000)
    metric: MetricName = field("vllm:num_requests_waiting", "Per-pod metric the HPA keeps at `target`, "
                                                         "as the metrics adapter names it.")
    target: Float = field(5.0, "Average value of the metric per replica to aim for.", gt=0)


class DeploymentSpec(SpecModel):
    model: DeployedModel = field(doc="What is served.")
    requires: tuple[ReferenceName, ...] = field(
        (), "Evaluations of that FineTune (of a Sweep's template FineTune) whose gates a model "
           "version must pass to be served.",
        example=["support-sft-quality"])
    @field_validator("requires")
    @classmethod
    def _requires_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise SpecValueError(f"lists {', '.join(repeated)} more than once")
        return value

    allow_ungated: Bool = field(
        False, "Serve without any gating Evaluation. Refused unless set, so that nothing reaches "
               "users unchecked by accident.")
    runtime: Literal["vllm", "transformers"] = field(
        "vllm", "Server: vLLM on Kubernetes; the built-in transformers server locally.")
    merge_adapter: Bool = field(False, "Serve weights with the adapter merged in, instead of base "
                                       "model plus adapter.")
    replicas: Int = field(1, "Server replicas (the least, with autoscaling).", ge=1, le=1000,
                          operational=True)
    autoscaling: Autoscaling | None = field(
        None, "Scale replicas with load (Kubernetes: a HorizontalPodAutoscaler).", operational=True,
        example={"maxReplicas": 4, "metric": "vllm:num_requests_waiting", "target": 5})

    @field_validator("autoscaling")
    @classmethod
    def _above_replicas(cls, autoscaling: Autoscaling | None, info: ValidationInfo) -> Autoscaling | None:
        replicas = info.data.get("replicas")
        if autoscaling is not None and replicas is not None and autoscaling.max_replicas < replicas:
            raise SpecValueError(f"maxReplicas ({autoscaling.max_replicas}) is below replicas ({replicas})")
        return autoscaling

    resources: ServingResources = field(default_factory=ServingResources,
                                        doc="Compute per replica.", operational=True)
    alias: Annotated[str, Strict(), AfterValidator(check_alias)] = field(
        "production", "Registry alias moved to the version being served.", operational=True)
    suspend: Bool = field(False, "Keep the spec but start nothing new for it.", operational=True)


class DeploymentResource(Resource):
    """A served model behind an OpenAI-compatible endpoint."""

    KIND: ClassVar[str] = "Deployment"
    kind: Literal["Deployment"] = field(doc="`Deployment`.")
    spec: DeploymentSpec = field(doc="What is served and what it must pass first.")

    def references(self) -> list[Reference]:
        model = self.spec.model
        refs = [Reference(model.source, ("spec", "model", "sweep" if model.sweep else "fineTune"),
                          "served sweep" if model.sweep else "served fine-tune")]
        for index, evaluation in enumerate(self.spec.requires):
            refs.append(Reference(ResourceId("Evaluation", evaluation), ("spec", "requires", index),
                                  "required evaluation"))
        return refs
