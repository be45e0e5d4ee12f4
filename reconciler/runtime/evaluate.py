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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import PermanentError
from reconciler.fileio import replace_directory
from reconciler.jobs.jobfile import BaseModelRef, JobFile, ModelVersionRef, TaskFileRef
from reconciler.plan.gates import (
    NOTHING_SERVES,
    PairedResult,
    Verdict,
    comparison_metrics,
    evaluate_gates,
)
from reconciler.runtime.chat_templates import END_OF_TURN_TOKENS
from reconciler.runtime.contamination import check_contamination
from reconciler.runtime.paired import RowScores
from reconciler.specs.evaluation import BINARY_METRICS, GENERATION_METRICS, EvaluationSpec
from reconciler.tracking import vocabulary as tracking

PREDICTIONS_FILE = "predictions.jsonl"  # each row: id, prompt, reference, prediction, scores
PREDICTIONS_TABLE = "predictions_table.json"  # the same as an MLflow table


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
    rows = perplexity_rows(model, tokenizer, examples, max_length)
    total_nll, total_tokens = sum(nll for nll, _ in rows), sum(tokens for _, tokens in rows)
    if total_tokens == 0:
        raise EvaluationError("no tokens to score for perplexity")
    return math.exp(total_nll / total_tokens)


def perplexity_rows(model: Any, tokenizer: Any, examples: list[Example],
                    max_length: int = 2048) -> list[tuple[float, int]]:
    """Each row's summed NLL over its answer tokens and their count ((0, 0) for a row too short
    to score): perplexity is exp(sum NLL / sum tokens), weighted by tokens."""
    import torch

    rows: list[tuple[float, int]] = []
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
            rows.append((0.0, 0))
            continue
        inputs = torch.tensor([ids], device=model.device)
        labels = inputs.clone()
        labels[0, : max(context, 1)] = -100  # the first token has no prediction either way
        with torch.inference_mode():
            loss = model(input_ids=inputs, labels=labels).loss
        scored = int((labels[0, 1:] != -100).sum())
        rows.append((float(loss) * scored if scored else 0.0, scored))
    return rows


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


@dataclass(frozen=True)
class Scored:
    """One model's metrics on the rows, each metric per row too, and its answers (empty without
    text metrics). Named benchmarks score their own documents: their per-document scores are kept
    apart (`task_rows`, by `task/<task>/<metric>`), for comparison gates on them."""

    metrics: dict[str, float]
    rows: dict[str, RowScores]
    answers: list[str]
    task_rows: dict[str, RowScores] = field(default_factory=dict)


def score(ref: ModelVersionRef | BaseModelRef, spec: EvaluationSpec, examples: list[Example],
          task_files: tuple[TaskFileRef, ...] = ()) -> Scored:
    """The requested metrics of one model, per row and over the rows; named benchmarks
    (`spec.tasks`, where `task_files` says their YAMLs are) add theirs."""
    import torch

    from reconciler.runtime.loading import load_model, load_model_tokenizer
    from reconciler.runtime.row_scores import perplexity_row_scores, text_row_scores

    torch.manual_seed(0)
    model = load_model(ref)
    if torch.cuda.is_available():  # the Job asked for the Evaluation's spec.resources.gpus
        model = model.to("cuda")
    model.eval()
    tokenizer = load_model_tokenizer(ref)
    rows: dict[str, RowScores] = {}
    if "perplexity" in spec.metrics:
        per_row = perplexity_rows(model, tokenizer, examples)
        if not any(tokens for _, tokens in per_row):
            raise EvaluationError("no tokens to score for perplexity")
        rows["perplexity"] = perplexity_row_scores(per_row)
    answers: list[str] = []
    wanted = [name for name in spec.metrics if name in GENERATION_METRICS]
    if spec.scores_generated_text:  # text metrics, or a judge reading the answers
        answers = generate(
            model, tokenizer, examples, spec.generation.max_new_tokens, spec.generation.temperature
        )
        references = [e.reference for e in examples]
        rows.update({name: text_row_scores(name, answers, references) for name in wanted})
    metrics = {name: rows[name].value for name in spec.metrics if name in rows}
    if not spec.tasks:
        return Scored(metrics, rows, answers)
    from reconciler.runtime.benchmark_tasks import run_tasks  # lm-evaluation-harness

    benchmarks = run_tasks(model, tokenizer, spec.tasks, task_files)
    return Scored({**metrics, **benchmarks.metrics}, rows, answers, benchmarks.row_scores())


