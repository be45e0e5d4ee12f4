"""`tuneops.yaml`: project settings at the spec root. Optional; every setting has a default.

The file is plain settings, not a spec (no apiVersion or kind). It is validated with the same
machinery as specs, so its errors carry file, line and field path too.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, AllowInfNan, ConfigDict, Field, Strict, ValidationInfo, field_validator
from pydantic import BaseModel as PydanticModel
from pydantic.alias_generators import to_camel

from reconciler.values.kubernetes import (
    ClaimName,
    Image,
    Namespace,
    SecretName,
    ServiceAccountName,
    check_quantity,
)
from reconciler.values.scalars import Bool as _Bool
from reconciler.values.scalars import Int as _Int
from reconciler.values.scalars import Str as _Str

PROJECT_FILE = "tuneops.yaml"
STATE_DIR = ".tuneops"


def _file_root(value: str) -> str:
    """An allowed root is a whole folder of this machine named on purpose: absolute, and not `/`
    (which would allow every file, and is what the setting exists to prevent)."""
    path = PurePosixPath(value)
    if not path.is_absolute():
        raise ValueError("must be an absolute folder, e.g. /data/shared")
    if "\0" in value:
        raise ValueError("must not contain a NUL character")
    if ".." in path.parts:
        raise ValueError("must not contain '..': name the folder itself")
    if len(path.parts) < 2:
        raise ValueError("must be a folder below /: allowing / would let a spec read every file "
                         "of the machine")
    return value


FileRoot = Annotated[_Str, AfterValidator(_file_root)]


class _Settings(PydanticModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel)


class MlflowSettings(_Settings):
    tracking_uri: _Str | None = Field(
        None, description="MLflow tracking URI. Default: MLFLOW_TRACKING_URI, else "
                          "sqlite:///<spec root>/.tuneops/mlflow.db. Credentials in it (user:password@ or "
                          "a token@) reach jobs only through their environment, never a job file.",
        examples=["http://mlflow.mlops.svc.cluster.local:5000"])
    experiment: _Str = Field("tuneops", description="Experiment that holds every run of this project.")


class SecretSettings(_Settings):
    """Names of Secrets in the namespace; values are only ever referenced (secretKeyRef)."""

    hugging_face: SecretName | None = Field(
        None, description="Secret with key `token`: HF_TOKEN for gated models.", examples=["hf-token"])
    mlflow: SecretName | None = Field(
        None, description="Secret with keys `username` and `password` for MLflow's basic auth.",
        examples=["mlflow-auth"])
    storage: SecretName | None = Field(
        None, description="Secret with keys `accessKeyId` and `secretAccessKey` for an s3:// storage root.",
        examples=["s3-credentials"])
    judge: SecretName | None = Field(
        None, description="Secret with the API keys of Evaluations' judges: one key per variable a "
                          "judge's `endpoint.apiKeySecret` names (e.g. `JUDGE_API_KEY`), set in the "
                          "Evaluation's pod from it.", examples=["judge-keys"])
    git: SecretName | None = Field(
        None, description="Secret the spec checkout clones with: keys `username` and `password` (a "
                          "token) for an https remote, or `ssh-privatekey` and `known_hosts` for ssh. "
                          "Only jobs that read files of the spec repository check it out.",
        examples=["git-credentials"])


class KubernetesSettings(_Settings):
    namespace: Namespace = Field("default", description="Namespace of every rendered object: the one the "
                                                       "backend creates and watches them in.")
    context: _Str | None = Field(None, description="kubeconfig context; default: the current one.",
                                 examples=["gpu-cluster"])
    image: Image | None = Field(None, description="Trainer image that runs `tuneops run`.",
                               examples=["registry.example.internal/ml/tuneops-trainer:0.1.0"])
    version: _Str = Field("1.30", description="Kubernetes version manifests are validated against.",
                          pattern=r"^1\.[0-9]+$")
    multi_node: Literal["indexed-job", "jobset", "pytorchjob"] = Field(
        "indexed-job", description="How multi-node fine-tunes start their nodes: an Indexed Job with a "
                                   "headless Service (no operator needed), a JobSet (JobSet installed), "
                                   "or a Kubeflow PyTorchJob (the training operator installed).")
    serving_image: Image = Field("vllm/vllm-openai:v0.8.5",
                                description="Image of the model server (vLLM's OpenAI-compatible server).")
    storage_claim: ClaimName | None = Field(
        None, description="PersistentVolumeClaim that holds the storage root, mounted in every job "
                          "and server at /mnt/tuneops (ReadWriteMany for multi-node jobs).",
        examples=["tuneops-store"])
    daemon_service_account: ServiceAccountName = Field(
        "tuneops", description="The daemon's ServiceAccount (in `namespace`): each team namespace's "
                               "rendered RoleBinding grants it what it needs there, and no more.")
    service_account: ServiceAccountName | None = Field(None, description="ServiceAccount jobs run as.",
                                         examples=["tuneops-trainer"])
    ttl_seconds_after_finished: _Int = Field(
        86400, description="Finished Jobs (and their pods' logs) are removed after this long.", ge=0)
    active_deadline_seconds: _Int | None = Field(
        None, description="A Job running longer than this is failed by Kubernetes.", gt=0,
        examples=[172800])
    queueing: Literal["kueue", "volcano"] = Field(
        "kueue", description="What `scheduling.queue` names: a Kueue LocalQueue (label "
                             "kueue.x-k8s.io/queue-name) or a Volcano queue (schedulerName: volcano "
                             "and a PodGroup for gang scheduling).")
    secrets: SecretSettings = Field(default_factory=lambda: SecretSettings())
    max_parallel: _Int = Field(8, description="Jobs apply runs at once in the cluster (independent "
                                              "branches of the graph); queues may hold them further.", gt=0)


class LocalSettings(_Settings):
    max_parallel: _Int = Field(1, description="Jobs the local backend runs at once. Each gets its share "
                                              "of the machine's cores for its compute threads "
                                              "(OMP_NUM_THREADS, unless set).", gt=0)


class StorageSettings(_Settings):
    root: _Str | None = Field(
        None, description="Where jobs write prepared datasets, models and evaluation reports. "
                          "Default: <spec root>/.tuneops/store. Relative paths are relative to the "
                          "spec root.", examples=["/mnt/shared/tuneops"])


class PruneSettings(_Settings):
    enabled: _Bool = Field(False, description="Stop and remove what was deleted from Git.")
    max_deletes: _Int = Field(5, description="Refuse a prune that deletes more than this.", ge=0)


class PolicySettings(_Settings):
    strict: _Bool = Field(False, description="Treat warnings as errors, as `--strict` does.")
    allowed_sources: tuple[Literal["hf", "s3", "file"], ...] = Field(
        ("hf", "s3", "file"), description="Source schemes specs may use.")
    allowed_file_roots: tuple[FileRoot, ...] = Field(
        (), description="Folders outside the spec repository that file:// paths may name (absolute "
                        "paths, after following symlinks). By default a file:// path (a Dataset's "
                        "data, a BaseModel's folder and every file in it, a chat template) must "
                        "resolve inside the spec repository: the author of a spec is not always the "
                        "operator of the machine that runs it.", examples=[["/data/shared"]])
    trust_remote_code: Literal["warn", "allow", "deny"] = Field(
        "warn", description="What validation says about `trustRemoteCode: true`.")
    max_gpus_per_fine_tune: _Int | None = Field(
        None, description="Refuse FineTunes that ask for more GPUs (nodes x gpusPerNode).", gt=0,
        examples=[16])
    allow_python_rewards: _Bool | None = Field(
        None, description="Whether a GRPO FineTune may score with a Python function from the "
                          "repository (`rewards[].python`), which runs in the training job. By default "
                          "it may, unless `trustRemoteCode: deny` says no repository code runs; a "
                          "cluster sets false to forbid them whatever trustRemoteCode says.",
        examples=[False])

    @property
    def python_rewards_allowed(self) -> bool:
        """allowPythonRewards as set, else what trustRemoteCode implies."""
        if self.allow_python_rewards is not None:
            return self.allow_python_rewards
        return self.trust_remote_code != "deny"


class PlannerSettings(_Settings):
    mfu: dict[_Str, Annotated[float, Field(gt=0, le=1)]] = Field(
        {}, description="Model FLOPs utilisation to assume per GPU product (the node label "
                        "nvidia.com/gpu.product) when estimating GPU-hours; default 0.4 on A100, "
                        "0.35 elsewhere.", examples=[{"NVIDIA-H100-80GB-HBM3": 0.45}])
    peak_tflops: dict[_Str, Annotated[float, Field(gt=0)]] = Field(
        {}, description="Dense bf16 peak TFLOPS per GPU product, for products the planner does not "
                        "know or to correct it.", examples=[{"NVIDIA-A10G": 70}])


# Dollars per GPU-hour: a number (not `true`, not "4"), and at most 10,000, which no GPU costs.
Price = Annotated[float, Strict(), AllowInfNan(False), Field(ge=0, le=10_000)]


class GpuPrice(_Settings):
    on_demand: Price = Field(description="Dollars per GPU-hour at the on-demand rate.", examples=[4.0])
    spot: Price | None = Field(None, description="Dollars per GPU-hour on spot (preemptible) "
                                                 "capacity; shown beside the on-demand figure.",
                               examples=[1.6])


class PricingSettings(_Settings):
    default: GpuPrice | None = Field(None, description="The price of a GPU product not listed in "
                                                       "gpuProducts. Without it, such GPUs are not priced.")
    gpu_products: dict[_Str, GpuPrice] = Field(
        {}, description="Price per GPU product (the node label nvidia.com/gpu.product, as a FineTune's "
                        "resources.gpuProduct names it).",
        examples=[{"NVIDIA-H100-80GB-HBM3": {"onDemand": 4.0, "spot": 1.6}}])

    def price_of(self, gpu_product: str | None) -> GpuPrice | None:
        """What a GPU-hour of this product costs; None when it is not priced."""
        if gpu_product is not None and gpu_product in self.gpu_products:
            return self.gpu_products[gpu_product]
        return self.default


_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _team_path(value: str) -> str:
    """A folder or glob relative to the spec root, as `exclude` takes them."""
    if not value or value.startswith("/") or "\0" in value:
        raise ValueError("must be a folder or glob relative to the spec root, e.g. teams/nlp/**")
    if ".." in PurePosixPath(value).parts:
        raise ValueError("must not contain '..': a team's specs are inside the spec repository")
    if any(c.isspace() or not c.isprintable() or c in "#!\\[]" for c in value):
        raise ValueError("must not contain spaces, control characters, '#', '!', '\\' or '[]': it becomes a "
                         "CODEOWNERS pattern too")
    if "." in PurePosixPath(value).parts or value.startswith("./"):
        raise ValueError("write it without './': relative to the spec root already")
    return value


TeamPath = Annotated[_Str, AfterValidator(_team_path)]
Quantity = Annotated[_Str, AfterValidator(check_quantity)]
_OWNER = r"^(@[A-Za-z0-9][-A-Za-z0-9_.]*(/[-A-Za-z0-9_.]+)?|[^@\s]+@[^@\s]+\.[^@\s]+)$"
Owner = Annotated[_Str, Field(pattern=_OWNER, max_length=200)]
"""A GitHub user (`@ada`), team (`@org/nlp-ml`) or an e-mail address, as CODEOWNERS takes them."""


def _export(value: str) -> str:
    kind, separator, name = value.partition("/")
    if not separator or not kind or not name or "/" in name:
        raise ValueError("must be KIND/NAME, a spec of this team, e.g. Dataset/support-chats")
    return value


Export = Annotated[_Str, AfterValidator(_export)]


def _not_a_system_namespace(value: str) -> str:
    if value.startswith("kube-"):
        raise ValueError("kube-* namespaces are Kubernetes' own: give the team a namespace of its own")
    return value


class TeamQuota(_Settings):
    gpus: _Int = Field(description="GPUs the team's Kueue ClusterQueue may use at once (its nominal "
                                   "quota of nvidia.com/gpu).", ge=0, examples=[16])
    cpu: Quantity | None = Field(None, description="CPU nominal quota (a Kubernetes quantity); default "
                                                   "1000, so that only GPUs bind.", examples=["256"])
    memory: Quantity | None = Field(None, description="Memory nominal quota (a Kubernetes quantity); "
                                                      "default 64Ti, so that only GPUs bind.",
                                    examples=["2Ti"])


class TeamBudget(_Settings):
    gpu_hours_per_month: Annotated[float, Strict(), AllowInfNan(False), Field(ge=0)] | None = Field(
        None, description="GPU-hours the team's runs may use per calendar month (UTC).", examples=[800])
    dollars_per_month: Annotated[float, Strict(), AllowInfNan(False), Field(ge=0)] | None = Field(
        None, description="Dollars per calendar month (UTC), at the prices of `pricing`.",
        examples=[5000])


class TeamSettings(_Settings):
    paths: tuple[TeamPath, ...] = Field(
        description="Folders or globs (relative to the spec root) whose specs belong to the team.",
        min_length=1, examples=[["teams/nlp/**"]])
    namespace: Annotated[Namespace, AfterValidator(_not_a_system_namespace)] | None = Field(
        None, description="Kubernetes namespace of the team's jobs and servers; default: "
                          "kubernetes.namespace.", examples=["nlp-train"])
    queue: _Str | None = Field(
        None, description="Kueue LocalQueue (or Volcano queue) the team's jobs go to, unless a "
                          "FineTune names its own.", examples=["nlp"], pattern=_DNS_LABEL, max_length=63)
    owners: tuple[Owner, ...] = Field(
        (), description="Code owners of the team's folders (GitHub users or @org/team), shown in "
                        "plan comments and written to CODEOWNERS by `tuneops codeowners`.",
        examples=[["@org/nlp-ml"]])
    quota: TeamQuota | None = Field(None, description="Rendered as the team's Kueue ClusterQueue quota.")
    budget: TeamBudget | None = Field(
        None, description="Spend per calendar month; a plan that would go over it marks the "
                          "actions `blocked: budget`.")
    exports: tuple[Export, ...] = Field(
        (), description="This team's specs other teams may name (KIND/NAME), as `team.name`.",
        examples=[["Dataset/support-chats"]])


def _team_name(value: str) -> str:
    if not re.fullmatch(_DNS_LABEL, value) or len(value) > 30:
        raise ValueError(f"team name {value!r} must be lowercase letters, digits and '-', starting and "
                         "ending with a letter or digit, at most 30 characters: it prefixes the team's names")
    return value


TeamName = Annotated[_Str, AfterValidator(_team_name),
                     Field(json_schema_extra={"pattern": _DNS_LABEL, "maxLength": 30})]


class ProjectSettings(_Settings):
    backend: Literal["local", "kubernetes"] = Field("local", description="Where jobs run.")
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    max_attempts: _Int = Field(
        2, description="Attempts per job fingerprint before it is reported blocked (a restarted "
                       "fine-tune resumes from its last checkpoint).", ge=1, le=20)
    prune: PruneSettings = Field(default_factory=PruneSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    planner: PlannerSettings = Field(default_factory=PlannerSettings)
    pricing: PricingSettings = Field(default_factory=PricingSettings,
                                     description="Dollars per GPU-hour, for the plan's cost estimates.")
    teams: dict[TeamName, TeamSettings] = Field(
        {}, description="Teams sharing this repository and cluster: each spec belongs to the one "
                        "team whose paths hold its file, and its names are the team's own.",
        examples=[{"nlp": {"paths": ["teams/nlp/**"], "namespace": "nlp-train", "queue": "nlp"}}])
    exclude: tuple[_Str, ...] = Field(
        (), description="Glob patterns (relative to the spec root) of YAML files that are not "
                        "specs.", examples=[["ci/**", "kustomize/*.yaml"]])

    @field_validator("teams")
    @classmethod
    def _queues_hold_quotas(cls, teams: dict[str, TeamSettings],
                            info: ValidationInfo) -> dict[str, TeamSettings]:
        """A quota is a ClusterQueue that only the team's LocalQueue reaches: it needs a queue,
        and no other team's quota may claim the same queue in the same namespace."""
        kubernetes = info.data.get("kubernetes")
        home = kubernetes.namespace if isinstance(kubernetes, KubernetesSettings) else "default"
        claimed: dict[tuple[str, str], str] = {}
        for name, team in teams.items():
            if team.quota is None:
                continue
            if not team.queue:
                raise ValueError(f"team {name} has a quota but no queue: its jobs reach the quota through "
                                 "the queue (a Kueue LocalQueue): set teams." + name + ".queue")
            place = (team.namespace or home, team.queue)
            if place in claimed:
                raise ValueError(f"teams {claimed[place]} and {name} both have a quota on queue {place[1]} "
                                 f"in namespace {place[0]}: one LocalQueue can hold one team's quota")
            claimed[place] = name
        return teams

    def namespace_of(self, team: str | None) -> str:
        """Where a team's jobs and servers run: its namespace, else the project's."""
        chosen = self.teams.get(team) if team else None
        return (chosen.namespace if chosen else None) or self.kubernetes.namespace

    def queue_of(self, team: str | None) -> str | None:
        chosen = self.teams.get(team) if team else None
        return chosen.queue if chosen else None
