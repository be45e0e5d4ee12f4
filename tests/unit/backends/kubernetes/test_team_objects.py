"""Each team's namespace, the daemon's access there and its Kueue queues, as render prints them:
least privilege (the daemon's own Role without the Lease), one object per namespace, and every
object valid against the Kubernetes and Kueue schemas."""

from __future__ import annotations

from pathlib import Path

import yaml

from reconciler.backends.kubernetes.teams import DAEMON_RULES, team_objects
from reconciler.backends.kubernetes.validate import validate_manifests
from reconciler.config import ProjectSettings
from tests.conftest import REPO_ROOT


def settings(**teams: dict) -> ProjectSettings:
    return ProjectSettings.model_validate({"backend": "kubernetes", "kubernetes": {"namespace": "ml"},
                                           "teams": teams})


def test_the_team_role_is_the_daemons_own_without_the_lease():
    (role,) = [doc for doc in yaml.safe_load_all((REPO_ROOT / "deploy" / "base" / "role.yaml").read_text())
               if doc]
    own = {(rule["apiGroups"][0], rule["resources"][0], tuple(rule["verbs"])) for rule in role["rules"]}
    assert set(DAEMON_RULES) == {rule for rule in own if rule[1] != "leases"}


def test_teams_get_their_namespace_queues_and_binding_and_they_validate():
    found = team_objects(settings(
        nlp={"paths": ["teams/nlp/**"], "namespace": "nlp-train", "queue": "nlp", "quota": {"gpus": 16}},
        vision={"paths": ["teams/vision"], "namespace": "nlp-train", "queue": "vision", "quota": {"gpus": 2}},
        ops={"paths": ["teams/ops"]},  # the project's namespace, no quota: nothing to render
    ))
    kinds = [(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]) for obj in found]
    assert kinds == [
        ("ResourceFlavor", None, "tuneops-default"),
        ("Namespace", None, "nlp-train"), ("Role", "nlp-train", "tuneops"),
        ("RoleBinding", "nlp-train", "tuneops"),
        ("ClusterQueue", None, "tuneops-nlp"), ("LocalQueue", "nlp-train", "nlp"),
        ("ClusterQueue", None, "tuneops-vision"), ("LocalQueue", "nlp-train", "vision"),
    ]  # a namespace two teams share is rendered once
    assert validate_manifests(found, "1.30") == []


def test_a_volcano_project_renders_no_kueue_queue():
    volcano = ProjectSettings.model_validate({
        "kubernetes": {"namespace": "ml", "queueing": "volcano"},
        "teams": {"nlp": {"paths": ["teams/nlp"], "namespace": "nlp", "queue": "nlp", "quota": {"gpus": 1}}}})
    assert [obj["kind"] for obj in team_objects(volcano)] == ["Namespace", "Role", "RoleBinding"]


def test_no_teams_no_objects(tmp_path: Path):
    assert team_objects(ProjectSettings()) == []
