"""Text metrics that compare generated answers with reference answers.

Every metric returns a fraction in [0, 1] (BLEU too: sacrebleu's 0-100 divided by 100), so that
gates read the same whatever the metric. sacrebleu and rouge_score are imported inside the functions
that need them, so importing this module costs nothing. Perplexity is not here: it needs the model's
log-likelihoods, not generated text.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable

from reconciler.specs.evaluation import METRICS

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def _is_punctuation(char: str) -> bool:
    # ASCII punctuation as in the SQuAD script (it includes symbols such as $ and +), plus Unicode
    # punctuation, so that curly quotes and dashes from a model's output do not break a match.
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def _strip_punctuation(text: str) -> str:
    return "".join(char for char in text if not _is_punctuation(char))


def _collapse(text: str) -> str:
    return " ".join(text.split())


def normalise_answer(text: str) -> str:
    """SQuAD-style normalisation, so that "The Eiffel Tower." and "eiffel tower" count as the same answer.

    Casefolds, deletes punctuation (as the SQuAD script does, so "U.S." is "us" and scores stay
    comparable with published ones), removes the articles a/an/the, and collapses whitespace.
    """
    text = _strip_punctuation(text.casefold())
    return _collapse(_ARTICLES.sub(" ", text))


def _label_words(text: str) -> list[str]:
    # Like normalise_answer but keeping articles: in multiple-choice answers "A" is a label, not an article.
    return _strip_punctuation(text.casefold()).split()


def _check_pairs(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def _average(per_pair: Callable[[str, str], float], predictions: list[str], references: list[str]) -> float:
    _check_pairs(predictions, references)
    return sum(per_pair(p, r) for p, r in zip(predictions, references, strict=True)) / len(predictions)


def exact_match(predictions: list[str], references: list[str]) -> float:
    """The fraction of predictions equal to their reference after `normalise_answer`."""
    return _average(lambda p, r: float(normalise_answer(p) == normalise_answer(r)), predictions, references)


def _first_answer_is(prediction: str, reference: str) -> bool:
    wanted = _label_words(reference)
    first_line = next((line for line in prediction.splitlines() if line.strip()), "")
    given = _label_words(first_line)
    if not wanted:
        return not given
    return given[: len(wanted)] == wanted


def accuracy(predictions: list[str], references: list[str]) -> float:
    """The fraction of predictions whose first answer is the reference: for classification and choices.

    Models asked for a label often explain it ("Positive. The review praises..." or "B) because ..."),
    which exact_match scores as wrong. Here a prediction is correct when the words of its first non-empty
    line begin with the words of the reference, both casefolded with punctuation removed. Matching is by
    whole words ("yes" does not match "yesterday") and only on the first line (a model that lists every
    option on later lines gets no credit for them). Articles are kept, unlike in exact_match, because "A"
    is a choice label. A reference that is empty after this normalisation matches only an empty answer.
    """
    return _average(lambda p, r: float(_first_answer_is(p, r)), predictions, references)


def _f1(prediction: str, reference: str) -> float:
    predicted = normalise_answer(prediction).split()
    wanted = normalise_answer(reference).split()
    if not predicted or not wanted:
        # As in the SQuAD script: two empty answers agree; an empty answer against a real one scores 0.
        return float(predicted == wanted)
    common = sum((Counter(predicted) & Counter(wanted)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def token_f1(predictions: list[str], references: list[str]) -> float:
    """SQuAD token-overlap F1 per pair, averaged: partial credit for answers with extra or missing words.

    Tokens are the words of `normalise_answer`, counted as a multiset (a word repeated in the prediction
    matches only as many times as it occurs in the reference).
    """
    return _average(_f1, predictions, references)


def bleu(predictions: list[str], references: list[str]) -> float:
    """sacrebleu corpus BLEU (13a tokens, case-sensitive, one reference each) divided by 100.

    Uses sacrebleu's `effective_order`: n-gram orders that no prediction is long enough to contain
    are left out instead of making the score 0, so a corpus of answers shorter than four words still
    scores (an exact copy scores 1). On any corpus with four-word predictions this is standard BLEU.
    """
    _check_pairs(predictions, references)
    from sacrebleu.metrics import BLEU

    score = BLEU(effective_order=True).corpus_score(predictions, [references]).score
    return min(1.0, max(0.0, score / 100.0))


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """rouge_score's sentence-level ROUGE-L F-measure (longest common subsequence), averaged over pairs.

    Porter stemming is on, so "cats running" matches "cat runs". rouge_score's tokenizer keeps only
    ASCII letters and digits: text in other scripts scores 0.
    """
    _check_pairs(predictions, references)
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _average(lambda p, r: scorer.score(r, p)["rougeL"].fmeasure, predictions, references)


TEXT_METRICS: dict[str, Callable[[list[str], list[str]], float]] = {
    "exact_match": exact_match,
    "accuracy": accuracy,
    "f1": token_f1,
    "bleu": bleu,
    "rougeL": rouge_l,
}


def compute_text_metrics(names: Iterable[str], predictions: list[str],
                         references: list[str]) -> dict[str, float]:
    """The text metrics among `names`, by name; others the spec allows (perplexity) are left to the caller.

    Raises ValueError for a name that is no metric at all, so a typo is not silently skipped.
    """
    wanted = list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s): {', '.join(unknown)}; known: {', '.join(METRICS)}")
    text = [name for name in wanted if name in TEXT_METRICS]
    if not text:
        return {}
    _check_pairs(predictions, references)
    return {name: TEXT_METRICS[name](predictions, references) for name in text}
