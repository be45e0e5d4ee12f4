"""deploy/: the reconcile daemon's manifests are valid Kubernetes objects, kustomize lists every
one of them, and the Role grants each verb the Kubernetes backend uses (and nothing broader)."""

from __future__ import annotations

import pytest
import yaml

from reconciler.backends.kubernetes import api as kubeapi
from reconciler.backends.kubernetes import backend as kubernetes
from reconciler.backends.kubernetes.validate import validate_manifests
from tests.conftest import REPO_ROOT

BASE = REPO_ROOT / "deploy" / "base"


def objects() -> list[dict]:
    return [
        doc
        for path in sorted(BASE.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


@pytest.mark.parametrize("version", ["1.30", "1.33"])
def test_the_manifests_are_valid_objects(version: str):
    found = objects()
    assert {obj["kind"] for obj in found} == {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    }
    assert validate_manifests(found, version) == []


def test_kustomize_lists_every_manifest():
    listed = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")


def test_the_role_grants_what_the_backend_uses_and_no_wildcard():
    (role,) = [obj for obj in objects() if obj["kind"] == "Role"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not any("*" in item for grant in granted for item in grant)

    def grants(kinds: tuple[str, ...], *verbs: str) -> set[tuple[str, str, str]]:
        return {(kubeapi.KINDS[k].group, kubeapi.KINDS[k].plural, v) for k in kinds for v in verbs}

    needed = grants(
        (*kubernetes.SERVER_KINDS, *kubernetes.JOB_KINDS), "create", "patch", "delete"
    )  # apply, stop
    needed |= grants(("Job", "Pod", "Deployment", *kubernetes.CUSTOM_WORKLOADS, *kubernetes.SERVER_KINDS),
                     "list")  # observe, stop
    needed |= grants(kubernetes.JOB_KINDS, "get") | grants(("Deployment", "ConfigMap"), "get")  # stop, serve
    needed.add(("", "pods/log", "get"))  # tuneops logs
    needed |= grants(("Lease",), "get", "create", "update")  # the daemon's leader election
    needed -= grants(("Pod",), "create", "patch", "delete")
    missing = needed - granted
    assert missing == set(), f"the Role lacks {sorted(missing)}"
