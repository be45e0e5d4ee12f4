"""`Evaluation`: score a fine-tune (or a base model) on a dataset split against quality gates."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, Strict, model_validator

from reconciler.redaction import DAEMON_ONLY_VARIABLES, SECRET_ENVIRONMENT
from reconciler.specs.base import (
    Bool,
    Float,
    Int,
    Quantity,
    Reference,
    ReferenceName,
    Resource,
    ResourceId,
    SpecModel,
    SpecValueError,
    Str,
    ValueHiddenError,
    field,
    require_exactly_one,
)
from reconciler.values.kubernetes import NodeLabelValue

Metric = Literal["perplexity", "exact_match", "accuracy", "f1", "bleu", "rougeL"]
METRICS: tuple[str, ...] = Metric.__args__  # type: ignore[attr-defined]
# lm-evaluation-harness metrics that are better when lower; the rest of its metrics are not.
TASK_LOWER_IS_BETTER = frozenset({"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte",
                                  "ter", "brier_score"})


LOWER_IS_BETTER = frozenset({"perplexity"})


def lower_is_better(metric: str) -> bool:
    """Whether a gate's metric is better when lower: perplexity, and a named benchmark's
    `task/<task>/<metric>[.<filter>]` whose metric is one of TASK_LOWER_IS_BETTER."""
    if metric.startswith(TASK_METRIC_PREFIX):
        return metric.rpartition("/")[2].partition(".")[0] in TASK_LOWER_IS_BETTER
    return metric in LOWER_IS_BETTER
# The range each metric is reported in: text metrics as fractions (BLEU too, not 0-100).
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "perplexity": (1.0, float("inf")), "exact_match": (0.0, 1.0), "accuracy": (0.0, 1.0),
    "f1": (0.0, 1.0), "bleu": (0.0, 1.0), "rougeL": (0.0, 1.0),
}
# Metrics that compare generated text with a reference answer.
GENERATION_METRICS = frozenset({"exact_match", "accuracy", "f1", "bleu", "rougeL"})
# Metrics whose per-row score is 0 or 1: a paired comparison also reports McNemar's exact test.
BINARY_METRICS = frozenset({"exact_match", "accuracy"})
# A gate's metric: one of `metrics`, a named benchmark's (`task/<task>/<metric>`, lm-evaluation-
# harness) or the judge's (`judge/<metric>`).
GATE_METRIC_PATTERN = r"^(?:[A-Za-z][A-Za-z0-9_]*|task/[A-Za-z0-9_.-]+/[A-Za-z0-9_.,-]+|judge/[a-z_]+)$"
TASK_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
TASK_METRIC_PREFIX = "task/"
Champion = Literal["serving", "baseline"]
# A judge's rubric is sent with every row: longer than this (about 8k tokens) leaves no room for
# the question and answers in most judges' context.
RUBRIC_MAX_CHARS = 32_000
# What each judge mode logs, as `judge/<name>` (reconciler/runtime/judge.py).
JUDGE_METRICS = {
    "score": ("score", "score_low", "score_high", "unparsed", "rows"),
    "pairwise": ("win_rate", "win_rate_low", "win_rate_high", "wins", "losses", "ties", "unparsed", "rows"),
}


class _FineTuneOrBaseModel(SpecModel):
    """A model named either as a FineTune (its newest version) or as a BaseModel."""

    fine_tune: ReferenceName | None
    base_model: ReferenceName | None

    @model_validator(mode="after")
    def _exactly_one(self) -> _FineTuneOrBaseModel:
        require_exactly_one(self, "fine_tune", "base_model")
        return self

    @property
    def target(self) -> ResourceId:
        if self.fine_tune:
            return ResourceId("FineTune", self.fine_tune)
        return ResourceId("BaseModel", self.base_model or "")


class ModelUnderTest(_FineTuneOrBaseModel):
    fine_tune: ReferenceName | None = field(
        None, "A FineTune spec's name: its newest model version is scored.",
                                   example="support-sft")
    base_model: ReferenceName | None = field(
        None, "A BaseModel spec's name: the base model is scored as is.",
                                    example="llama-3-1-8b-instruct")


class EvaluationData(SpecModel):
    name: ReferenceName = field(
        doc="A Dataset spec's name.", example="support-chats")
    split: Literal["test", "validation", "train"] = field("test", "Which split to score on.")
    max_samples: Int | None = field(None, "Score at most this many rows (the first N by split "
                                          "order, so the sample is stable).", gt=0, example=500)


class Generation(SpecModel):
    max_new_tokens: Int = field(128, "Tokens generated per example for text metrics.",
                                unit="tokens", gt=0)
    temperature: Float = field(0.0, "Sampling temperature; 0 is greedy decoding.", ge=0)


class Gate(SpecModel):
    metric: Str = field(
        doc="A metric listed in `metrics`, a named benchmark's metric (`task/<task>/<metric>`) or "
            "the judge's (`judge/<metric>`).", example="exact_match", pattern=GATE_METRIC_PATTERN)
    min: Float | None = field(None, "The metric must be at least this.")
    max: Float | None = field(None, "The metric must be at most this.")
    not_worse_than: Champion | None = field(
        None, "Compare with the champion on the same rows: `serving` (the version the Deployment "
              "that requires this Evaluation serves now) or `baseline` (this Evaluation's "
              "`baseline`). Passes when the lower end of the paired confidence interval of "
              "(this model - champion) is above -margin (direction-aware: for perplexity, lower "
              "is better). Skipped, and said so, while no version serves.",
        example="serving", added_later=True)
    margin: Float = field(
        0.0, "How much worse than the champion is tolerated, in the metric's own units; "
             "`tuneops plan` warns when it is below what the split can detect.", ge=0,
        example=0.02, added_later=True)
    confidence: Float = field(
        0.95, "Confidence level of the paired interval (paired bootstrap, fixed seed).",
        gt=0.5, lt=1, added_later=True)

    @model_validator(mode="after")
    def _has_bound(self) -> Gate:
        if self.min is None and self.max is None and self.not_worse_than is None:
            raise SpecValueError("a gate needs min, max or notWorseThan")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise SpecValueError(f"min ({self.min}) is above max ({self.max})")
        if self.not_worse_than is None:
            for name in ("margin", "confidence"):
                if name in self.model_fields_set:
                    raise SpecValueError(f"{name} only applies to a comparison gate",
                                         "add notWorseThan: serving (or baseline)")
        return self

    @property
    def compares(self) -> bool:
        return self.not_worse_than is not None


class Baseline(_FineTuneOrBaseModel):
    base_model: ReferenceName | None = field(
        None, "Compare with this BaseModel.",
                                    example="llama-3-1-8b-instruct")
    fine_tune: ReferenceName | None = field(
        None, "Compare with this FineTune's newest passing version.",
                                   example="support-sft")
    max_regression: Float = field(
        0.0, "How much worse than the baseline each metric may be, in the metric's own units "
             "(direction-aware: for perplexity, higher is worse).", ge=0)


class BenchmarkTask(SpecModel):
    """A named benchmark, scored by lm-evaluation-harness with the metrics its task defines."""

    name: Str | None = field(None, "An lm-evaluation-harness task (or group) by name; offline, its "
                                   "dataset must be in the Hugging Face cache.",
                             example="hellaswag", pattern=TASK_NAME_PATTERN)
    path: Str | None = field(None, "A task YAML of lm-evaluation-harness in the spec repository, "
                                   "relative to this spec file; its local `data_files` are relative "
                                   "to the YAML.", example="evals/support-mc.yaml")
    limit: Int | None = field(None, "Score at most this many documents: the first N of the split "
                                    "the task is scored on.", gt=0, example=500)
    num_fewshot: Int | None = field(None, "Examples in each prompt; default: the task's own.", ge=0,
                                    example=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> BenchmarkTask:
        require_exactly_one(self, "name", "path")
        return self


class EvaluationResources(SpecModel):
    gpus: Int = field(0, "GPUs for the evaluation job.", ge=0, le=64, operational=True)
    gpu_product: NodeLabelValue | None = field(
        None, "GPU model to schedule on (the node label `nvidia.com/gpu.product`).", example="NVIDIA-L40S",
                                    operational=True)
    cpu: Quantity | None = field(None, "CPU request.", example="8", operational=True)
    memory: Quantity | None = field(None, "Memory request.", example="64Gi", operational=True)


_VARIABLE_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_HTTP_URL = re.compile(r"https?://[^\s@/]+(/[^\s]*)?")


def _variable_name(value: str) -> str:
    if not _VARIABLE_NAME.fullmatch(value):
        raise ValueHiddenError("must be the name of an environment variable (A-Z, 0-9, _), "
                               "never the key itself", "e.g. JUDGE_API_KEY")
    if value in SECRET_ENVIRONMENT or value in DAEMON_ONLY_VARIABLES:
        raise SpecValueError(f"{value} holds one of tuneops' own credentials, never sent to a judge",
                             "name a variable of its own, e.g. JUDGE_API_KEY")
    return value


def _judge_url(value: str) -> str:
    if not _HTTP_URL.fullmatch(value):
        raise ValueHiddenError("must be an http(s) URL without user name or password",
                               "the key goes in an environment variable that apiKeySecret names")
    return value


VariableName = Annotated[str, Strict(), AfterValidator(_variable_name),
                         Field(json_schema_extra={"pattern": f"^{_VARIABLE_NAME.pattern}$"})]
JudgeUrl = Annotated[str, Strict(), AfterValidator(_judge_url),
                     Field(json_schema_extra={"pattern": f"^{_HTTP_URL.pattern}$"})]


class JudgeEndpoint(SpecModel):
    deployment: ReferenceName | None = field(
        None, "A Deployment of this repository: the judge is the model its server serves when the "
              "job starts (it must be serving by then).", example="judge-llm")
    url: JudgeUrl | None = field(
        None, "Base URL of an OpenAI-compatible API, as OpenAI clients take it: the job POSTs to "
              "`<url>/chat/completions`.", example="https://api.openai.com/v1",
        pattern=r"^https?://[^\s@]+$")
    api_key_secret: VariableName | None = field(
        None, "The environment variable that holds the API key (never the key itself): locally "
              "read from tuneops' environment, on Kubernetes from the Secret "
              "`kubernetes.secrets.judge`, key of the same name. Sent as a bearer token.",
        example="JUDGE_API_KEY")

    @model_validator(mode="after")
    def _one_endpoint(self) -> JudgeEndpoint:
        require_exactly_one(self, "deployment", "url")
        if self.api_key_secret is not None and self.deployment is not None:
            raise SpecValueError("apiKeySecret goes with url: the project's own server needs no key")
        return self


class Judge(SpecModel):
    endpoint: JudgeEndpoint = field(doc="Where the judge is: `deployment` or `url` (+ `apiKeySecret`).")
    model: Str | None = field(None, "The model name sent to the endpoint; default: the first "
                                    "model its /models lists.", example="gpt-4o-mini")
    rubric: Str = field(doc="What a good answer is, in the judge's words; sent with every row, so "
                            "a long rubric leaves less of the judge's context for the answers.",
                        example="Prefer answers that are correct, concise and polite.",
                        min_length=1, max_length=RUBRIC_MAX_CHARS)
    mode: Literal["pairwise", "score"] = field(
        "score", "`score`: grade each answer 1-10 (`judge/score`). `pairwise`: compare each answer "
                 "with the champion's (the version serving, else the baseline), in both orders "
                 "(`judge/win_rate`, ties 0.5).")


class EvaluationSpec(SpecModel):
    model: ModelUnderTest = field(doc="What is scored.")
    dataset: EvaluationData = field(doc="What it is scored on.")
    metrics: tuple[Metric, ...] = field(
        ("perplexity",), "Metrics to compute. Text metrics (exact_match, accuracy, f1, bleu, "
                         "rougeL) are reported between 0 and 1; perplexity is 1 or more. May be "
                         "empty when `tasks` lists benchmarks.",
        example=["perplexity", "rougeL"])
    generation: Generation = field(default_factory=Generation,
                                   doc="Decoding settings for text metrics.")
    gates: tuple[Gate, ...] = field((), "Thresholds the model must meet to be deployable.")
    baseline: Baseline | None = field(None, "A model this one must not fall behind.")
    fail_on_contamination: Bool = field(
        False, "Fail the verdict when any scored row appears in the training data of the "
               "FineTune scored (its prompt, normalised, equals a training row's, or 13 words in a "
               "row overlap training text). Contamination is counted and reported either way.",
        example=True, added_later=True)
    resources: EvaluationResources = field(default_factory=EvaluationResources,
                                           doc="Compute for the job.", operational=True)
    suspend: Bool = field(False, "Keep the spec but start nothing new for it.", operational=True)
    tasks: tuple[BenchmarkTask, ...] = field(
        (), "Named benchmarks run through lm-evaluation-harness on the model under test; each "
            "metric is recorded (and gateable) as `task/<task>/<metric>`.",
        example=[{"name": "hellaswag", "limit": 500, "numFewshot": 0}], added_later=True)
    judge: Judge | None = field(None, "An LLM that grades the answers; gate on `judge/<metric>`.",
                                added_later=True)

    @model_validator(mode="after")
    def _metrics_unique(self) -> EvaluationSpec:
        if not self.metrics and not self.tasks:
            raise SpecValueError("nothing to score: metrics is empty and no tasks are listed",
                                 "list a metric, or a benchmark under tasks")
        seen: set[str] = set()
        for metric in self.metrics:
            if metric in seen:
                raise SpecValueError(f"metric '{metric}' is listed twice")
            seen.add(metric)
        listed: set[str] = set()
        for task in self.tasks:
            key = task.name or task.path or ""
            if key in listed:
                raise SpecValueError(f"task '{key}' is listed twice")
            listed.add(key)
        return self

    @property
    def is_gating(self) -> bool:
        return bool(self.gates) or self.baseline is not None or self.fail_on_contamination

    @property
    def scores_generated_text(self) -> bool:
        """The model answers and its answers are scored, decoded as `generation` says."""
        return not GENERATION_METRICS.isdisjoint(self.metrics) or self.judge is not None

    @property
    def judges_pairwise(self) -> bool:
        return self.judge is not None and self.judge.mode == "pairwise"


def computed_metrics(spec: EvaluationSpec) -> tuple[str, ...]:
    """The metric names an Evaluation records, as gates and a Sweep's objective name them:
    `metrics`, the judge's `judge/<metric>`, and for each named benchmark
    `task/<task>/<metric>`, whose metric names lm-eval knows only when it runs (a task file
    appears as `task/<file>/...` here; rules/benchmarks.py reads its task names)."""
    names = list(spec.metrics)
    if spec.judge is not None:
        names += [f"judge/{name}" for name in JUDGE_METRICS[spec.judge.mode]]
    names += [f"{TASK_METRIC_PREFIX}{task.name or task.path}/<metric>" for task in spec.tasks]
    return tuple(names)


def computes_metric(spec: EvaluationSpec, metric: str) -> bool:
    """Whether `metric` is one an Evaluation records (computed_metrics); any `task/<task>/<metric>`
    is accepted while it lists benchmarks, whose metrics are known only when they run."""
    if metric.startswith(TASK_METRIC_PREFIX):
        return bool(spec.tasks) and metric.count("/") >= 2
    return metric in computed_metrics(spec)


class EvaluationResource(Resource):
    """A scored evaluation whose gates decide what may be deployed."""

    KIND: ClassVar[str] = "Evaluation"
    kind: Literal["Evaluation"] = field(doc="`Evaluation`.")
    spec: EvaluationSpec = field(doc="What is scored, on what, and the gates.")

    def references(self) -> list[Reference]:
        refs = [
            Reference(self.spec.model.target,
                      ("spec", "model", "fineTune" if self.spec.model.fine_tune else "baseModel"),
                      "model under evaluation"),
            Reference(ResourceId("Dataset", self.spec.dataset.name), ("spec", "dataset", "name"),
                      "dataset"),
        ]
        if self.spec.baseline:
            baseline = self.spec.baseline
            refs.append(Reference(baseline.target,
                                  ("spec", "baseline", "fineTune" if baseline.fine_tune else "baseModel"),
                                  "baseline"))
        return refs
