"""The job's MLflow run: opened (or resumed) with the lineage tags, and the writes every kind shares.

One run per materialised resource. Only rank 0 of a distributed job calls anything here.
MLflow's own HTTP retries are turned down so that `tracking.with_retries` decides how long
an unreachable server is waited for, and the error names the URI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from reconciler.jobs.jobfile import JobFile, ModelVersionRef
from reconciler.specs.base import team_of
from reconciler.tracking import vocabulary as tracking
from reconciler.tracking.client_store import artifact_location

if TYPE_CHECKING:
    from types import ModuleType

Answer = TypeVar("Answer")  # what a retried MLflow call returns


def _mlflow() -> ModuleType:
    # MLflow's client retries each request up to 7 times with growing waits (minutes in all);
    # we retry whole operations ourselves, with a short schedule and a clear final message.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    import mlflow

    return mlflow


def mlflow_digest(digest: str) -> str:
    """Our `sha256:<hex>` digest cut to what MLflow's dataset table holds (36 characters)."""
    return digest.removeprefix("sha256:")[:36]


def upstream_model_tags(job: JobFile) -> dict[str, str]:
    """The model versions a fine-tune started from and scored with, as "<model>/<version>": the
    lineage reaches them from its run and its model version."""
    def named(ref: ModelVersionRef) -> str:
        return f"{ref.registered_model or ref.fine_tune}/{ref.version or '?'}"

    tags = {}
    if job.start_from is not None and job.start_from.version:
        tags[tracking.TAG_STARTED_FROM] = named(job.start_from)
    for ref in job.reward_models or ():
        tags[f"{tracking.TAG_REWARD_MODEL_PREFIX}{ref.fine_tune}"] = named(ref)
    return tags


def lineage_tags(job: JobFile) -> dict[str, str]:
    tags = {
        tracking.TAG_KIND: job.kind,
        tracking.TAG_NAME: job.name,
        tracking.TAG_FINGERPRINT: job.fingerprint,
        tracking.TAG_GIT_REPO: job.git.repo or "",
        tracking.TAG_GIT_COMMIT: job.git.commit or "",
        tracking.TAG_SPEC_PATH: job.spec_path or "",
        tracking.TAG_OUTPUT: str(job.output_dir) if job.kind != "Deployment" else "",
    }
    if job.git.dirty:
        tags[tracking.TAG_GIT_DIRTY] = "true"
    if team_of(job.name):
        tags[tracking.TAG_TEAM] = team_of(job.name) or ""
    # The spec and the fingerprint's other inputs, so a later plan can say which fields or
    # upstreams changed. MLflow caps a tag at 8,000 characters; a longer one is left out.
    for key, value in ((tracking.TAG_SPEC, job.spec), (tracking.TAG_LINEAGE, job.lineage)):
        text = json.dumps(value, sort_keys=True, separators=(",", ":")) if value else ""
        if len(text) <= tracking.MAX_TAG_LENGTH:
            tags[key] = text
    base = job.base_model or (job.start_from.base_model if job.start_from else None)
    if base is not None:
        tags[tracking.TAG_BASE_SOURCE] = base.source
        tags[tracking.TAG_BASE_REVISION] = base.revision or ""
    for dataset in job.datasets:
        tags[tracking.dataset_digest_tag(dataset.name)] = dataset.digest
    tags.update(upstream_model_tags(job))
    return {key: value for key, value in tags.items() if value != ""}


