"""Spec + what its upstreams produced -> the job file one `tuneops run KIND` reads.

Everything a job needs is resolved here, once: file:// paths made absolute, the prepared
datasets' locations and digests, the model version to score or serve. So a job never re-reads
Git or MLflow to find its inputs, and the same JobFile runs locally or in a Kubernetes Job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import PermanentError, TemporaryError
from reconciler.fingerprint import FingerprintInput, resolved_spec
from reconciler.jobs.jobfile import (
    BaseModelRef,
    GenerationDefaults,
    GitOrigin,
    JobFile,
    MlflowTarget,
    ModelVersionRef,
    PreparedDataset,
    RewardFileRef,
    SpecCheckout,
    TaskFileRef,
    Tokens,
)
from reconciler.specs.base import ResourceId
from reconciler.specs.basemodel import BaseModelResource
from reconciler.specs.dataset import DatasetResource
from reconciler.specs.deployment import DeploymentResource
from reconciler.specs.evaluation import EvaluationResource
from reconciler.specs.finetune import FineTuneResource, reward_file_path
from reconciler.specs.sources import parse_source
from reconciler.specs.specset import SpecSet
from reconciler.specs.task_files import TaskFileError, read_task_file, task_file_path
from reconciler.state import BuiltRun


class NotBuiltYet(TemporaryError, LookupError):
    """An upstream the job needs has no complete run at its fingerprint."""


class JudgeNotServing(PermanentError, LookupError):
    """An Evaluation's judge is a Deployment that serves nothing now."""


@dataclass(frozen=True)
class JobContext:
    """Project-wide facts every job file carries."""

    storage_root: Path
    mlflow: MlflowTarget
    git: GitOrigin
    repo_root: Path | None = None  # spec paths are recorded relative to it
    # Where jobs find the spec repository's own files (in the cluster: a checkout at the job's
    # commit); None: file:// sources are read where they are on this machine.
    checkout_into: str | None = None


