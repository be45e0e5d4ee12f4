"""The names tuneops gives its Kubernetes objects and the labels and annotations it marks them
with: what rendering writes and what the backend and health read back to know an object is ours,
which resource it belongs to and which fingerprint it runs, kept in one place so both agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from reconciler.specs.base import ResourceId, kubernetes_name

MANAGED_BY = "tuneops"
FINGERPRINT_ANNOTATION = "tuneops.dev/fingerprint"
MODEL_FINGERPRINT_ANNOTATION = "tuneops.dev/model-fingerprint"  # servers: the FineTune they serve
MODEL_VERSION_ANNOTATION = "tuneops.dev/model-version"
AUTOSCALED_ANNOTATION = "tuneops.dev/autoscaled"
KIND_LABEL, NAME_LABEL = "tuneops.dev/kind", "tuneops.dev/name"
# Name limits that leave room for what the launcher appends: an Indexed Job's pods have the
# hostname <job>-<index>, a DNS-1123 label (at most 63, for up to 10,000 nodes); a JobSet's pods
# are <jobset>-node-<job>-<index>-<5 random> (at most 63, its webhook checks), a PyTorchJob's
# pods and Services <job>-worker-<index>.
NAME_LIMIT = {"indexed-job": 58, "jobset": 47, "pytorchjob": 50}
SHORT_KIND = {"Dataset": "dataset", "FineTune": "finetune", "Evaluation": "eval", "Deployment": "serve"}


def object_name(rid: ResourceId, fingerprint: str, launcher: str | None = None) -> str:
    """Deterministic and at most 63 characters (fewer for launchers that append to it): a retry
    of the same fingerprint finds its Job instead of creating a twin. Servers are named after
    the Deployment alone."""
    name = kubernetes_name(rid.name)  # a team's `nlp.support-sft` is `nlp-support-sft`
    if rid.kind == "Deployment":
        return name
    suffix = f"-{SHORT_KIND[rid.kind]}-{fingerprint[:10]}"
    head = name[:NAME_LIMIT.get(launcher or "", 63) - len(suffix)].rstrip("-")
    if head != name:  # shortened: keep names of different resources apart
        head = head[:-7].rstrip("-") + "-" + hashlib.sha256(rid.name.encode()).hexdigest()[:6]
    return head + suffix


def resource_labels(rid: ResourceId, spec_labels: Mapping[str, str]) -> dict[str, str]:
    """The spec's own labels, then ours: the standard app.kubernetes.io set and the resource's
    kind and name, which the backend selects its objects by."""
    return {**spec_labels, "app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/name": rid.name,
            "app.kubernetes.io/component": rid.kind.lower(), KIND_LABEL: rid.kind, NAME_LABEL: rid.name}
