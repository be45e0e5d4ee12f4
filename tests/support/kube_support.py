"""A FAKE kubelet for the fake API server: runs each pod's containers as local processes, as a
node would, and plays the controllers (Job, JobSet, training operator) that start those pods.

For every pod it mounts the pod's volumes as local folders (a ConfigMap's keys as files, the
storage claim as one folder for all pods, an emptyDir per pod, a Secret's keys as files) by
rewriting their mount paths wherever a container names them: in its command, its environment
and the job file. It runs the init containers in order, then the container, with the pod's
plain `env` values and `fieldRef`s (`$(VAR)` expanded in the command, as Kubernetes does),
records the output as the pod's log, and reports the exit: through the fake's Job controller
(complete, or failed with the last log lines as the termination message, as
`terminationMessagePolicy: FallbackToLogsOnError` does), or, for a PyTorchJob's pods, as a
container restarted in place. The pods of one multi-node job run at once, and their rendezvous
(node 0's DNS name and port) is mapped to 127.0.0.1 and one free port. Deployments are marked
available without running vLLM.

Not modelled: images (every command runs in this Python), secretKeyRef env (dropped), resource
limits, DNS (only the rendezvous address is mapped), network isolation between pods.

Per-resource policies let a test hold a job running, or fail every pod with a given reason.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from reconciler.backends.kubernetes.labels import KIND_LABEL, NAME_LABEL
from tests.support.fake_controllers import JobSetController, PyTorchJobController
from tests.support.fake_kube import FakeKubeApi, completion_index
from tests.support.reconcile_support import SpecRepo

RENDEZVOUS_ADDRESS_ARGS = ("--master_addr", "--master-addr")
RENDEZVOUS_PORT_ARGS = ("--master_port", "--master-port")
RENDEZVOUS_ADDRESS_ENV = ("MASTER_ADDR", "PET_MASTER_ADDR")
RENDEZVOUS_PORT_ENV = ("MASTER_PORT", "PET_MASTER_PORT")
WORKLOAD_LABELS = (
    "jobset.sigs.k8s.io/jobset-name",
    "training.kubeflow.org/job-name",
    "batch.kubernetes.io/job-name",
)


@dataclass(frozen=True)
class Fail:
    """Fail every pod of the resource without running it (e.g. the node ran out of memory)."""

    reason: str = "OOMKilled"
    exit_code: int = 137
    message: str = "torch.OutOfMemoryError: CUDA out of memory"


HOLD = "hold"  # start the pod and leave it running


@dataclass(frozen=True)
class Launched:
    """What one pod's container was started with, before the fake network mapped it."""

    pod: str
    node_rank: str | None  # --node_rank after $(VAR) expansion, or PET_NODE_RANK
    rendezvous: str | None  # node 0's address it was told: --master_addr or PET_MASTER_ADDR
    command: tuple[str, ...]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FakeKubelet:
    def __init__(
        self, api: FakeKubeApi, work: Path, *, namespace: str = "default", env: dict[str, str] | None = None
    ):
        self.api, self.work, self.namespace = api, work, namespace
        self.storage = work / "storage-claim"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.env = env or {}
        self.policies: dict[str, object] = {}  # "Kind/name" -> HOLD | Fail(...)
        self.serve_deployments = True
        self.ran: list[str] = []  # pods whose container ran, in order
        self.launched: list[Launched] = []
        self.jobsets = JobSetController(api, namespace)
        self.pytorchjobs = PyTorchJobController(api, namespace)
        self._handled: set[str] = set()
        self._processes: dict[str, subprocess.Popen] = {}
        self._ports: dict[str, int] = {}  # one rendezvous port per multi-node workload
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="fake-kubelet")

    def start(self) -> FakeKubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            for process in self._processes.values():
                process.kill()

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self._tick()
            except Exception as error:  # a test should see it, not a dead thread
                print(f"fake kubelet: {type(error).__name__}: {error}", file=sys.stderr)

    def _tick(self) -> None:
        self.jobsets.sync()
        self.pytorchjobs.sync()
        for job in self.api.objects("Job", self.namespace):
            status = job.get("status") or {}
            if job["spec"].get("suspend") or any(
                c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                for c in status.get("conditions") or []
            ):
                continue
            self._start_missing_pods(job)
        pods = self.api.objects("Pod", self.namespace)
        live = {pod["metadata"]["name"] for pod in pods if pod["status"].get("phase") == "Running"}
        for pod in pods:
            name = pod["metadata"]["name"]
            if name in live and name not in self._handled:
                self._handled.add(name)
                self._handle(pod)
        with self._lock:  # a controller deleted the pod (a JobSet restart, a failed job's others)
            for name, process in list(self._processes.items()):
                if name not in live:
                    process.kill()
        if self.serve_deployments:
            for deployment in self.api.objects("Deployment", self.namespace):
                status = deployment.get("status") or {}
                if status.get("observedGeneration") != deployment["metadata"].get("generation"):
                    self.api.set_deployment_available(deployment["metadata"]["name"], self.namespace)

    def _start_missing_pods(self, job: dict) -> None:
        """The Job controller: a pod for each completion index that has none running or done."""
        uid = job["metadata"]["uid"]
        pods = [
            p
            for p in self.api.objects("Pod", self.namespace)
            if any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])
        ]
        indexed = job["spec"].get("completionMode") == "Indexed"
        indexes = range(int(job["spec"].get("completions") or 1)) if indexed else range(1)
        for index in indexes:
            taken = [
                p
                for p in pods
                if p["status"].get("phase") in ("Running", "Succeeded")
                and (not indexed or completion_index(p) == index)
            ]
            if not taken:
                self.api.start_pod(job["metadata"]["name"], self.namespace, index)

    def _handle(self, pod: dict) -> None:
        labels = pod["metadata"].get("labels") or {}
        policy = self.policies.get(f"{labels.get(KIND_LABEL)}/{labels.get(NAME_LABEL)}")
        if policy == HOLD:
            return
        if isinstance(policy, Fail):
            self.api.set_pod_log(pod["metadata"]["name"], policy.message + "\n", self.namespace)
            self._report_failure(pod, policy.reason, policy.exit_code, policy.message)
            return
        threading.Thread(target=self._run, args=(pod,), daemon=True).start()

    # -- running a pod -----------------------------------------------------------------------

    def _run(self, pod: dict) -> None:
        pod_name = pod["metadata"]["name"]
        mounts = self._mount_volumes(pod)
        spec = pod["spec"]
        for init in spec.get("initContainers") or []:
            done = self._execute(pod, init, mounts)
            if done is None:
                return
            if done.returncode != 0:
                log = done.stdout + done.stderr
                self.api.set_pod_log(pod_name, log, self.namespace)
                self._report_failure(pod, "Error", done.returncode, _tail(log), init_container=init["name"])
                return
        container = spec["containers"][0]
        while True:
            done = self._execute(pod, container, mounts)
            if done is None:
                return
            log = done.stdout + done.stderr
            self.api.set_pod_log(pod_name, log, self.namespace)
            with self._lock:
                self.ran.append(pod_name)
            if done.returncode == 0:
                self._report_success(pod)
                return
            if not self._report_failure(pod, "Error", done.returncode, _tail(log)):
                return  # a PyTorchJob's container restarts in place and runs again

    def _execute(
        self, pod: dict, container: dict, mounts: dict[str, Path]
    ) -> subprocess.CompletedProcess | None:
        """One container's command to the end; None when the pod was deleted meanwhile."""
        pod_name = pod["metadata"]["name"]
        env = self._container_env(pod, container, mounts)
        command = [_expand(_remap(arg, mounts), env) for arg in container["command"]]
        command = self._map_rendezvous(pod, command)
        if container is pod["spec"]["containers"][0]:
            self.launched.append(
                Launched(
                    pod_name,
                    _argument(command, "--node_rank") or env.get("PET_NODE_RANK"),
                    self._told_rendezvous(pod, container),
                    tuple(command),
                )
            )
        if command[0] == "python":
            command[0] = sys.executable
        process = subprocess.Popen(
            command,
            env={**os.environ, **self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with self._lock:
            if self._stop.is_set():
                process.kill()
            self._processes[pod_name] = process
        try:
            stdout, stderr = process.communicate(timeout=900)
        finally:
            with self._lock:
                self._processes.pop(pod_name, None)
        current = self.api.get("Pod", pod_name, self.namespace)
        if current is None or current["status"].get("phase") != "Running":
            return None
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def _mount_volumes(self, pod: dict) -> dict[str, Path]:
        """mountPath -> the local folder of the volume mounted there."""
        pod_name = pod["metadata"]["name"]
        root = self.work / "pods" / pod_name
        folders: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            folder = self.storage if "persistentVolumeClaim" in volume else root / "volumes" / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            folders[volume["name"]] = folder
        mounts = {
            mount["mountPath"]: folders[mount["name"]]
            for container in [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]
            for mount in container.get("volumeMounts") or []
        }
        for volume in pod["spec"].get("volumes") or []:
            folder = folders[volume["name"]]
            if "configMap" in volume:  # the job file, its paths as this node mounts them
                config_map = self.api.get("ConfigMap", volume["configMap"]["name"], self.namespace)
                assert config_map is not None, f"pod {pod_name} started before its ConfigMap existed"
                for key, value in (config_map.get("data") or {}).items():
                    (folder / key).write_text(_remap(value, mounts))
            elif "secret" in volume:
                secret = self.api.get("Secret", volume["secret"]["secretName"], self.namespace)
                for key, value in ((secret or {}).get("data") or {}).items():
                    (folder / key).write_bytes(base64.b64decode(value))
        return mounts

    def _container_env(self, pod: dict, container: dict, mounts: dict[str, Path]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = _expand(_remap(item["value"], mounts), env)
            elif "fieldRef" in (item.get("valueFrom") or {}):
                env[item["name"]] = _field(pod, item["valueFrom"]["fieldRef"]["fieldPath"])
        for name in RENDEZVOUS_ADDRESS_ENV:
            if name in env:
                env[name] = "127.0.0.1"
        for name in RENDEZVOUS_PORT_ENV:
            if name in env:
                env[name] = str(self._port(pod))
        env.pop("MLFLOW_TRACKING_URI", None)
        return env

    def _map_rendezvous(self, pod: dict, command: list[str]) -> list[str]:
        """Node 0's DNS name becomes 127.0.0.1 and its port one free port of this workload's."""
        mapped = list(command)
        for index, arg in enumerate(command[:-1]):
            if arg in RENDEZVOUS_ADDRESS_ARGS:
                mapped[index + 1] = "127.0.0.1"
            elif arg in RENDEZVOUS_PORT_ARGS:
                mapped[index + 1] = str(self._port(pod))
        return mapped

    def _told_rendezvous(self, pod: dict, container: dict) -> str | None:
        command = list(container["command"])
        told = _argument(command, "--master_addr")
        if told is None:
            told = next(
                (e.get("value") for e in container.get("env") or [] if e["name"] == "PET_MASTER_ADDR"), None
            )
        return told

    def _port(self, pod: dict) -> int:
        labels = pod["metadata"].get("labels") or {}
        key = next(
            (f"{label}={labels[label]}" for label in WORKLOAD_LABELS if label in labels),
            pod["metadata"]["name"],
        )
        with self._lock:
            return self._ports.setdefault(key, _free_port())

    # -- reporting ---------------------------------------------------------------------------

    def _owner(self, pod: dict) -> tuple[str, str]:
        owner = (pod["metadata"].get("ownerReferences") or [{}])[0]
        return owner.get("kind", ""), owner.get("name", "")

    def _report_success(self, pod: dict) -> None:
        kind, name = self._owner(pod)
        if kind == "PyTorchJob":
            self.pytorchjobs.pod_succeeded(pod["metadata"]["name"])
        else:
            self.api.complete_pod(name, completion_index(pod), self.namespace)

    def _report_failure(
        self, pod: dict, reason: str, exit_code: int, message: str, init_container: str | None = None
    ) -> bool:
        """True when the pod is done for; False when its container restarts in place."""
        kind, name = self._owner(pod)
        if kind == "PyTorchJob" and init_container is None:
            return not self.pytorchjobs.restart_container(pod["metadata"]["name"], reason, exit_code, message)
        with contextlib.suppress(KeyError, LookupError):  # the Job ended meanwhile (another node failed it)
            self.api.fail_pod(
                name,
                reason=reason,
                exit_code=exit_code,
                message=message,
                namespace=self.namespace,
                index=completion_index(pod),
                init_container=init_container,
            )
        return True


def _remap(text: str, mounts: dict[str, Path]) -> str:
    for mount_path in sorted(mounts, key=len, reverse=True):  # /etc/tuneops-git before /etc/tuneops
        text = re.sub(
            re.escape(mount_path) + r"(?=/|$|\"|')", str(mounts[mount_path]).replace("\\", "/"), text
        )
    return text


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in commands and env values."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)


def _field(pod: dict, path: str) -> str:
    match = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
    if match:
        return (pod["metadata"].get(match[1]) or {}).get(match[2], "")
    if path == "metadata.name":
        return pod["metadata"]["name"]
    if path == "metadata.namespace":
        return pod["metadata"]["namespace"]
    raise ValueError(f"the fake kubelet does not resolve fieldRef {path!r}")


def _argument(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command[:-1] else None


def _tail(log: str) -> str:
    return "\n".join(log.strip().splitlines()[-80:])


# -- driving the CLI against the fake cluster -------------------------------------------------


def tuneops(repo: SpecRepo, *args: str, timeout: float = 900):
    return repo.tuneops(*args, env={"KUBECONFIG": str(repo.kubeconfig)}, timeout=timeout)


def plan(repo: SpecRepo) -> dict:
    import json

    result = tuneops(repo, "plan", ".", "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    document["by_resource"] = {f"{a['kind']}/{a['name']}": a["action"] for a in document["actions"]}
    document["reasons"] = {f"{a['kind']}/{a['name']}": a.get("reason", "") for a in document["actions"]}
    return document


def kubectl(api: FakeKubeApi, method: str, path: str, patch: dict | None = None) -> None:
    """What `kubectl edit` (a merge patch under its own field manager) or `kubectl delete` (or the
    TTL controller: dependents go in the background) sends."""
    import json
    import urllib.request

    query = "fieldManager=kubectl-edit" if method == "PATCH" else "propagationPolicy=Background"
    request = urllib.request.Request(
        f"{api.url}{path}?{query}",
        method=method,
        data=json.dumps(patch).encode() if patch is not None else None,
        headers={"Content-Type": "application/merge-patch+json", "Authorization": "Bearer fake-token"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