class JobBuilder:
    """Builds job files from the specs, their fingerprint inputs and the upstreams' built runs.

    `lookup(kind, name, fingerprint)` returns the complete run of an upstream (apply reads it
    fresh after each job)."""

    def __init__(self, specs: SpecSet, inputs: dict[ResourceId, FingerprintInput], context: JobContext,
                 lookup: Callable[[str, str, str], BuiltRun | None],
                 serving: Callable[[str], tuple[str, ModelVersionRef] | None] | None = None,
                 server_url: Callable[[str], str | None] | None = None):
        """`serving(evaluation)` is the Deployment that requires that Evaluation and the model
        version it serves now (None when nothing serves): the champion a `notWorseThan: serving`
        gate or a pairwise judge compares with. `server_url(deployment)` is where that
        Deployment's server answers now (None: not serving), for a judge on it. Without them (a
        render), no champion and no judge URL are named."""
        self.specs, self.inputs, self.context, self.lookup = specs, inputs, context, lookup
        self.serving, self.server_url = serving, server_url

    def fingerprint(self, rid: ResourceId) -> str:
        return self.inputs[rid].fingerprint

    def built(self, rid: ResourceId) -> BuiltRun:
        run = self.lookup(rid.kind, rid.name, self.fingerprint(rid))
        if run is None:
            raise NotBuiltYet(f"{rid} has no complete run at fingerprint {self.fingerprint(rid)[:12]}")
        return run

    def _spec_path(self, rid: ResourceId) -> str | None:
        loaded = self.specs.get(rid)
        if loaded is None:
            return None
        root = self.context.repo_root or self.specs.root
        path = loaded.path.absolute()
        root = root.absolute()
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)

    def _absolute(self, rid: ResourceId, uri: str) -> str:
        """A file:// source as the job sees it: absolute on this machine, or, for a file of the
        spec repository when jobs check it out, inside that checkout."""
        source = parse_source(uri)
        if source.scheme != "file":
            return uri
        loaded = self.specs.get(rid)
        assert loaded is not None
        # Symlinks followed: a pod checks out the file itself, not a link to a path it lacks.
        path = source.local_path(loaded.path.parent).resolve()
        root, into = self.context.repo_root, self.context.checkout_into
        if into and root is not None and path.is_relative_to(root.resolve()):
            return f"file://{into}/{path.relative_to(root.resolve()).as_posix()}"
        return f"file://{path}"

    def base_model(self, rid: ResourceId) -> BaseModelRef:
        resource = self.specs.resource(rid, BaseModelResource)
        assert resource is not None, rid
        template, tokens = resource.spec.chat_template, resource.spec.tokens
        if template.startswith("file://"):
            template = self._absolute(rid, template).removeprefix("file://")
        return BaseModelRef(name=rid.name, source=self._absolute(rid, resource.spec.source),
                            revision=resource.spec.revision, chat_template=template,
                            trust_remote_code=resource.spec.trust_remote_code,
                            tokens=Tokens.model_validate(tokens.model_dump()) if tokens else None,
                            fingerprint=self.fingerprint(rid))

    def base_of(self, fine_tune: ResourceId) -> BaseModelRef:
        """The base model under a FineTune, following fromFineTune chains."""
        resource = self.specs.resource(fine_tune, FineTuneResource)
        assert resource is not None, fine_tune
        if resource.spec.base_model:
            return self.base_model(ResourceId("BaseModel", resource.spec.base_model))
        return self.base_of(ResourceId("FineTune", resource.spec.from_fine_tune or ""))

    def weights_under(self, fine_tune: ResourceId) -> str | None:
        """The full weights a FineTune's adapter sits on when they are not its base model's: the
        output of the nearest full fine-tune up its fromFineTune chain (an adapter that continues
        another adapter sits where that one does). None when the chain reaches the base model."""
        resource = self.specs.resource(fine_tune, FineTuneResource)
        assert resource is not None, fine_tune
        if resource.spec.from_fine_tune is None:
            return None
        start = ResourceId("FineTune", resource.spec.from_fine_tune)
        started = self.specs.resource(start, FineTuneResource)
        assert started is not None, start
        if started.spec.adapter.type == "none":
            return self.built(start).output or None
        return self.weights_under(start)

    def model_version(self, fine_tune: ResourceId, run: BuiltRun | None = None) -> ModelVersionRef:
        """A FineTune's built model: at its desired fingerprint, or the given run."""
        resource = self.specs.resource(fine_tune, FineTuneResource)
        assert resource is not None, fine_tune
        run = run or self.built(fine_tune)
        registered, _, version = (run.model_version or "").rpartition("/")
        adapter = resource.spec.adapter.type != "none"
        return ModelVersionRef(fine_tune=fine_tune.name, location=run.output or "", adapter=adapter,
                               weights=self.weights_under(fine_tune) if adapter else None,
                               base_model=self.base_of(fine_tune),
                               registered_model=registered or resource.registered_model,
                               version=version or None, fingerprint=run.fingerprint)

    def prepared(self, name: str, weight: float = 1.0, max_samples: int | None = None) -> PreparedDataset:
        rid = ResourceId("Dataset", name)
        resource = self.specs.resource(rid, DatasetResource)
        assert resource is not None, rid
        run = self.built(rid)
        return PreparedDataset(name=name, location=run.output or "", digest=run.dataset_digest or "",
                               schema_type=resource.spec.data_schema.type, fingerprint=run.fingerprint,
                               weight=weight, max_samples=max_samples)

    def trained_on(self, fine_tune: ResourceId) -> tuple[PreparedDataset, ...]:
        """The datasets a FineTune's model learned from: its own, then those of the fine-tune it
        starts from, and so on (each once, with the rows it trained on)."""
        found: dict[str, PreparedDataset] = {}
        seen: set[str] = set()
        current: str | None = fine_tune.name
        while current and current not in seen:
            seen.add(current)
            resource = self.specs.resource(ResourceId("FineTune", current), FineTuneResource)
            if resource is None:
                break
            for dataset in resource.spec.datasets:
                earlier = found.get(dataset.name)
                rows = dataset.max_samples
                if earlier is not None:  # trained on by two fine-tunes: the more rows of the two
                    rows = None if None in (rows, earlier.max_samples) else max(rows, earlier.max_samples)
                found[dataset.name] = self.prepared(dataset.name, max_samples=rows)
            current = resource.spec.from_fine_tune
        return tuple(found.values())

    def _judge_url(self, rid: ResourceId, deployment: str) -> str:
        assert self.server_url is not None
        url = self.server_url(deployment)
        if not url:
            raise JudgeNotServing(f"{rid}'s judge is Deployment/{deployment}, which serves nothing "
                                  "now: apply it first, or give the judge's endpoint a url")
        return url.rstrip("/") + "/v1"

    def judging_decoding(self, fine_tune: ResourceId) -> GenerationDefaults | None:
        """The decoding a FineTune's versions are judged with: that of the first Evaluation of it
        that scores generated text, among those its Deployments require, then among its other
        gating Evaluations (by name). None when no Evaluation generates text for it."""
        required: list[str] = []
        for name in sorted(self.specs.names("Deployment")):
            deployment = self.specs.resource(ResourceId("Deployment", name), DeploymentResource)
            # sweep: a trial of a Sweep is judged like its template; the engine passes that on
            if deployment is not None and deployment.spec.model.fine_tune == fine_tune.name:
                required += deployment.spec.requires
        others = sorted(name for name in self.specs.names("Evaluation") if name not in required)
        for name in (*required, *others):
            evaluation = self.specs.resource(ResourceId("Evaluation", name), EvaluationResource)
            if (evaluation is None or evaluation.spec.model.fine_tune != fine_tune.name
                    or not evaluation.spec.scores_generated_text
                    or (name in others and not evaluation.spec.is_gating)):
                continue
            generation = evaluation.spec.generation
            return GenerationDefaults(evaluation=name, max_new_tokens=generation.max_new_tokens,
                                      temperature=generation.temperature)
        return None

    def task_files(self, rid: ResourceId) -> tuple[TaskFileRef, ...]:
        """An Evaluation's task YAMLs and the files they read, where the job sees them."""
        loaded = self.specs.get(rid)
        assert loaded is not None and isinstance(loaded.resource, EvaluationResource), rid
        refs = []
        for task in loaded.resource.spec.tasks:
            if task.path is None:
                continue
            path = task_file_path(loaded.path.parent, task.path)
            try:
                files = tuple(self._absolute(rid, f"file://{item.local_path().absolute()}")
                              for item in read_task_file(path).files)
            except TaskFileError:  # validation refused it; the job says so again
                files = ()
            refs.append(TaskFileRef(path=task.path, location=self._absolute(rid, f"file://{path}"),
                                    files=files))
        return tuple(refs)

    def _model_or_base(self, target: ResourceId) -> ModelVersionRef | BaseModelRef:
        return self.model_version(target) if target.kind == "FineTune" else self.base_model(target)

    def job(self, rid: ResourceId, *, serve_run: BuiltRun | None = None) -> JobFile:
        """The job file for `rid`. For a Deployment, `serve_run` is the FineTune run to serve
        (default: the one at the FineTune's desired fingerprint)."""
        loaded = self.specs.get(rid)
        assert loaded is not None, rid
        resource = loaded.resource
        item = self.inputs[rid]
        fields: dict = dict(
            kind=rid.kind, name=rid.name, fingerprint=item.fingerprint, spec=resolved_spec(resource),
            spec_path=self._spec_path(rid), git=self.context.git, storage_root=str(self.context.storage_root),
            mlflow=self.context.mlflow,
            lineage={"recipe": item.recipe, "inputs": item.inputs, "sources": item.sources},
        )
        if isinstance(resource, DatasetResource):
            fields["source"] = self._absolute(rid, resource.spec.source)
        elif isinstance(resource, FineTuneResource):
            spec = resource.spec
            if spec.base_model:
                fields["base_model"] = self.base_model(ResourceId("BaseModel", spec.base_model))
            else:
                fields["start_from"] = self.model_version(ResourceId("FineTune", spec.from_fine_tune or ""))
            fields["datasets"] = tuple(self.prepared(d.name, d.weight, d.max_samples) for d in spec.datasets)
            fields["generation"] = self.judging_decoding(rid)
            fields["reward_files"] = tuple(
                RewardFileRef(path=written, location=self._absolute(
                    rid, f"file://{reward_file_path(loaded.path.parent, written)}"))
                for written in dict.fromkeys(r.python_file for r in spec.rewards if r.python_file)) or None
            fields["reward_models"] = tuple(self.model_version(ResourceId("FineTune", name))
                                            for name in spec.reward_models) or None
        elif isinstance(resource, EvaluationResource):
            spec = resource.spec
            fields["model"] = self._model_or_base(spec.model.target)
            fields["datasets"] = (self.prepared(spec.dataset.name),)
            if spec.model.fine_tune:
                fields["training_datasets"] = self.trained_on(ResourceId("FineTune", spec.model.fine_tune))
            if spec.baseline is not None:
                fields["baseline"] = self._model_or_base(spec.baseline.target)
            fields["task_files"] = self.task_files(rid) or None
            compares_with_serving = spec.judges_pairwise or any(
                gate.not_worse_than == "serving" for gate in spec.gates)
            served = (self.serving(rid.name) if self.serving is not None and compares_with_serving
                      else None)
            if served is not None:
                deployment, fields["champion"] = served
                fields["champion_source"] = f"Deployment/{deployment}"
            if spec.judge is not None and spec.judge.endpoint.deployment and self.server_url is not None:
                fields["judge_url"] = self._judge_url(rid, spec.judge.endpoint.deployment)
        elif isinstance(resource, DeploymentResource):
            # A sweep's Deployment serves one of its trials: the run names the FineTune.
            served = ResourceId("FineTune", serve_run.name if serve_run is not None
                                else resource.spec.model.fine_tune or "")
            fields["model"] = self.model_version(served, serve_run)
        job = JobFile(**fields)
        if self.context.checkout_into:
            paths = checkout_paths(job, self.context.checkout_into)
            if paths:
                job = job.model_copy(update={"checkout": SpecCheckout(into=self.context.checkout_into,
                                                                      paths=paths)})
        return job


def checkout_paths(job: JobFile, into: str) -> tuple[str, ...]:
    """The repository-relative paths a job file points at inside the checkout folder: its
    dataset source, base model and chat template when they live in the spec repository."""
    found: set[str] = set()

    def visit(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, list | tuple):
            for item in value:
                visit(item)
        elif isinstance(value, str):
            path = value.removeprefix("file://")
            if path.startswith(f"{into}/"):
                found.add(path[len(into) + 1:])

    visit(job.model_dump(exclude={"spec"}))  # the spec holds sources as written, not resolved
    return tuple(sorted(found))