class JobRun:
    """The open MLflow run of one job, with the client calls retried."""

    def __init__(self, job: JobFile, run_id: str):
        self.job = job
        self.run_id = run_id
        self.mlflow = _mlflow()
        self.client = self.mlflow.MlflowClient(job.mlflow.tracking_uri)

    def _retry(self, what: str, call: Callable[[], Answer]) -> Answer:
        return tracking.with_retries(call, self.job.mlflow.tracking_uri, what)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key[:250], str(value)[:6000]) for key, value in sorted(params.items())]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            chunk = items[start:start + 100]
            self._retry("log parameters",
                        lambda chunk=chunk: self.client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(key, float(value), stamp, step or 0) for key, value in metrics.items()
                 if value is not None]
        if items:
            self._retry("log metrics", lambda: self.client.log_batch(self.run_id, metrics=items))

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(key, value) for key, value in tags.items()]
        self._retry("set tags", lambda: self.client.log_batch(self.run_id, tags=items))

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        self._retry("upload artifacts",
                    lambda: self.client.log_artifacts(self.run_id, str(local_dir), artifact_path))

    def log_artifact(self, local_file: Path, artifact_path: str | None = None) -> None:
        self._retry("upload an artifact",
                    lambda: self.client.log_artifact(self.run_id, str(local_file), artifact_path))

    def log_dataset(self, name: str, *, digest: str, source: str, context: str, rows: int,
                    schema_type: str, columns: tuple[str, ...] = (), split_digest: str | None = None) -> None:
        """An MLflow dataset input carrying our full-content digest. MLflow's own digest reads only
        the first 10,000 rows, and its column holds 36 characters: the input's digest is the first
        36 hex digits of the split's digest (MLflow keeps one input per name and digest, so the
        training and validation splits need their own), and the dataset's full `sha256:...`
        rides along as the input tag `tuneops.digest`."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        schema = json.dumps({"mlflow_colspec": [{"type": "string", "name": column, "required": True}
                                                for column in columns]})
        dataset = Dataset(name=name, digest=mlflow_digest(split_digest or digest), source_type="local",
                          source=json.dumps({"uri": source}), schema=schema,
                          profile=json.dumps({"num_rows": rows, "schema_type": schema_type}))
        tags = [InputTag("mlflow.data.context", context), InputTag("tuneops.digest", digest)]
        self._retry("log a dataset input",
                    lambda: self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags)]))

    def finish(self, status: str = "FINISHED") -> None:
        tags = self._gpu_hours_tags()  # a failed run used its GPUs too: every end is counted
        if status == "FINISHED":
            tags[tracking.TAG_STATUS] = tracking.STATUS_COMPLETE
        if tags:
            self.set_tags(tags)
        self._retry("close the run", lambda: self.client.set_terminated(self.run_id, status))

    def _gpu_hours_tags(self) -> dict[str, str]:
        """What a team's month-to-date spend is read from (tracking/spend.py): the GPUs the job
        asked for times the run's wall-clock hours since it started (a resumed run's included)."""
        import time

        gpus, product = job_gpus(self.job)
        if gpus is None:
            return {}
        started = self._retry("read the run", lambda: self.client.get_run(self.run_id).info.start_time)
        hours = gpus * max(time.time() - (started or 0) / 1000, 0.0) / 3600 if started else 0.0
        tags = {tracking.TAG_GPU_HOURS: repr(round(hours, 6))}
        if product:
            tags[tracking.TAG_GPU_PRODUCT] = product
        return tags

    @property
    def artifact_uri(self) -> str:
        return self._retry("read the run", lambda: self.client.get_run(self.run_id).info.artifact_uri)


def job_gpus(job: JobFile) -> tuple[int | None, str | None]:
    """(GPUs a FineTune or Evaluation job holds, the product it asked for); (None, None) for
    the kinds that use no GPU."""
    from reconciler.specs.evaluation import EvaluationSpec
    from reconciler.specs.finetune import FineTuneSpec

    if job.kind == "FineTune":
        resources = FineTuneSpec.model_validate(job.spec).resources
        return resources.nodes * resources.gpus_per_node, resources.gpu_product
    if job.kind == "Evaluation":
        evaluation = EvaluationSpec.model_validate(job.spec).resources
        return evaluation.gpus, evaluation.gpu_product
    return None, None


def ensure_experiment(job: JobFile) -> str:
    mlflow = _mlflow()
    client = mlflow.MlflowClient(job.mlflow.tracking_uri)

    def get_or_create() -> str:
        found = client.get_experiment_by_name(job.mlflow.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(job.mlflow.experiment,
                                            artifact_location=artifact_location(job.mlflow.tracking_uri))
        except mlflow.exceptions.MlflowException:  # created meanwhile by another job
            again = client.get_experiment_by_name(job.mlflow.experiment)
            if again is None:
                raise
            return again.experiment_id

    return tracking.with_retries(get_or_create, job.mlflow.tracking_uri, "open the experiment")


def open_run(job: JobFile, *, resume: bool = False) -> JobRun:
    """A new run tagged with the job's lineage, or, with `resume`, the newest unfinished run of
    the same fingerprint (a restarted job continues its run instead of starting a twin)."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient(job.mlflow.tracking_uri)
    experiment_id = ensure_experiment(job)
    if resume:
        found = unfinished_run(job, experiment_id)
        if found is not None:
            run = JobRun(job, found)
            tracking.with_retries(lambda: client.update_run(found, status="RUNNING"),
                                  job.mlflow.tracking_uri, "reopen the run")
            return run
    tags = lineage_tags(job)
    tags["mlflow.runName"] = f"{job.name}-{job.fingerprint[:8]}"
    if job.spec_path:
        tags["mlflow.source.name"] = job.spec_path
    if job.git.commit:
        tags["mlflow.source.git.commit"] = job.git.commit
    created = tracking.with_retries(lambda: client.create_run(experiment_id, tags=tags),
                                    job.mlflow.tracking_uri, "start a run")
    return JobRun(job, created.info.run_id)


def unfinished_run(job: JobFile, experiment_id: str) -> str | None:
    client = _mlflow().MlflowClient(job.mlflow.tracking_uri)
    query = (f"tags.`{tracking.TAG_FINGERPRINT}` = '{job.fingerprint}' and "
             f"tags.`{tracking.TAG_KIND}` = '{job.kind}'")
    runs = tracking.with_retries(
        lambda: client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"],
                                   max_results=20),
        job.mlflow.tracking_uri, "look for the run to resume")
    for run in runs:  # a pruned trial is final too: running it again starts a new run
        if run.data.tags.get(tracking.TAG_STATUS) not in (tracking.STATUS_COMPLETE, tracking.STATUS_PRUNED):
            return run.info.run_id
    return None


def register_model_version(run: JobRun, name: str, source: str, tags: dict[str, str],
                           description: str | None = None) -> str:
    """Create (if needed) the registered model and a version of it; returns the version."""
    mlflow = run.mlflow
    client = run.client

    def create() -> str:
        try:
            client.create_registered_model(name)
        except mlflow.exceptions.MlflowException as error:
            if "already exists" not in str(error).lower() and "RESOURCE_ALREADY_EXISTS" not in str(error):
                raise
        version = client.create_model_version(name, source, run_id=run.run_id, tags=tags,
                                              description=description)
        return version.version

    return tracking.with_retries(create, run.job.mlflow.tracking_uri, "register the model version")
