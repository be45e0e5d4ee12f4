"""Rules on Evaluations: every gate is on a computed metric and can decide, and the data can
score what is asked of it.
"""

from __future__ import annotations

from collections.abc import Iterator

from reconciler.specs.evaluation import GENERATION_METRICS, JUDGE_METRICS, METRIC_RANGES, lower_is_better
from reconciler.specs.problems import Problem
from reconciler.specs.rules.registry import ERROR, WARNING, RuleContext, problem, rule


@rule
def gates_are_computed(ctx: RuleContext) -> Iterator[Problem]:
    for spec, evaluation in ctx.evaluations():
        s = evaluation.spec
        for index, gate in enumerate(s.gates):
            if "/" in gate.metric:  # a named benchmark's (rules/benchmarks.py) or the judge's
                continue
            if gate.metric not in s.metrics:
                yield problem(spec, ERROR, "gate-metric-not-computed",
                              f"gate on {gate.metric}, which this Evaluation does not compute",
                              ("spec", "gates", index, "metric"),
                              hint=f"add {gate.metric} to metrics" if gate.metric in METRIC_RANGES
                              else f"one of: {', '.join(METRIC_RANGES)}")
                continue
            low, high = METRIC_RANGES[gate.metric]
            for bound_name in ("min", "max"):
                bound = getattr(gate, bound_name)
                if bound is not None and not low <= bound <= high:
                    scale = f"between {low:g} and {high:g}" if high != float("inf") else f"{low:g} or more"
                    yield problem(spec, ERROR, "gate-out-of-range",
                                  f"{gate.metric} is reported {scale}, so this gate can never decide "
                                  "as meant", ("spec", "gates", index, bound_name), value=bound)
            if lower_is_better(gate.metric) and gate.min is not None and gate.max is None:
                yield problem(spec, WARNING, "gate-direction",
                              f"{gate.metric} is better when lower; a min gate rejects good models",
                              ("spec", "gates", index, "min"), key=True, hint="did you mean max?")


@rule
def evaluation_data_fits(ctx: RuleContext) -> Iterator[Problem]:
    for spec, evaluation in ctx.evaluations():
        s = evaluation.spec
        dataset = ctx.dataset(s.dataset.name)
        if dataset is None:
            continue
        schema_type = dataset.spec.data_schema.type
        for index, metric in enumerate(s.metrics):
            # prompt rows are scored on their reference answers (rows without one are skipped)
            if metric in GENERATION_METRICS and schema_type not in ("instruction", "chat", "prompt"):
                yield problem(spec, ERROR, "metric-needs-reference",
                              f"{metric} compares generated text with a reference answer, but "
                              f"Dataset '{s.dataset.name}' has schema type {schema_type}",
                              ("spec", "metrics", index),
                              hint="use instruction, chat or prompt data (with references), or only "
                                   "perplexity")
        if dataset.spec.split.ratio(s.dataset.split) == 0:
            yield problem(spec, ERROR, "empty-split",
                          f"Dataset '{s.dataset.name}' puts no rows in its {s.dataset.split} split "
                          f"(split.{s.dataset.split}: 0)", ("spec", "dataset", "split"))
        if s.dataset.split == "train" and evaluation.spec.is_gating:
            yield problem(spec, WARNING, "gate-on-training-data",
                          "gates scored on the training split overstate quality: the model has "
                          "seen these rows", ("spec", "dataset", "split"), hint="use test")
        if s.fail_on_contamination and s.model.base_model:
            yield problem(spec, ERROR, "contamination-of-base-model",
                          "failOnContamination compares the rows with the training data of the "
                          "FineTune scored; tuneops does not know a base model's",
                          ("spec", "failOnContamination"),
                          hint="score a FineTune (model.fineTune), or remove failOnContamination")
        if s.baseline and s.baseline.target == s.model.target:
            yield problem(spec, ERROR, "baseline-is-model",
                          "the baseline is the model under evaluation itself", ("spec", "baseline"),
                          key=True)


