"""Credentials stay where the operator put them: a password in the tracking URI, a token in the
Git remote and HF_TOKEN are planted, the quickstart is applied, rendered and its logs read, and
no output, job file, manifest, log or MLflow run holds any of them; yet every request reached
MLflow (behind a proxy that asks for the password) with them."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest

from tests.conftest import CliResult
from tests.support.http_support import BasicAuthProxy
from tests.support.reconcile_support import SpecRepo
from tests.support.runtime_support import needs_training

RESOURCES = ("Dataset/fruit-colors", "FineTune/fruit-sft", "Evaluation/fruit-sft-quality",
             "Deployment/fruit-bot")
KUBERNETES_SETTINGS = """\
kubernetes:
  image: registry.example.internal/ml/tuneops-trainer:0.1.0
  storageClaim: tuneops-store
  secrets:
    mlflow: mlflow-auth
"""


def planted_secrets() -> dict[str, str]:
    """Values unique to one test, so finding one anywhere can only mean it leaked."""
    unique = uuid.uuid4().hex
    return {"tracking password": f"pw{unique[:12]}", "git token": f"ghp_{unique[12:28]}",
            "HF_TOKEN": f"hf_{unique[16:32]}"}


def leaks(planted: dict[str, str], where: str, content: str | bytes) -> list[str]:
    text = content.decode("utf-8", errors="replace") if isinstance(content, bytes) else content
    return [f"{what} in {where}" for what, value in planted.items() if value in text]


def leaks_in_files(planted: dict[str, str], folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            found += leaks(planted, str(path.relative_to(folder.parent)), path.read_bytes())
    return found


def leaks_in_output(planted: dict[str, str], command: str, result: CliResult) -> list[str]:
    return leaks(planted, f"the output of `tuneops {command}`", result.output)


@needs_training
@pytest.mark.slow
def test_planted_credentials_reach_no_output_job_file_manifest_or_log(tmp_path: Path, mlflow_server):
    planted = planted_secrets()
    proxy = BasicAuthProxy(mlflow_server.uri, "ci-user", planted["tracking password"])
    repo = SpecRepo(tmp_path / "specs", f"http://ci-user:{planted['tracking password']}@{proxy.host}")
    repo.git("remote", "add", "origin", f"https://{planted['git token']}@git.example.invalid/ml/specs.git")
    env = {"HF_TOKEN": planted["HF_TOKEN"]}
    found: list[str] = []
    try:
        applied = repo.tuneops("apply", ".", "--yes", env=env)
        assert applied.exit_code == 0, applied.output
        assert "Deployment/fruit-bot" in applied.stdout
        found += leaks_in_output(planted, "apply", applied)
        for command in (("plan", "."), ("status", "."), ("plan", ".", "--format", "json")):
            result = repo.tuneops(*command, env=env)
            assert result.exit_code == 0, result.output
            found += leaks_in_output(planted, " ".join(command), result)
        for resource in RESOURCES:
            logged = repo.tuneops("logs", resource, ".", env=env)
            assert logged.exit_code == 0 and logged.stdout.strip(), logged.output
            found += leaks_in_output(planted, f"logs {resource}", logged)

        # The jobs reached MLflow with the credentials handed to them in their environment.
        assert proxy.refused == [] and proxy.authorized > 0
        import mlflow

        client = mlflow.MlflowClient(mlflow_server.uri)
        runs = client.search_runs([client.get_experiment_by_name(repo_experiment(repo)).experiment_id])
        assert {run.data.tags.get("tuneops.kind") for run in runs} >= {"Dataset", "FineTune", "Evaluation"}
        for run in runs:
            found += leaks(planted, f"MLflow run {run.info.run_id}", repr(run.to_dictionary()))

        state = repo.root / ".tuneops"
        found += leaks_in_files(planted, state)
        job_files = list((state / "jobs").glob("*.json"))
        assert job_files
        found += [f"{path.name} readable by others (mode {stat.S_IMODE(path.stat().st_mode):o})"
                  for path in job_files if stat.S_IMODE(path.stat().st_mode) != 0o600]

        # The same project rendered for a cluster: the credentials are Secret references only.
        with (repo.root / "tuneops.yaml").open("a") as settings:
            settings.write(KUBERNETES_SETTINGS)
        rendered = repo.tuneops("render", ".", env=env)
        assert rendered.exit_code == 0, rendered.output
        assert "name: MLFLOW_TRACKING_PASSWORD" in rendered.stdout and "mlflow-auth" in rendered.stdout
        found += leaks_in_output(planted, "render", rendered)
        written = repo.tuneops("render", ".", "--out", str(tmp_path / "manifests"), env=env)
        assert written.exit_code == 0, written.output
        found += leaks_in_output(planted, "render --out", written)
        found += leaks_in_files(planted, tmp_path / "manifests")
    finally:
        repo.stop_servers()
        proxy.close()
    assert not found, "credentials found:\n" + "\n".join(found)


def repo_experiment(repo: SpecRepo) -> str:
    settings = (repo.root / "tuneops.yaml").read_text()
    return next(line.split(":", 1)[1].strip() for line in settings.splitlines()
                if line.strip().startswith("experiment:"))


@pytest.mark.slow
def test_a_cluster_apply_with_credentials_in_the_tracking_uri_and_no_secret_for_pods_is_refused(
        cluster_repo: SpecRepo, mlflow_server, fake_api):
    password = planted_secrets()["tracking password"]
    host = mlflow_server.uri.removeprefix("http://")
    settings = cluster_repo.root / "tuneops.yaml"
    settings.write_text(settings.read_text().replace(mlflow_server.uri, f"http://ci-user:{password}@{host}"))
    cluster_repo.commit("MLflow asks for a password")
    refused = cluster_repo.tuneops("apply", ".", "--yes", env={"KUBECONFIG": str(cluster_repo.kubeconfig)},
                                   timeout=180)
    assert refused.exit_code == 1, refused.output
    assert "Traceback" not in refused.output and "internal error" not in refused.output
    assert f"mlflow.trackingUri (http://ci-user:***@{host}) holds credentials" in refused.stderr
    assert "name it in kubernetes.secrets.mlflow" in refused.stderr
    assert password not in refused.output
    assert fake_api.objects("Job") == [] and fake_api.objects("ConfigMap") == []