def compare_with_champions(spec: EvaluationSpec, scored: Scored, champions: dict[str, Scored | None],
                           ) -> dict[tuple[str, str], tuple[PairedResult | None, str]]:
    """Each comparison gate's paired interval, by (champion, metric): `champions` maps "serving"
    and "baseline" to the champion scored on the same rows (None: nothing to compare with)."""
    from reconciler.runtime.paired import mcnemar_exact, paired_bootstrap

    found: dict[tuple[str, str], tuple[PairedResult | None, str]] = {}
    for gate in spec.gates:
        key = (gate.not_worse_than or "", gate.metric)
        if not gate.compares or key in found:
            continue
        champion = champions.get(key[0])
        if champion is None:
            found[key] = (None, NOTHING_SERVES if key[0] == "serving" else "no baseline was scored")
            continue
        mine = scored.rows.get(gate.metric) or scored.task_rows.get(gate.metric)
        theirs = champion.rows.get(gate.metric) or champion.task_rows.get(gate.metric)
        if mine is None or theirs is None:
            found[key] = (None, "")  # not computed per row: fails as not computed
            continue
        compared = paired_bootstrap(mine, theirs, confidence=gate.confidence)
        p_value = None
        if gate.metric in BINARY_METRICS:
            p_value = mcnemar_exact(mine.stats[:, 0], theirs.stats[:, 0])
        found[key] = (PairedResult(compared.rows, compared.candidate, compared.champion, compared.low,
                                   compared.high, compared.confidence, p_value, compared.difference_sd), "")
    return found


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
        why = {"prompt": " (prompt rows are scored on their reference answers, and none has one)",
               "binary-feedback": " (binary-feedback rows are scored on their good completions, and none "
                                  "is labelled true)"}.get(dataset.schema_type, "")
        raise EvaluationError(
            f"split '{spec.dataset.split}' of dataset '{dataset.name}' has no rows to score{why}"
        )

    from reconciler.runtime.lineage import open_run

    run = open_run(job)
    try:
        tasks = job.task_files or ()  # named benchmarks' YAMLs, where this job reads them
        scored = score(job.model, spec, examples, tasks)
        baseline = score(job.baseline, spec, examples, tasks) if job.baseline is not None else None
        serving = None
        if job.champion is not None and (spec.judges_pairwise
                                         or any(g.not_worse_than == "serving" for g in spec.gates)):
            serving = score(job.champion, spec, examples, tasks)  # on the same rows, with the same code
        compared = compare_with_champions(spec, scored, {"serving": serving, "baseline": baseline})
        from reconciler.runtime.judge import judge_scored

        judged = judge_scored(job, spec, examples, scored, {"serving": serving, "baseline": baseline})
        metrics = {**scored.metrics, **judged.metrics}
        verdict = evaluate_gates(
            metrics, spec.gates, baseline.metrics if baseline else None,
            spec.baseline.max_regression if spec.baseline else 0.0, compared,
        )
        verdict, contamination = check_contamination(job, spec, rows, run, verdict)
        results = results_document(job, spec, metrics, baseline.metrics if baseline else None,
                                   verdict, examples, scored.answers)
        results["comparisons"] = _comparisons_document(job, compared, serving is not None)
        results["contamination"] = contamination
        predictions = prediction_rows(examples, scored, serving or baseline)
        judged.annotate(results, predictions)
        output = _write_outputs(job, results, report_markdown(job, results, verdict), predictions)
        comparison = {name: value for (champion, metric), (paired, _) in compared.items()
                      for name, value in comparison_metrics(champion, metric, paired).items()}
        record(run, job, {**metrics, **comparison}, baseline.metrics if baseline else None,
               verdict, output)
    except BaseException:
        run.finish("FAILED")
        raise
    return output


