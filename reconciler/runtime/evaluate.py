"""`tuneops run evaluate`: score a model on a prepared split, compare with gates and a baseline,
write results.json and report.md, and record the verdict in MLflow.

A failed gate is a result, not a crash: it is recorded (on the run and on the model version
scored) and the command exits 0. Only an execution error exits non-zero.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError
from reconciler.fileio import replace_directory
from reconciler.jobs.jobfile import BaseModelRef, JobFile, ModelVersionRef
from reconciler.plan.gates import Verdict, evaluate_gates
from reconciler.runtime.chat_templates import END_OF_TURN_TOKENS
from reconciler.runtime.contamination import check_contamination
from reconciler.specs.evaluation import GENERATION_METRICS, EvaluationSpec
from reconciler.tracking import vocabulary as tracking


class EvaluationError(PermanentError, ValueError):
    """An evaluation that cannot run as specified."""


@dataclass(frozen=True)
class Example:
    """One scored row: the conversation before the answer, and the reference answer."""

    prompt: list[dict[str, str]] | None  # None for plain text rows
    reference: str


def examples_from_rows(rows: list[dict[str, Any]], schema_type: str) -> list[Example]:
    from reconciler.runtime.training_data import to_record

    examples = []
    for row in rows:
        if schema_type == "text":
            examples.append(Example(None, row["text"]))
            continue
        record = to_record(row, schema_type, "sft")
        if record is not None:
            examples.append(Example(record["prompt"], record["completion"][0]["content"]))
    return examples


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The ids generation stops at: EOS and the chat templates' end-of-turn tokens."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocabulary = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in vocabulary:
            ids.add(vocabulary[token])
    return sorted(ids)


def _prompt_ids(tokenizer: Any, example: Example) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            example.prompt, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
    )


def perplexity(model: Any, tokenizer: Any, examples: list[Example], max_length: int = 2048) -> float:
    """exp(mean NLL) over the answer tokens (the whole text for text rows); prompts are context."""
    import torch

    total_nll, total_tokens = 0.0, 0
    for example in examples:
        if example.prompt is None:
            ids = tokenizer(example.reference, truncation=True, max_length=max_length)["input_ids"]
            context = 0
        else:
            context_ids = _prompt_ids(tokenizer, example)
            conversation = [*example.prompt, {"role": "assistant", "content": example.reference}]
            ids = list(
                tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
            )
            ids = ids[:max_length]
            context = min(len(context_ids), len(ids) - 1)
        if len(ids) < 2:
            continue
        inputs = torch.tensor([ids], device=model.device)
        labels = inputs.clone()
        labels[0, : max(context, 1)] = -100  # the first token has no prediction either way
        with torch.inference_mode():
            loss = model(input_ids=inputs, labels=labels).loss
        scored = int((labels[0, 1:] != -100).sum())
        total_nll += float(loss) * scored
        total_tokens += scored
    if total_tokens == 0:
        raise EvaluationError("no tokens to score for perplexity")
    return math.exp(total_nll / total_tokens)


def generate(
    model: Any, tokenizer: Any, examples: list[Example], max_new_tokens: int, temperature: float
) -> list[str]:
    """The model's answers, greedy unless a temperature is set."""
    import torch

    stops = stop_token_ids(tokenizer)
    answers = []
    for example in examples:
        if example.prompt is None:
            raise EvaluationError("text metrics need instruction, chat or preference data, not text")
        ids = torch.tensor([_prompt_ids(tokenizer, example)], device=model.device)
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "eos_token_id": stops,
            "pad_token_id": tokenizer.pad_token_id,
        }
        if temperature > 0:
            options.update(do_sample=True, temperature=temperature)
        else:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **options)
        answers.append(tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return answers


def score(
    ref: ModelVersionRef | BaseModelRef, spec: EvaluationSpec, examples: list[Example]
) -> tuple[dict[str, float], list[str]]:
    """The requested metrics of one model, and its answers (empty without text metrics)."""
    import torch

    from reconciler.runtime.loading import load_model, load_model_tokenizer
    from reconciler.runtime.metrics import compute_text_metrics

    torch.manual_seed(0)
    model = load_model(ref)
    if torch.cuda.is_available():  # the Job asked for the Evaluation's spec.resources.gpus
        model = model.to("cuda")
    model.eval()
    tokenizer = load_model_tokenizer(ref)
    metrics: dict[str, float] = {}
    if "perplexity" in spec.metrics:
        metrics["perplexity"] = perplexity(model, tokenizer, examples)
    answers: list[str] = []
    wanted = [name for name in spec.metrics if name in GENERATION_METRICS]
    if wanted:
        answers = generate(
            model, tokenizer, examples, spec.generation.max_new_tokens, spec.generation.temperature
        )
        metrics.update(compute_text_metrics(wanted, answers, [e.reference for e in examples]))
    return metrics, answers


def run_evaluate(job: JobFile) -> Path:
    from reconciler.runtime.dataset import load_split

    spec = EvaluationSpec.model_validate(job.spec)
    if job.model is None:
        raise EvaluationError("the job file names no model to evaluate")
    if not job.datasets:
        raise EvaluationError("the job file names no prepared dataset")
    dataset = job.datasets[0]
    rows = load_split(dataset.location, spec.dataset.split)
    if spec.dataset.max_samples:
        rows = rows[: spec.dataset.max_samples]
    examples = examples_from_rows(rows, dataset.schema_type)
    if not examples:
        raise EvaluationError(
            f"split '{spec.dataset.split}' of dataset '{dataset.name}' has no rows to score"
        )

    from reconciler.runtime.lineage import open_run

    run = open_run(job)
    try:
        metrics, answers = score(job.model, spec, examples)
        baseline_metrics = None
        if job.baseline is not None:
            baseline_metrics, _ = score(job.baseline, spec, examples)
        verdict = evaluate_gates(
            metrics, spec.gates, baseline_metrics, spec.baseline.max_regression if spec.baseline else 0.0
        )
        verdict, contamination = check_contamination(job, spec, rows, run, verdict)
        results = results_document(job, spec, metrics, baseline_metrics, verdict, examples, answers)
        results["contamination"] = contamination
        output = _write_outputs(job, results, report_markdown(job, results, verdict))
        record(run, job, metrics, baseline_metrics, verdict, output)
    except BaseException:
        run.finish("FAILED")
        raise
    return output


def results_document(
    job: JobFile,
    spec: EvaluationSpec,
    metrics: dict[str, float],
    baseline: dict[str, float] | None,
    verdict: Verdict,
    examples: list[Example],
    answers: list[str],
) -> dict[str, Any]:
    model = job.model
    return {
        "formatVersion": 1,
        "evaluation": job.name,
        "fingerprint": job.fingerprint,
        "model": _describe_model(model),
        "baseline": _describe_model(job.baseline) if job.baseline else None,
        "dataset": {
            "name": job.datasets[0].name,
            "split": spec.dataset.split,
            "digest": job.datasets[0].digest,
            "rows": len(examples),
        },
        "metrics": metrics,
        "baselineMetrics": baseline,
        "verdict": tracking.GATE_PASSED if verdict.passed else tracking.GATE_FAILED,
        "gates": [
            {
                "metric": r.metric,
                "kind": r.kind,
                "value": r.value,
                "bound": r.bound,
                "passed": r.passed,
                "description": r.describe(),
            }
            for r in verdict.results
        ],
        "generation": {
            "maxNewTokens": spec.generation.max_new_tokens,
            "temperature": spec.generation.temperature,
        },
        "samples": [_sample(e, a) for e, a in list(zip(examples, answers, strict=False))[:20]],
    }


def _sample(example: Example, answer: str) -> dict[str, Any]:
    """One scored row as asked (`messages`, what `tuneops apply` prints a curl with), the
    reference and the answer, and whether they match as exact_match counts it."""
    from reconciler.runtime.metrics import normalise_answer

    return {
        "prompt": example.prompt[-1]["content"] if example.prompt else None,
        "messages": example.prompt,
        "reference": example.reference,
        "answer": answer,
        "exactMatch": normalise_answer(answer) == normalise_answer(example.reference),
    }


def _describe_model(ref: ModelVersionRef | BaseModelRef | None) -> dict[str, Any] | None:
    if isinstance(ref, ModelVersionRef):
        return {
            "fineTune": ref.fine_tune,
            "registeredModel": ref.registered_model,
            "version": ref.version,
            "location": ref.location,
        }
    if isinstance(ref, BaseModelRef):
        return {"baseModel": ref.name, "source": ref.source, "revision": ref.revision}
    return None


def report_markdown(job: JobFile, results: dict[str, Any], verdict: Verdict) -> str:
    model = results["model"] or {}
    subject = (
        f"{model.get('registeredModel') or model.get('fineTune')} version {model.get('version')}"
        if "fineTune" in model
        else f"base model {model.get('baseModel')}"
    )
    lines = [
        f"# Evaluation {job.name}: {results['verdict'].upper()}",
        "",
        f"{subject}, scored on split `{results['dataset']['split']}` of `{results['dataset']['name']}` "
        f"({results['dataset']['rows']} rows).",
        "",
        "| Metric | Value | Baseline |",
        "|---|---|---|",
    ]
    baseline = results["baselineMetrics"] or {}
    for name, value in results["metrics"].items():
        lines.append(
            f"| {name} | {value:.4g} | {baseline[name]:.4g} |"
            if name in baseline
            else f"| {name} | {value:.4g} | |"
        )
    lines += ["", "## Gates", ""]
    lines += [f"- {'PASS' if r.passed else 'FAIL'} {r.describe()}" for r in verdict.results] or ["- none"]
    if results["samples"]:
        lines += ["", "## Samples", "", "| Prompt | Reference | Answer |", "|---|---|---|"]
        lines += [
            f"| {_cell(s['prompt'])} | {_cell(s['reference'])} | {_cell(s['answer'])} |"
            for s in results["samples"][:10]
        ]
    return "\n".join(lines) + "\n"


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")[:120]


def _write_outputs(job: JobFile, results: dict[str, Any], report: str) -> Path:
    output = job.output_dir
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (staging / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        (staging / "report.md").write_text(report)
        replace_directory(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def record(
    run: Any,
    job: JobFile,
    metrics: dict[str, float],
    baseline: dict[str, float] | None,
    verdict: Verdict,
    output: Path,
) -> None:
    """Metrics, artifacts and the verdict on the run; the verdict on the model version scored."""
    run.log_metrics(metrics)
    if baseline:
        run.log_metrics({f"baseline_{name}": value for name, value in baseline.items()})
    dataset = job.datasets[0]
    from reconciler.runtime.dataset import read_manifest

    manifest = read_manifest(Path(dataset.location))
    split = EvaluationSpec.model_validate(job.spec).dataset.split
    run.log_dataset(
        dataset.name,
        digest=dataset.digest,
        source=dataset.location,
        context="evaluation",
        rows=manifest.rows.get(split, 0),
        schema_type=dataset.schema_type,
        columns=manifest.columns,
        split_digest=manifest.split_digests.get(split),
    )
    run.log_artifact(output / "results.json")
    run.log_artifact(output / "report.md")
    outcome = tracking.GATE_PASSED if verdict.passed else tracking.GATE_FAILED
    tags = {tracking.gate_tag(job.name): outcome, tracking.TAG_GATE_SUMMARY: verdict.summary()[:5000]}
    model = job.model
    if isinstance(model, ModelVersionRef) and model.registered_model and model.version:
        tags[tracking.TAG_MODEL_VERSION] = f"{model.registered_model}/{model.version}"
        run.set_tags(tags)
        tracking.with_retries(
            lambda: run.client.set_model_version_tag(
                model.registered_model, model.version, tracking.gate_tag(job.name), outcome
            ),
            job.mlflow.tracking_uri,
            "tag the model version",
        )
    else:
        run.set_tags(tags)
    run.finish()
