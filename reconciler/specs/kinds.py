"""The registry of spec kinds: one place that knows all five."""

from __future__ import annotations

from reconciler.specs.base import Resource
from reconciler.specs.basemodel import BaseModelResource
from reconciler.specs.dataset import DatasetResource
from reconciler.specs.deployment import DeploymentResource
from reconciler.specs.evaluation import EvaluationResource
from reconciler.specs.finetune import FineTuneResource

KINDS: dict[str, type[Resource]] = {
    cls.KIND: cls
    for cls in (DatasetResource, BaseModelResource, FineTuneResource, EvaluationResource,
                DeploymentResource)
}
"""Kind name -> model, in dependency order (what a kind may depend on comes before it)."""
