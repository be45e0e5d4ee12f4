"""`tuneops.yaml`: project settings at the spec root. Optional; every setting has a default.

The file is plain settings, not a spec (no apiVersion or kind). It is validated with the same
machinery as specs, so its errors carry file, line and field path too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel as PydanticModel
from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from reconciler.scalars import Bool as _Bool
from reconciler.scalars import Int as _Int
from reconciler.scalars import Str as _Str

PROJECT_FILE = "tuneops.yaml"
STATE_DIR = ".tuneops"


class _Settings(PydanticModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel)


class MlflowSettings(_Settings):
    tracking_uri: _Str | None = Field(
        None, description="MLflow tracking URI. Default: MLFLOW_TRACKING_URI, else "
                          "sqlite:///<spec root>/.tuneops/mlflow.db.",
        examples=["http://mlflow.mlops.svc.cluster.local:5000"])
    experiment: _Str = Field("tuneops", description="Experiment that holds every run of this project.")


class KubernetesSettings(_Settings):
    namespace: _Str = Field("default", description="Namespace for rendered objects.")
    context: _Str | None = Field(None, description="kubeconfig context; default: the current one.",
                                 examples=["gpu-cluster"])
    image: _Str | None = Field(None, description="Trainer image that runs `tuneops run`.",
                               examples=["registry.example.internal/ml/tuneops-trainer:0.1.0"])
    version: _Str = Field("1.30", description="Kubernetes version manifests are validated against.",
                          pattern=r"^1\.[0-9]+$")
    multi_node: Literal["indexed-job", "jobset", "pytorchjob"] = Field(
        "indexed-job", description="How multi-node fine-tunes start their nodes.")


class LocalSettings(_Settings):
    max_parallel: _Int = Field(1, description="Jobs the local backend runs at once.", gt=0)


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
    trust_remote_code: Literal["warn", "allow", "deny"] = Field(
        "warn", description="What validation says about `trustRemoteCode: true`.")
    max_gpus_per_fine_tune: _Int | None = Field(
        None, description="Refuse FineTunes that ask for more GPUs (nodes x gpusPerNode).", gt=0,
        examples=[16])


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
    exclude: tuple[_Str, ...] = Field(
        (), description="Glob patterns (relative to the spec root) of YAML files that are not "
                        "specs.", examples=[["ci/**", "kustomize/*.yaml"]])
