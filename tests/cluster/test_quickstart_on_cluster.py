"""The whole quickstart on a REAL cluster (kind, k3s or any other): the trainer image runs every
job, pods check the data and the base model out from a Git remote, MLflow records the lineage,
and the fine-tuned model ends up served. Skipped unless KUBECONFIG and the four settings below
are given (docs/kubernetes.md, "Running the cluster suite", says how to set them up on kind):

- TUNEOPS_CLUSTER_IMAGE: the trainer image (deploy/trainer.Dockerfile), pullable by the nodes;
- TUNEOPS_CLUSTER_MLFLOW: an MLflow server reachable both from here and from pods;
- TUNEOPS_CLUSTER_GIT_REMOTE: a Git remote this test may push to and pods may clone from;
- TUNEOPS_CLUSTER_STORAGE_CLAIM: a PersistentVolumeClaim in the namespace, for the storage root.

The same journey runs on the fake API server in every CI run
(tests/e2e/test_kubernetes_backend.py); this suite is what the fake cannot vouch for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from reconciler.backends.kubernetes.api import KubeApi, load_connection
from tests.support.reconcile_support import CLI_ENV, GIT_ENV, QUICKSTART

NEEDED = (
    "TUNEOPS_CLUSTER_IMAGE",
    "TUNEOPS_CLUSTER_MLFLOW",
    "TUNEOPS_CLUSTER_GIT_REMOTE",
    "TUNEOPS_CLUSTER_STORAGE_CLAIM",
)
MISSING = [name for name in ("KUBECONFIG", *NEEDED) if not os.environ.get(name)]
NAMESPACE = os.environ.get("TUNEOPS_CLUSTER_NAMESPACE", "tuneops-test")

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"needs a real cluster and {', '.join(MISSING)} (none here: these "
        "machines cannot run one); see docs/kubernetes.md, 'Running the "
        "cluster suite'",
    ),
]


def tuneops(root: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    env = {**os.environ, **CLI_ENV, "TUNEOPS_PLAIN": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=root, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_quickstart_trains_evaluates_and_serves_on_a_real_cluster(tmp_path: Path):
    run = uuid.uuid4().hex[:8]
    root = tmp_path / "specs"
    shutil.copytree(QUICKSTART, root, ignore=shutil.ignore_patterns(".tuneops", "__pycache__"))
    with (root / "fine-tune.yaml").open("a") as spec:
        spec.write(f"  register:\n    model: fruit-sft-{run}\n")
    (root / "tuneops.yaml").write_text(
        "backend: kubernetes\n"
        f"mlflow:\n  trackingUri: {os.environ['TUNEOPS_CLUSTER_MLFLOW']}\n  experiment: cluster-{run}\n"
        f"kubernetes:\n  namespace: {NAMESPACE}\n  image: {os.environ['TUNEOPS_CLUSTER_IMAGE']}\n"
        f"  storageClaim: {os.environ['TUNEOPS_CLUSTER_STORAGE_CLAIM']}\n"
    )
    (root / ".gitignore").write_text(".tuneops/\n")
    git(root, "init", "-q", "-b", f"cluster-{run}")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "the quickstart, on a cluster")
    git(root, "remote", "add", "origin", os.environ["TUNEOPS_CLUSTER_GIT_REMOTE"])
    git(root, "push", "-q", "origin", f"cluster-{run}")

    try:
        applied = tuneops(root, "apply", ".", "--yes")
        assert applied.returncode == 0, applied.stdout[-5000:] + applied.stderr[-5000:]
        assert "fruit-bot: serving" in applied.stdout

        planned = tuneops(root, "plan", ".", "--format", "json")
        assert planned.returncode == 0, planned.stderr
        # nothing left to do; the quickstart's Sweep stays suspended
        assert {action["action"] for action in json.loads(planned.stdout)["actions"]} == {"noop", "suspended"}

        # The server answers through the API server's service proxy.
        api = KubeApi(load_connection(namespace=NAMESPACE))
        health = api.pool.request(
            "GET",
            f"{api.connection.host}/api/v1/namespaces/{NAMESPACE}/services/fruit-bot:80/proxy/health",
            headers=api.connection.auth_headers(),
        )
        assert health.status == 200, health.data[:500]
    finally:  # the server goes with `tuneops stop`; this run's finished Jobs and job files by hand
        tuneops(root, "stop", ".")
        head = git(root, "rev-parse", "HEAD")
        api = KubeApi(load_connection(namespace=NAMESPACE))
        for kind in ("Job", "ConfigMap"):
            for obj in api.list(kind, NAMESPACE, "app.kubernetes.io/managed-by=tuneops"):
                if (obj["metadata"].get("annotations") or {}).get("tuneops.dev/git-commit") == head:
                    api.delete(kind, NAMESPACE, obj["metadata"]["name"])
