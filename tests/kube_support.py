"""A fake kubelet for the fake API server: runs each Job's pod as a local process, as a node would.

It reads the pod's container command, mounts the Job's ConfigMap (the job file) and the storage
claim by rewriting their paths to local folders, runs the command with the pod's plain `env`
values, records the output as the pod's log, and reports the exit through the fake's job
controller (complete, or failed with the last log lines as the termination message, as
`terminationMessagePolicy: FallbackToLogsOnError` does). Deployments are marked available without
running vLLM. Not modelled: images (the command runs in this Python), Secrets (secretKeyRef env
is dropped), resource limits, several nodes of one Indexed Job.

Per-resource policies let a test hold a job running, or fail every pod with a given reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from reconciler.render import JOB_FILE_PATH, KIND_LABEL, NAME_LABEL, STORAGE_MOUNT
from tests.fake_kube import FakeKubeApi


@dataclass(frozen=True)
class Fail:
    """Fail every pod of the resource without running it (e.g. the node ran out of memory)."""

    reason: str = "OOMKilled"
    exit_code: int = 137
    message: str = "torch.OutOfMemoryError: CUDA out of memory"


HOLD = "hold"  # start the pod and leave it running


class FakeKubelet:
    def __init__(self, api: FakeKubeApi, work: Path, *, namespace: str = "default",
                 env: dict[str, str] | None = None):
        self.api, self.work, self.namespace = api, work, namespace
        self.storage = work / "storage-claim"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.env = env or {}
        self.policies: dict[str, object] = {}  # "Kind/name" -> HOLD | Fail(...)
        self.serve_deployments = True
        self.ran: list[str] = []  # pods whose command ran, in order
        self._handled: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="fake-kubelet")

    def start(self) -> FakeKubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self._tick()
            except Exception as error:  # noqa: BLE001 - a test should see it, not a dead thread
                print(f"fake kubelet: {type(error).__name__}: {error}", file=sys.stderr)

    def _tick(self) -> None:
        for job in self.api.objects("Job", self.namespace):
            status = job.get("status") or {}
            if job["spec"].get("suspend") or any(
                    c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                    for c in status.get("conditions") or []):
                continue
            name = job["metadata"]["name"]
            uid = job["metadata"]["uid"]  # a Job re-created under the same name has new pods
            pods = [p for p in self.api.objects("Pod", self.namespace)
                    if any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])]
            running = [p for p in pods if p["status"].get("phase") == "Running"]
            if not running:
                running = [self.api.start_pod(name, self.namespace)]
            for pod in running:
                if pod["metadata"]["name"] not in self._handled:
                    self._handled.add(pod["metadata"]["name"])
                    self._handle(job, pod)
        if self.serve_deployments:
            for deployment in self.api.objects("Deployment", self.namespace):
                status = deployment.get("status") or {}
                if status.get("observedGeneration") != deployment["metadata"].get("generation"):
                    self.api.set_deployment_available(deployment["metadata"]["name"], self.namespace)

    def _handle(self, job: dict, pod: dict) -> None:
        labels = job["metadata"]["labels"]
        policy = self.policies.get(f"{labels[KIND_LABEL]}/{labels[NAME_LABEL]}")
        if policy == HOLD:
            return
        if isinstance(policy, Fail):
            self.api.set_pod_log(pod["metadata"]["name"], policy.message + "\n", self.namespace)
            self.api.fail_pod(job["metadata"]["name"], reason=policy.reason, exit_code=policy.exit_code,
                              message=policy.message, namespace=self.namespace)
            return
        threading.Thread(target=self._run, args=(job, pod), daemon=True).start()

    def _run(self, job: dict, pod: dict) -> None:
        job_name, pod_name = job["metadata"]["name"], pod["metadata"]["name"]
        config_map = self.api.get("ConfigMap", job_name, self.namespace)
        assert config_map is not None, f"Job {job_name} started before its ConfigMap existed"
        job_file = self.work / "pods" / pod_name / "job.json"
        job_file.parent.mkdir(parents=True, exist_ok=True)
        job_file.write_text(config_map["data"]["job.json"].replace(STORAGE_MOUNT, str(self.storage)))
        container = pod["spec"]["containers"][0]
        command = [str(job_file) if arg == JOB_FILE_PATH else arg for arg in container["command"]]
        if command[0] == "python":
            command[0] = sys.executable
        env = {**os.environ, **self.env,
               **{e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}}
        env.pop("MLFLOW_TRACKING_URI", None)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        log = done.stdout + done.stderr
        self.api.set_pod_log(pod_name, log, self.namespace)
        with self._lock:
            self.ran.append(pod_name)
        if done.returncode == 0:
            self.api.complete_job(job_name, self.namespace)
        else:
            last = "\n".join(log.strip().splitlines()[-80:])
            self.api.fail_pod(job_name, reason="Error", exit_code=done.returncode, message=last,
                              namespace=self.namespace)