@rule
def comparison_gates_have_a_champion(ctx: RuleContext) -> Iterator[Problem]:
    """`notWorseThan: serving` needs a Deployment that requires this Evaluation (what it serves is
    the champion); `notWorseThan: baseline` needs a `baseline`."""
    required_by: dict[str, list[str]] = {}
    for _, deployment in ctx.deployments():
        for name in deployment.spec.requires:
            required_by.setdefault(name, []).append(deployment.metadata.name)
    for spec, evaluation in ctx.evaluations():
        s = evaluation.spec
        for index, gate in enumerate(s.gates):
            if gate.not_worse_than == "serving" and evaluation.metadata.name not in required_by:
                yield problem(spec, ERROR, "no-champion",
                              "notWorseThan: serving compares with what the Deployment that requires "
                              "this Evaluation serves, and no Deployment requires it",
                              ("spec", "gates", index, "notWorseThan"),
                              hint=f"add {evaluation.metadata.name} to a Deployment's requires, or "
                                   "compare with a baseline")
            elif gate.not_worse_than == "baseline" and s.baseline is None:
                yield problem(spec, ERROR, "no-champion",
                              "notWorseThan: baseline needs this Evaluation's baseline",
                              ("spec", "gates", index, "notWorseThan"),
                              hint="add baseline: {fineTune: NAME} or {baseModel: NAME}")


@rule
def judges_can_judge(ctx: RuleContext) -> Iterator[Problem]:
    """A judge on a Deployment needs that Deployment; a pairwise judge needs a champion (the
    version a requiring Deployment serves, or the baseline); any judge needs prompts to ask."""
    required_by = {name for _, deployment in ctx.deployments() for name in deployment.spec.requires}
    deployments = set(ctx.specs.names("Deployment"))
    for spec, evaluation in ctx.evaluations():
        s = evaluation.spec
        for index, gate in enumerate(s.gates):
            if not gate.metric.startswith("judge/"):
                continue
            mode = s.judge.mode if s.judge is not None else None
            logged = JUDGE_METRICS.get(mode or "", ())
            if gate.metric.removeprefix("judge/") not in logged:
                why = (f"the {mode} judge logs judge/{', judge/'.join(logged)}" if mode
                       else "this Evaluation has no judge")
                yield problem(spec, ERROR, "gate-metric-not-computed",
                              f"gate on {gate.metric}, which is never logged: {why}",
                              ("spec", "gates", index, "metric"),
                              hint="add judge: {endpoint, rubric, mode}" if mode is None else None)
        if s.judge is None:
            continue
        endpoint = s.judge.endpoint
        if endpoint.deployment is not None and endpoint.deployment not in deployments:
            yield problem(spec, ERROR, "judge-endpoint-unknown",
                          f"the judge's endpoint names Deployment '{endpoint.deployment}', which "
                          "does not exist", ("spec", "judge", "endpoint", "deployment"),
                          hint=f"one of: {', '.join(sorted(deployments))}" if deployments
                          else "define the Deployment, or give the endpoint a url")
        if (s.judge.mode == "pairwise" and s.baseline is None
                and evaluation.metadata.name not in required_by):
            yield problem(spec, ERROR, "judge-needs-champion",
                          "a pairwise judge compares with the version serving (no Deployment "
                          "requires this Evaluation) or with the baseline (none is set)",
                          ("spec", "judge", "mode"),
                          hint="add a baseline, require this Evaluation in a Deployment, or use "
                               "mode: score")
        dataset = ctx.dataset(s.dataset.name)
        if dataset is not None and dataset.spec.data_schema.type not in ("instruction", "chat"):
            yield problem(spec, ERROR, "judge-needs-prompts",
                          f"the judge grades answers to prompts, and Dataset '{s.dataset.name}' has "
                          f"schema type {dataset.spec.data_schema.type}", ("spec", "judge"), key=True,
                          hint="use instruction or chat data")
