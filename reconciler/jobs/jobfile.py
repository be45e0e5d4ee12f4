"""The job file: everything one `tuneops run KIND` needs, resolved, in one JSON document.

The reconciler writes it (locally beside the job's logs, on Kubernetes into a ConfigMap); the
runtime reads it and nothing else, so a job never re-reads Git, re-resolves references or
looks up what its upstreams produced. Its format is documented in docs/runtime.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel as PydanticModel
from pydantic import ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from reconciler.errors import PermanentError

FORMAT_VERSION = 1
JobKind = Literal["Dataset", "FineTune", "Evaluation", "Deployment"]
# `tuneops run <command>` for each kind of resource that runs a job.
COMMAND_BY_KIND: dict[str, str] = {
    "Dataset": "dataset", "FineTune": "finetune", "Evaluation": "evaluate", "Deployment": "serve",
}
# Folder under the storage root that holds each kind's outputs.
OUTPUT_FOLDER = {"Dataset": "datasets", "FineTune": "finetunes", "Evaluation": "evaluations"}


def output_dir_of(storage_root: str | Path, kind: str, name: str, fingerprint: str) -> Path:
    """Where a job's result lands: keyed by fingerprint, so a rebuild never overwrites, and known
    before it is built (a render gives upstreams not built yet this location)."""
    return Path(storage_root) / OUTPUT_FOLDER[kind] / name / fingerprint[:16]


class JobFileError(PermanentError, ValueError):
    """A job file that cannot be read: the message names the file and the field."""


class _JobModel(PydanticModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel,
                              populate_by_name=True)


class GitOrigin(_JobModel):
    repo: str | None = Field(None, description="Remote URL (or path) of the spec repository.")
    commit: str | None = Field(None, description="Commit the spec was read at.")
    dirty: bool = Field(False, description="The working tree had uncommitted changes.")


class MlflowTarget(_JobModel):
    tracking_uri: str
    experiment: str = "tuneops"


class Tokens(_JobModel):
    """The BaseModel's `tokens`: special tokens to set and tokens to add before training, and
    again before a trained adapter is loaded on the base (its embeddings have the grown size)."""

    pad: str | None = None
    eos: str | None = None
    bos: str | None = None
    add: tuple[str, ...] = ()


class BaseModelRef(_JobModel):
    """A BaseModel with its source made absolute (file:// paths no longer depend on the spec)."""

    name: str
    source: str
    revision: str | None = None
    chat_template: str = "tokenizer"  # a built-in name or an absolute path to a .jinja file
    trust_remote_code: bool = False
    tokens: Tokens | None = None
    fingerprint: str | None = None


class PreparedDataset(_JobModel):
    """A Dataset job's output: a folder with train/validation/test parquet and manifest.json."""

    name: str
    location: str
    digest: str
    schema_type: Literal["text", "instruction", "chat", "preference", "prompt", "binary-feedback"]
    fingerprint: str | None = None
    weight: float = 1.0
    max_samples: int | None = None  # the first N training rows only


class ModelVersionRef(_JobModel):
    """A trained model: where its weights are and what they sit on."""

    fine_tune: str
    location: str
    adapter: bool = True  # adapter weights on top of `base_model` (or `weights`), else full weights
    base_model: BaseModelRef
    weights: str | None = Field(
        None, description="An adapter trained on another fine-tune's full weights (a fromFineTune chain "
                          "through a full fine-tune): the folder of those weights, which the adapter is "
                          "loaded on instead of baseModel's. baseModel stays the base of the lineage.")
    registered_model: str | None = None
    version: str | None = None
    fingerprint: str | None = None


class GenerationDefaults(_JobModel):
    """How the Evaluation that judges a FineTune decodes: the fine-tune writes it into the saved
    model's generation_config.json, so a server decodes as the gate measured."""

    evaluation: str = Field(description="The Evaluation it comes from.")
    max_new_tokens: int
    temperature: float = Field(description="0 is greedy.")


class PruningJob(_JobModel):
    """Median pruning of a sweep trial: stop training when the metric is worse than the median
    of finished trials at the same step."""

    metric: str = Field(description="A key of the Trainer's logs: \"loss\" (every step), \"eval_loss\" "
                                    "(at each evaluation), ...")
    direction: Literal["minimize", "maximize"] = "minimize"
    min_steps: int = Field(0, ge=0, description="No pruning before this optimizer step (divergence "
                                                "stops a trial at any step).")
    min_trials: int = Field(2, ge=0, description="Finished trials needed before the median rule applies "
                                                 "(at least one always is).")
    history: tuple[tuple[tuple[int, float], ...], ...] = Field(
        (), description="Each finished trial's curve of the metric: (step, value) pairs, steps ascending.")
    trial: str | None = Field(None, description="The trial's name for messages: \"fruit-lr #3\".")


class ServeOptions(_JobModel):
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = Field(None, description="Set by the local backend for each start; the server "
                                                "repeats it in /health, so a health check proves it "
                                                "reached the process that start launched.")


class SpecCheckout(_JobModel):
    """Files of the spec repository a job reads (its in-repository file:// sources): in the
    cluster an init container checks them out at the job's commit into `into` before it starts."""

    into: str = Field(description="Folder of the checkout in the pod; file:// sources point into it.")
    paths: tuple[str, ...] = Field(description="Repository-relative files and folders to check out.")


class TaskFileRef(_JobModel):
    """An Evaluation's task YAML (`tasks[].path`) where the job reads it, with the files it reads."""

    path: str = Field(description="As the spec writes it.")
    location: str = Field(description="file:// the YAML, absolute where the job runs.")
    files: tuple[str, ...] = Field((), description="file:// the files it includes and reads data from.")


class RewardFileRef(_JobModel):
    """A GRPO fine-tune's Python reward file (`rewards[].python`) where the job reads it."""

    path: str = Field(description="As the spec writes it, before the `:function`.")
    location: str = Field(description="file:// the file, absolute where the job runs.")


class JobFile(_JobModel):
    format_version: Literal[1] = FORMAT_VERSION
    kind: JobKind
    name: str
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    spec: dict[str, Any] = Field(description="The spec as written, camelCase; the runtime applies defaults.")
    spec_path: str | None = None
    git: GitOrigin = Field(default_factory=GitOrigin)
    storage_root: str
    mlflow: MlflowTarget
    source: str | None = Field(None, description="Dataset jobs: the source URI, file:// made absolute.")
    base_model: BaseModelRef | None = None
    start_from: ModelVersionRef | None = Field(None, description="FineTunes with fromFineTune.")
    generation: GenerationDefaults | None = Field(
        None, description="FineTunes: the decoding written into the saved model's generation_config.json. "
                          "Not part of the fingerprint: changing an Evaluation's decoding retrains nothing.")
    datasets: tuple[PreparedDataset, ...] = ()
    reward_files: tuple[RewardFileRef, ...] | None = Field(
        None, description="GRPO FineTunes: the Python reward files its rewards name.")
    reward_models: tuple[ModelVersionRef, ...] | None = Field(
        None, description="GRPO FineTunes: the built reward models (FineTunes with method reward) its "
                          "rewards name.")
    pruning: PruningJob | None = Field(
        None, description="FineTunes run as a sweep trial: when to stop training early. Not part of "
                          "the fingerprint: the sweep driver fills it after the fingerprint is computed.")
    model: ModelVersionRef | BaseModelRef | None = Field(
        None, description="Evaluations and Deployments: the model scored or served.")
    baseline: ModelVersionRef | BaseModelRef | None = None
    task_files: tuple[TaskFileRef, ...] | None = Field(
        None, description="Evaluations: the task YAMLs its tasks name (none: no such task).")
    training_datasets: tuple[PreparedDataset, ...] | None = Field(
        None, description="Evaluations of a FineTune: the datasets it trained on, along its "
                        "fromFineTune chain (their train splits, maxSamples as trained), for the "
                        "contamination check; absent for a base model.")
    champion: ModelVersionRef | None = Field(
        None, description="Evaluations with a `notWorseThan: serving` gate or a pairwise judge: the "
                          "model version the Deployment that requires them serves now (none while "
                          "nothing serves).")
    champion_source: str | None = Field(
        None, description="Where the champion was found, for the results: e.g. \"Deployment/support\".")
    judge_url: str | None = Field(
        None, description="Evaluations whose judge is a Deployment: the URL its server answered at "
                          "when the job was built (a judge with a `url` reads it from the spec).")
    serve: ServeOptions = Field(default_factory=ServeOptions)
    checkout: SpecCheckout | None = Field(
        None, description="Kubernetes: the spec repository's files to check out before the job runs.")
    lineage: dict[str, Any] | None = Field(
        None, description="What the fingerprint was computed from besides the spec: upstream "
                          "fingerprints (`inputs`), local source digests (`sources`), `recipe`.")

    @property
    def command(self) -> str:
        return COMMAND_BY_KIND[self.kind]

    @property
    def output_dir(self) -> Path:
        """Where this job's result lands: keyed by fingerprint, so a rebuild never overwrites."""
        return output_dir_of(self.storage_root, self.kind, self.name, self.fingerprint)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2,
                          sort_keys=True) + "\n"


def read_job_file(path: Path) -> JobFile:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobFileError(f"{path}: no such job file") from None
    except OSError as error:
        raise JobFileError(f"{path}: cannot read the job file ({error.strerror})") from None
    try:
        return JobFile.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(document)"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise JobFileError(f"{path}: {where}: {first['msg']}{more}") from None
