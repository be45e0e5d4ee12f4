"""An Evaluation's LLM judge: its verdicts on the answers become `judge/<metric>` metrics, gateable
like any other, with a confidence interval from the same bootstrap as the paired comparisons.

`score`: each answer graded 1-10 against the rubric; `judge/score` is the mean over the replies
that could be read (the others are left out and counted in `judge/unparsed`). `pairwise`: each
answer compared with the champion's on the same row, twice, the candidate first as A and then
as B, to cancel the judge's order bias: a win in both orders is a win (1), a loss in both a loss
(0), anything else a tie (0.5), and an unreadable reply counts as a tie in its order;
`judge/win_rate` is the mean. The champion is the version the requiring Deployment serves, else
the baseline; with neither (a first deployment) the judge is skipped and its gates pass, saying
so (`judge/skipped`), as comparison gates do while nothing serves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler.jobs.jobfile import JobFile
from reconciler.plan.gates import JUDGE_SKIPPED, NO_CHAMPION_TO_JUDGE
from reconciler.runtime.judge_client import JudgeClient, JudgeError
from reconciler.runtime.judge_replies import (
    PAIRWISE_MAX_TOKENS,
    SCORE_MAX_TOKENS,
    Preference,
    pairwise_messages,
    parse_preference,
    parse_score,
    score_messages,
)
from reconciler.specs.evaluation import EvaluationSpec, Judge

CONCURRENT_REQUESTS = 4  # a hosted API answers several at once; the project's server queues them
CONFIDENCE = 0.95
UNPARSED_SAMPLES = 5  # unreadable replies quoted in results.json
_OUTCOME = {"win": 1.0, "loss": 0.0, "tie": 0.5}


class Example(Protocol):
    """A row as evaluate.Example has it (not imported: evaluate calls this module)."""

    @property
    def prompt(self) -> list[dict[str, str]] | None: ...

    @property
    def reference(self) -> str: ...


@dataclass(frozen=True)
class Judged:
    """The judge's metrics (run metrics and gate inputs), its section of results.json, and each
    row's verdict for predictions.jsonl (empty when skipped)."""

    metrics: dict[str, float]
    document: dict[str, Any] | None
    rows: list[dict[str, Any]] = field(default_factory=list)

    def annotate(self, results: dict[str, Any], predictions: list[dict[str, Any]]) -> None:
        """Its section of results.json (`judge`) and each row's verdict in predictions.jsonl."""
        if self.document is not None:
            results["judge"] = self.document
        for row, verdict in zip(predictions, self.rows, strict=False):
            row["judge"] = verdict
        for sample in (self.document or {}).get("unparsedSamples", []):
            if sample.get("row", len(predictions)) < len(predictions):
                sample["id"] = predictions[sample["row"]]["id"]  # the row's id in predictions.jsonl


def judge_scored(job: JobFile, spec: EvaluationSpec, examples: Sequence[Example], scored: Any,
                 champions: Mapping[str, Any]) -> Judged:
    """The judge on `scored`'s answers (evaluate.Scored), nothing without one; `champions` maps
    "serving" and "baseline" to their Scored on the same rows, or None."""
    if spec.judge is None:
        return Judged({}, None)
    theirs = {name: (champion.answers if champion is not None else None)
              for name, champion in champions.items()}
    return judge_answers(job, spec, examples, scored.answers, theirs)


def client_for(job: JobFile, judge: Judge) -> JudgeClient:
    """The endpoint as the job file names it; the key from the variable the spec names."""
    endpoint = judge.endpoint
    if endpoint.deployment is not None:
        if not job.judge_url:
            raise JudgeError(f"the judge is Deployment/{endpoint.deployment}, and the job file "
                                  "names no URL for it (it was built without a serving server)")
        return JudgeClient(job.judge_url)
    key = None
    if endpoint.api_key_secret:
        key = os.environ.get(endpoint.api_key_secret)
        if not key:
            raise JudgeError(f"the judge's API key is missing: environment variable "
                                  f"{endpoint.api_key_secret} (judge.endpoint.apiKeySecret) is not "
                                  "set in the job's environment")
    return JudgeClient(endpoint.url or "", key)


def judge_answers(job: JobFile, spec: EvaluationSpec, examples: Sequence[Example], answers: Sequence[str],
                  champions: Mapping[str, Sequence[str] | None], client: JudgeClient | None = None,
                  ) -> Judged:
    """The judge's verdicts on `answers`; `champions` maps "serving" and "baseline" to the
    champion's answers on the same rows (None: not scored)."""
    judge = spec.judge
    assert judge is not None
    if judge.mode == "pairwise":
        which = next((name for name in ("serving", "baseline") if champions.get(name)), None)
        if which is None:
            return Judged({JUDGE_SKIPPED: 1.0}, {"mode": "pairwise", "skipped": NO_CHAMPION_TO_JUDGE})
    client = client or client_for(job, judge)
    model = judge.model or client.first_model()
    if judge.mode == "pairwise":
        judged = _pairwise(client, model, judge.rubric, examples, answers, champions[which] or [])
        judged.document["champion"] = which
        if which == "serving" and job.champion_source:
            judged.document["championSource"] = job.champion_source
    else:
        judged = _scores(client, model, judge.rubric, examples, answers)
    assert judged.document is not None
    judged.document.update(endpoint=client.shown_url, model=model, retries=client.retries_made)
    return judged