def row_id(example: Example) -> str:
    """A stable id of a row: the hash of what is asked and the reference answer, so the same row
    is the same id in every evaluation of every model."""
    import hashlib

    content = json.dumps([example.prompt, example.reference], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]


def prediction_rows(examples: list[Example], scored: Scored, champion: Scored | None) -> list[dict[str, Any]]:
    """predictions.jsonl: each row's id, prompt, reference, prediction and per-row scores, and the
    champion's beside them when one was scored on the same rows."""
    per_row = {name: rows.per_row() for name, rows in scored.rows.items()}
    theirs = {name: rows.per_row() for name, rows in champion.rows.items()} if champion else {}
    out = []
    for index, example in enumerate(examples):
        row: dict[str, Any] = {
            "id": row_id(example),
            "prompt": example.prompt,
            "reference": example.reference,
            "prediction": scored.answers[index] if scored.answers else None,
            "scores": {name: values[index] for name, values in per_row.items()},
        }
        if "perplexity" in scored.rows:
            nll, tokens = scored.rows["perplexity"].stats[index]
            row["nll"], row["tokens"] = float(nll), int(tokens)
        if champion is not None:
            row["champion"] = {"prediction": champion.answers[index] if champion.answers else None,
                               "scores": {name: values[index] for name, values in theirs.items()}}
        out.append(row)
    return out


def _comparisons_document(job: JobFile, compared: dict[tuple[str, str], tuple[PairedResult | None, str]],
                          served: bool) -> list[dict[str, Any]]:
    found = []
    for (champion, metric), (paired, skipped) in compared.items():
        entry: dict[str, Any] = {"champion": champion, "metric": metric}
        if champion == "serving" and served and job.champion is not None:
            entry["championModel"] = _describe_model(job.champion)
            entry["championSource"] = job.champion_source
        elif champion == "baseline":
            entry["championModel"] = _describe_model(job.baseline)
        if paired is None:
            entry["skipped"] = skipped or "not computed per row"
        else:
            entry.update(rows=paired.rows, candidate=paired.candidate, championValue=paired.champion,
                         difference=paired.difference, low=paired.low, high=paired.high,
                         confidence=paired.confidence, pValue=paired.p_value)
        found.append(entry)
    return found


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


def _log_predictions_table(run: Any, path: Path) -> None:
    """The per-row results as an MLflow table (the run's Evaluation tab can browse it): id, prompt,
    reference, prediction and each score, with the champion's prediction and scores beside them."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if not rows:
        return
    table: dict[str, list[Any]] = {"id": [], "prompt": [], "reference": [], "prediction": []}
    for row in rows:
        prompt = row["prompt"][-1]["content"] if row["prompt"] else None
        for key, value in (("id", row["id"]), ("prompt", prompt), ("reference", row["reference"]),
                           ("prediction", row["prediction"])):
            table[key].append(value)
        for name, value in row["scores"].items():
            table.setdefault(name, []).append(value)
        if "champion" in row:
            table.setdefault("champion_prediction", []).append(row["champion"]["prediction"])
            for name, value in row["champion"]["scores"].items():
                table.setdefault(f"champion_{name}", []).append(value)
    run._retry("log the predictions table",
               lambda: run.client.log_table(run.run_id, data=table, artifact_file=PREDICTIONS_TABLE))


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")[:120]


def _write_outputs(job: JobFile, results: dict[str, Any], report: str,
                   predictions: list[dict[str, Any]]) -> Path:
    output = job.output_dir
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (staging / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        (staging / "report.md").write_text(report)
        with (staging / PREDICTIONS_FILE).open("w", encoding="utf-8") as handle:
            for row in predictions:
                handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
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
    run.log_artifact(output / PREDICTIONS_FILE)
    _log_predictions_table(run, output / PREDICTIONS_FILE)
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
