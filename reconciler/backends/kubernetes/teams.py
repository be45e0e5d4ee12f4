"""Each team's place in the cluster, as `tuneops render` prints it for the platform team to
apply: its Namespace, the ServiceAccount its jobs run as (`kubernetes.serviceAccount`), a Role
and RoleBinding that let the daemon run jobs and servers there (and nothing else), and its Kueue
queues: a ClusterQueue holding the team's GPU quota and the LocalQueue its jobs are labelled with.

The daemon never creates these itself: namespaces, quotas and RBAC are cluster administration,
reviewed and applied by whoever owns the cluster.
"""

from __future__ import annotations

from typing import Any

from reconciler.backends.kubernetes.labels import MANAGED_BY
from reconciler.config import ProjectSettings, TeamSettings

KUEUE_API = "kueue.x-k8s.io/v1beta1"
RESOURCE_FLAVOR = "tuneops-default"
"""One flavor without node labels: quotas count GPUs, wherever they are. Clusters with several
GPU products split them with their own flavors and ClusterQueues instead."""
TEAM_LABEL = "tuneops.dev/team"
DEFAULT_CPU_QUOTA, DEFAULT_MEMORY_QUOTA = "1000", "64Ti"
"""Kueue admits only workloads whose every requested resource its ClusterQueue covers; a team
quota that names only GPUs covers CPU and memory with these, large enough never to bind."""

# What the daemon does in a team namespace: deploy/base/role.yaml without the Lease, which it
# holds in its own namespace (a test keeps the two the same).
DAEMON_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("batch", "jobs", ("get", "list", "create", "patch", "delete")),
    ("", "pods", ("list",)),
    ("", "pods/log", ("get",)),
    ("", "configmaps", ("get", "list", "create", "patch", "delete")),
    ("", "services", ("get", "list", "create", "patch", "delete")),
    ("apps", "deployments", ("get", "list", "create", "patch", "delete")),
    ("autoscaling", "horizontalpodautoscalers", ("list", "create", "patch", "delete")),
    ("jobset.x-k8s.io", "jobsets", ("get", "list", "create", "patch", "delete")),
    ("kubeflow.org", "pytorchjobs", ("get", "list", "create", "patch", "delete")),
    ("scheduling.volcano.sh", "podgroups", ("get", "create", "patch", "delete")),
)


def cluster_queue_name(team: str) -> str:
    return f"tuneops-{team}"


def team_objects(settings: ProjectSettings) -> list[dict[str, Any]]:
    """The objects that give every team its namespace, the daemon's access there, and its
    queues; none for a project without teams."""
    objects: list[dict[str, Any]] = []
    kueue = settings.kubernetes.queueing == "kueue"
    if kueue and any(team.quota is not None for team in settings.teams.values()):
        objects.append(_object(KUEUE_API, "ResourceFlavor", RESOURCE_FLAVOR, None, {}, spec={}))
    home = settings.kubernetes.namespace
    namespaces_done: set[str] = set()
    for name, team in sorted(settings.teams.items()):
        namespace = settings.namespace_of(name)
        labels = {TEAM_LABEL: name}
        if namespace != home and namespace not in namespaces_done:
            namespaces_done.add(namespace)
            objects += _namespace_objects(settings, namespace, labels)
        if kueue and team.quota is not None:
            objects += _queues(name, team, namespace, labels)
    return objects


def _object(api_version: str, kind: str, name: str, namespace: str | None, labels: dict[str, str],
            **body: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = {"app.kubernetes.io/managed-by": MANAGED_BY, **labels}
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **body}


def _namespace_objects(settings: ProjectSettings, namespace: str,
                       labels: dict[str, str]) -> list[dict[str, Any]]:
    role = "tuneops"
    rules = [{"apiGroups": [group], "resources": [resource], "verbs": list(verbs)}
             for group, resource, verbs in DAEMON_RULES]
    jobs_account = settings.kubernetes.service_account  # the jobs run as it, in every namespace
    accounts = [_object("v1", "ServiceAccount", jobs_account, namespace, labels)] if jobs_account else []
    return [
        _object("v1", "Namespace", namespace, None, labels), *accounts,
        _object("rbac.authorization.k8s.io/v1", "Role", role, namespace, labels, rules=rules),
        _object("rbac.authorization.k8s.io/v1", "RoleBinding", role, namespace, labels,
                roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                subjects=[{"kind": "ServiceAccount", "name": settings.kubernetes.daemon_service_account,
                           "namespace": settings.kubernetes.namespace}]),
    ]


def _queues(name: str, team: TeamSettings, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    assert team.quota is not None
    quotas = [("cpu", team.quota.cpu or DEFAULT_CPU_QUOTA),
              ("memory", team.quota.memory or DEFAULT_MEMORY_QUOTA), ("nvidia.com/gpu", team.quota.gpus)]
    cluster_queue = _object(KUEUE_API, "ClusterQueue", cluster_queue_name(name), None, labels, spec={
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "queueingStrategy": "BestEffortFIFO",
        "resourceGroups": [{
            "coveredResources": [resource for resource, _ in quotas],
            "flavors": [{"name": RESOURCE_FLAVOR, "resources": [
                {"name": resource, "nominalQuota": quota} for resource, quota in quotas]}],
        }],
    })
    objects = [cluster_queue]
    if team.queue:
        objects.append(_object(KUEUE_API, "LocalQueue", team.queue, namespace, labels,
                               spec={"clusterQueue": cluster_queue_name(name)}))
    return objects