def _ask_all(client: JudgeClient, model: str, questions: list[list[dict[str, str]]],
             max_tokens: int) -> list[str]:
    with ThreadPoolExecutor(max_workers=CONCURRENT_REQUESTS) as pool:
        return list(pool.map(lambda messages: client.complete(model, messages, max_tokens), questions))


def _candidate_outcome(verdict: Preference | None, candidate_is: str) -> str:
    if verdict is None or verdict == "tie":
        return "tie"
    return "win" if verdict == candidate_is else "loss"


def _pairwise(client: JudgeClient, model: str, rubric: str, examples: Sequence[Example],
              answers: Sequence[str], theirs: Sequence[str]) -> Judged:
    questions = []
    for example, mine, champion in zip(examples, answers, theirs, strict=True):
        questions.append(pairwise_messages(rubric, example.prompt, example.reference, mine, champion))
        questions.append(pairwise_messages(rubric, example.prompt, example.reference, champion, mine))
    replies = _ask_all(client, model, questions, PAIRWISE_MAX_TOKENS)
    values, rows, unparsed = [], [], []
    for index in range(len(examples)):
        first, second = replies[2 * index], replies[2 * index + 1]
        verdicts = (parse_preference(first), parse_preference(second))
        for reply, verdict in zip((first, second), verdicts, strict=True):
            if verdict is None:
                unparsed.append({"row": index, "reply": reply[:300]})
        orders = (_candidate_outcome(verdicts[0], "A"), _candidate_outcome(verdicts[1], "B"))
        outcome = orders[0] if orders[0] == orders[1] and orders[0] != "tie" else "tie"
        values.append(_OUTCOME[outcome])
        rows.append({"outcome": outcome, "candidateFirst": verdicts[0], "candidateSecond": verdicts[1]})
    win_rate, low, high = _mean_interval(values)
    counts = {name: sum(1 for row in rows if row["outcome"] == name) for name in ("win", "loss", "tie")}
    metrics = {"judge/win_rate": win_rate, "judge/win_rate_low": low, "judge/win_rate_high": high,
               "judge/wins": float(counts["win"]), "judge/losses": float(counts["loss"]),
               "judge/ties": float(counts["tie"]), "judge/unparsed": float(len(unparsed)),
               "judge/rows": float(len(values))}
    document = {"mode": "pairwise", "rows": len(values), "winRate": win_rate, "low": low, "high": high,
                "confidence": CONFIDENCE, "wins": counts["win"], "losses": counts["loss"],
                "ties": counts["tie"], "unparsed": len(unparsed),
                "unparsedSamples": unparsed[:UNPARSED_SAMPLES],
                "note": "each row judged twice, the candidate first as A then as B; a win needs both "
                        "orders, an unreadable reply counts as a tie"}
    return Judged(metrics, document, rows)


def _scores(client: JudgeClient, model: str, rubric: str, examples: Sequence[Example],
            answers: Sequence[str]) -> Judged:
    questions = [score_messages(rubric, example.prompt, example.reference, answer)
                 for example, answer in zip(examples, answers, strict=True)]
    replies = _ask_all(client, model, questions, SCORE_MAX_TOKENS)
    grades, rows, unparsed = [], [], []
    for index, reply in enumerate(replies):
        grade = parse_score(reply)
        rows.append({"score": grade})
        if grade is None:
            unparsed.append({"row": index, "reply": reply[:300]})
        else:
            grades.append(grade)
    metrics = {"judge/unparsed": float(len(unparsed)), "judge/rows": float(len(grades))}
    document: dict[str, Any] = {"mode": "score", "rows": len(grades), "unparsed": len(unparsed),
                                "unparsedSamples": unparsed[:UNPARSED_SAMPLES],
                                "note": "unreadable replies are left out of the mean and counted"}
    if grades:  # none read: judge/score stays missing, and a gate on it fails as not computed
        score, low, high = _mean_interval(grades)
        metrics.update({"judge/score": score, "judge/score_low": low, "judge/score_high": high})
        document.update(score=score, low=low, high=high, confidence=CONFIDENCE)
    return Judged(metrics, document, rows)


def _mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """The mean and its percentile bootstrap interval: the paired bootstrap against a champion
    that scores 0 on every row, whose difference is the mean itself."""
    import numpy as np

    from reconciler.runtime.paired import RowScores, mean_of_rows, paired_bootstrap

    column = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    compared = paired_bootstrap(RowScores("judge", column, mean_of_rows),
                                RowScores("zero", np.zeros_like(column), mean_of_rows),
                                confidence=CONFIDENCE)
    return compared.candidate, compared.low, compared.high
