"""Real components for runtime tests: a tiny model built here, a real `mlflow server` on
127.0.0.1 with SQLite, and job files written the way the reconciler writes them."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from reconciler.jobs.jobfile import (
    BaseModelRef,
    GitOrigin,
    JobFile,
    MlflowTarget,
    ModelVersionRef,
    PreparedDataset,
)
from tests.conftest import REPO_ROOT, CliResult

FRUIT_DATA = REPO_ROOT / "specs-example" / "quickstart" / "data" / "fruit-colors.jsonl"
# A module's prepared fixture: its root folder, the MLflow URI there, a dataset prepared in it.
Prepared = tuple[Path, str, PreparedDataset]
GIT = GitOrigin(repo="https://git.example.internal/ml/specs.git", commit="3f2c1a9" + "0" * 33)

needs_training = pytest.mark.skipif(
    not all(
        __import__("importlib").util.find_spec(name) for name in ("torch", "transformers", "peft", "trl")
    ),
    reason="needs the [train] extra (torch, transformers, peft, trl)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class MlflowServer:
    """`mlflow server` as a process: SQLite backend, artifacts in a temporary folder."""

    def __init__(self, root: Path):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        self.log = (root / "server.log").open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--workers",
                "1",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=root,
            # MLflow's job execution (GenAI scorers, its own periodic tasks) starts eight more
            # processes, ~20 s of CPU, and serves none of the tracking and registry requests
            # tuneops makes: off, as the REST API the tests read and write stays the same.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server not ready after {timeout} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def run_job(
    command: str,
    job_file: Path,
    *,
    processes: int = 1,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> CliResult:
    """`tuneops run COMMAND --job FILE`, under torchrun when processes > 1."""
    full_env = {
        **os.environ,
        "NO_COLOR": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DS_ACCELERATOR": "cpu",
        "TUNEOPS_MLFLOW_RETRY_DELAYS": "0.2,0.5",
        **(env or {}),
    }
    full_env.pop("TUNEOPS_DEBUG", None)
    if processes > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_port",
            str(free_port()),
            "-m",
            "reconciler",
        ]
    else:
        launcher = [sys.executable, "-m", "reconciler"]
    done = subprocess.run(
        [*launcher, "run", command, "--job", str(job_file)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def kill_at_checkpoint(job: JobFile, job_file: Path, step: int, timeout: float = 300) -> Path:
    """Start `tuneops run finetune` on `job_file` and SIGKILL it once checkpoint-`step` is
    complete (its trainer_state.json is written last); return the checkpoints folder. The job
    must have enough steps after that checkpoint that the kill lands mid-training."""
    checkpoints = job.output_dir.with_name(job.output_dir.name + ".checkpoints")
    env = {**os.environ, "NO_COLOR": "1", "TUNEOPS_MLFLOW_RETRY_DELAYS": "0.2"}
    first = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "finetune", "--job", str(job_file)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not (checkpoints / f"checkpoint-{step}" / "trainer_state.json").is_file():
        assert first.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    return checkpoints


def write_job(job: JobFile, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job.command}-{job.name}-{job.fingerprint[:8]}.json"
    path.write_text(job.to_json())
    return path


def dataset_job(
    store: Path,
    tracking_uri: str,
    name: str,
    data: Path,
    spec: dict[str, Any] | None = None,
    experiment: str = "tuneops-tests",
) -> JobFile:
    full = {"source": f"file://{data.name}", **(spec or {})}
    return JobFile(
        kind="Dataset",
        name=name,
        fingerprint=fingerprint("Dataset", name, full, str(data)),
        spec=full,
        spec_path=f"datasets/{name}.yaml",
        git=GIT,
        storage_root=str(store),
        source=f"file://{data}",
        mlflow=MlflowTarget(tracking_uri=tracking_uri, experiment=experiment),
    )


def prepared(job: JobFile, weight: float = 1.0) -> PreparedDataset:
    manifest = json.loads((job.output_dir / "manifest.json").read_text())
    return PreparedDataset(
        name=job.name,
        location=str(job.output_dir),
        digest=manifest["digest"],
        schema_type=manifest["schemaType"],
        fingerprint=job.fingerprint,
        weight=weight,
    )


def base_model(model_dir: Path) -> BaseModelRef:
    return BaseModelRef(
        name="tiny-llama",
        source=f"file://{model_dir}",
        revision=None,
        chat_template="chatml",
        fingerprint=fingerprint("BaseModel", str(model_dir)),
    )


def finetune_job(
    store: Path,
    tracking_uri: str,
    name: str,
    base: BaseModelRef,
    datasets: list[PreparedDataset],
    spec: dict[str, Any],
    experiment: str = "tuneops-tests",
) -> JobFile:
    full = {
        "baseModel": base.name,
        "datasets": [{"name": d.name, "weight": d.weight} for d in datasets],
        **spec,
    }
    return JobFile(
        kind="FineTune",
        name=name,
        fingerprint=fingerprint("FineTune", name, full, [d.digest for d in datasets]),
        spec=full,
        spec_path=f"finetunes/{name}.yaml",
        git=GIT,
        storage_root=str(store),
        mlflow=MlflowTarget(tracking_uri=tracking_uri, experiment=experiment),
        base_model=base,
        datasets=tuple(datasets),
    )


def trained_model(job: JobFile, version: str | None = None) -> ModelVersionRef:
    assert job.base_model is not None
    return ModelVersionRef(
        fine_tune=job.name,
        location=str(job.output_dir),
        adapter=True,
        base_model=job.base_model,
        registered_model=job.name,
        version=version,
        fingerprint=job.fingerprint,
    )


def evaluation_job(
    store: Path,
    tracking_uri: str,
    name: str,
    model: ModelVersionRef | BaseModelRef,
    dataset: PreparedDataset,
    spec: dict[str, Any],
    experiment: str = "tuneops-tests",
) -> JobFile:
    target = (
        {"fineTune": model.fine_tune} if isinstance(model, ModelVersionRef) else {"baseModel": model.name}
    )
    full = {"model": target, "dataset": {"name": dataset.name}, **spec}
    return JobFile(
        kind="Evaluation",
        name=name,
        fingerprint=fingerprint("Evaluation", name, full, model.fingerprint, dataset.digest),
        spec=full,
        spec_path=f"evaluations/{name}.yaml",
        git=GIT,
        storage_root=str(store),
        mlflow=MlflowTarget(tracking_uri=tracking_uri, experiment=experiment),
        datasets=(dataset,),
        model=model,
    )


def saved_activation_bytes(trainer: Any) -> float:
    """Bytes of the tensors autograd keeps for the backward pass during `trainer.train()`, each
    storage once and the parameters left out: what the planner's activations count."""
    import torch

    kept: dict[int, int] = {}
    alive = []  # held, so that no storage is freed and its address reused while counting

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        alive.append(tensor)
        storage = tensor.untyped_storage()
        kept.setdefault(storage.data_ptr(), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        trainer.train()
    parameters = {p.untyped_storage().data_ptr() for p in trainer.model.parameters()}
    return sum(size for pointer, size in kept.items() if pointer not in parameters)
