"""The registry of spec kinds: one place that knows them all."""

from __future__ import annotations

from reconciler.specs.base import Resource
from reconciler.specs.basemodel import BaseModelResource
from reconciler.specs.dataset import DatasetResource
from reconciler.specs.deployment import DeploymentResource
from reconciler.specs.evaluation import EvaluationResource
from reconciler.specs.finetune import FineTuneResource
from reconciler.specs.policy import PolicyResource
from reconciler.specs.sweep import SweepResource

KINDS: dict[str, type[Resource]] = {
    cls.KIND: cls
    for cls in (DatasetResource, BaseModelResource, FineTuneResource, EvaluationResource,
                SweepResource, DeploymentResource, PolicyResource)
}
"""Kind name -> model, in dependency order (what a kind may depend on comes before it)."""
RULE_KINDS = ("Policy",)
"""Kinds that are rules about the others: checked, never built, never in the graph."""
