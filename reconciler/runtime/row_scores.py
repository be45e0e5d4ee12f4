"""Each metric per row, as the paired comparison resamples it (reconciler.runtime.paired).

Per-row scores (exact match, accuracy, F1, ROUGE-L) are one column whose mean is the metric, the
same functions `metrics.py` averages. Perplexity keeps each row's summed negative log-likelihood
and token count (the corpus value is exp(sum NLL / sum tokens), token-weighted, not a mean of
per-row perplexities). BLEU keeps each row's n-gram match counts and lengths, sacrebleu's own
segment statistics, so that a resample is scored with the corpus formula (Koehn 2004).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from reconciler.runtime import metrics as text_metrics
from reconciler.runtime.paired import RowScores, mean_of_rows

if TYPE_CHECKING:
    import numpy as np


def _per_row(metric: str, prediction: str, reference: str, rouge: object = None) -> float:
    if metric == "exact_match":
        return float(text_metrics.normalise_answer(prediction) == text_metrics.normalise_answer(reference))
    if metric == "accuracy":
        return float(text_metrics._first_answer_is(prediction, reference))
    if metric == "f1":
        return text_metrics._f1(prediction, reference)
    if metric == "rougeL":
        return rouge.score(reference, prediction)["rougeL"].fmeasure  # type: ignore[attr-defined]
    raise ValueError(f"{metric} is not a per-row text metric")


def text_row_scores(metric: str, predictions: Sequence[str], references: Sequence[str]) -> RowScores:
    """One text metric per row; its `value` equals what metrics.compute_text_metrics reports."""
    import numpy as np

    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if metric == "bleu":
        return _bleu_rows(list(predictions), list(references))
    rouge = None
    if metric == "rougeL":
        from rouge_score import rouge_scorer

        rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    column = np.array([[_per_row(metric, p, r, rouge)] for p, r in zip(predictions, references, strict=True)],
                      dtype=np.float64)
    return RowScores(metric, column, mean_of_rows)


def _bleu_rows(predictions: list[str], references: list[str]) -> RowScores:
    import numpy as np
    from sacrebleu.metrics import BLEU

    scorer = BLEU(effective_order=True)
    stats = np.array(scorer._extract_corpus_statistics(predictions, [references]), dtype=np.float64)

    def corpus_bleu(sums: np.ndarray, rows: int) -> np.ndarray:
        flat = np.atleast_2d(sums)
        scores = [min(1.0, max(0.0, scorer._compute_score_from_stats(list(row)).score / 100.0))
                  for row in flat]
        return np.asarray(scores if sums.ndim > 1 else scores[0])

    return RowScores("bleu", stats, corpus_bleu)


def perplexity_row_scores(nll_and_tokens: Sequence[tuple[float, int]]) -> RowScores:
    """Perplexity from each row's summed NLL over its scored tokens, and their count."""
    import numpy as np

    stats = np.array(nll_and_tokens, dtype=np.float64).reshape(-1, 2)

    def corpus_perplexity(sums: np.ndarray, rows: int) -> np.ndarray:
        tokens = np.maximum(sums[..., 1], 1.0)  # a row with no scored token adds nothing
        return np.exp(sums[..., 0] / tokens)

    return RowScores("perplexity", stats, corpus_perplexity)
