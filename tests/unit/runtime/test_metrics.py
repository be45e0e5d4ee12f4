"""Text metrics against values worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from reconciler.runtime.metrics import (
    TEXT_METRICS,
    accuracy,
    bleu,
    compute_text_metrics,
    exact_match,
    normalise_answer,
    rouge_l,
    token_f1,
)
from reconciler.specs.evaluation import GENERATION_METRICS
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(("text", "expected"), [
    ("  The  Eiffel Tower! ", "eiffel tower"),
    ("An apple, a day", "apple day"),
    ("U.S.A.", "usa"),                                # punctuation is deleted, as in the SQuAD script
    ("\u201cQuoted\u201d \u2014 text", "quoted text"),  # Unicode quotes and dashes are punctuation too
    ("Theatre", "theatre"),                           # articles only as whole words
    ("STRASSE", "strasse"),
    ("Straße", "strasse"),                            # casefold, not lower
    ("the", ""),
])
def test_normalise_answer(text: str, expected: str):
    assert normalise_answer(text) == expected


def test_exact_match_ignores_case_punctuation_and_articles():
    predictions = ["The Cat.", "a dog", "cats", "Theatre"]
    references = ["cat", "the dog!", "cat", "the atre"]
    # equal, equal, "cats" != "cat", "theatre" != "atre": 2 of 4
    assert exact_match(predictions, references) == 0.5


def test_accuracy_reads_the_first_answer():
    predictions = [
        "Positive. The review praises the food.",  # first words "positive ..." begin with "positive": right
        "B) because the others are wrong",          # "b because ..." begins with "b": right
        "Yesterday",                                # "yes" is not the word "yesterday": wrong
        "\n\nA\nB\nC",                              # first non-empty line is "A": right
        "I think it is positive",                   # the answer is not first: wrong
        "Negative\npositive",                       # only the first line counts: wrong
        "New York City, of course",                 # multi-word reference, word prefix: right
        "the answer",                               # articles are kept: "the" != "answer": wrong
    ]
    references = ["positive", "B", "yes", "A", "positive", "positive", "New York", "answer"]
    assert accuracy(predictions, references) == 4 / 8


def test_accuracy_differs_from_exact_match():
    assert exact_match(["Positive. Great food."], ["positive"]) == 0.0
    assert accuracy(["Positive. Great food."], ["positive"]) == 1.0
    # "A" is an article to exact_match ("" == "" for any pair of articles) but a label to accuracy.
    assert exact_match(["A"], ["the"]) == 1.0
    assert accuracy(["A"], ["the"]) == 0.0


def test_accuracy_with_an_empty_reference_needs_an_empty_answer():
    assert accuracy(["", "x"], [".", "."]) == 0.5


def test_token_f1_squad_example():
    # "eiffel tower in paris" vs "eiffel tower": 2 common, P = 2/4, R = 2/2, F1 = 2/3
    # "paris" vs "paris france": 1 common, P = 1/1, R = 1/2, F1 = 2/3
    # "london" vs "paris": no common tokens, F1 = 0
    predictions = ["the Eiffel Tower in Paris", "Paris", "London"]
    references = ["Eiffel Tower", "Paris, France", "Paris"]
    assert token_f1(predictions, references) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_token_f1_counts_repeated_tokens_once_each():
    # {x: 2, y: 1} & {x: 1, y: 2} = {x: 1, y: 1}: 2 common of 3 each side, F1 = 2/3
    assert token_f1(["x x y"], ["x y y"]) == pytest.approx(2 / 3)


def test_token_f1_empty_answers():
    assert token_f1(["The"], ["a"]) == 1.0     # both empty after normalisation: they agree
    assert token_f1(["the"], ["Paris"]) == 0.0


def test_bleu_identical_and_disjoint():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == 1.0
    assert bleu(["x y z w"], ["a b c d"]) == 0.0


def test_bleu_partial_match():
    # pred "the cat sat on the mat", ref "the cat sat on a mat"
    # 1-grams 5/6 ("the" clipped to 1), 2-grams 3/5, 3-grams 2/4, 4-grams 1/3; equal lengths, BP = 1
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(expected)


def test_bleu_is_corpus_level_not_a_mean():
    # n-gram counts are summed over the corpus: (5+4)/(6+4), (3+3)/(5+3), (2+2)/(4+2), (1+1)/(3+1)
    expected = (9 / 10 * 6 / 8 * 4 / 6 * 2 / 4) ** 0.25
    score = bleu(["the cat sat on the mat", "a b c d"], ["the cat sat on a mat", "a b c d"])
    assert score == pytest.approx(expected)
    assert score != pytest.approx(((1 / 12) ** 0.25 + 1) / 2)


def test_bleu_short_answers_still_score():
    # No prediction has 2-grams, so only 1-grams count: precision 1/1, BP = exp(1 - 2/1)
    assert bleu(["Paris"], ["Paris France"]) == pytest.approx(math.exp(-1))
    assert bleu(["hello world"], ["hello world"]) == 1.0


def test_rouge_l_lcs():
    # pred "the cat on mat" vs ref "the cat sat on the mat": LCS "the cat on mat" = 4
    # P = 4/4, R = 4/6, F = 2 * 1 * (2/3) / (1 + 2/3) = 0.8
    assert rouge_l(["the cat on mat"], ["the cat sat on the mat"]) == pytest.approx(0.8)
    # pred "the gunman kill police" vs ref "police kill the gunman": LCS "the gunman" = 2, P = R = F = 1/2
    assert rouge_l(["the gunman kill police"], ["police kill the gunman"]) == pytest.approx(0.5)


def test_rouge_l_stems_and_averages():
    # stemmed, "cats running" and "cat runs" are both "cat run": F = 1; "dog" vs "cat": F = 0
    assert rouge_l(["cats running", "dog"], ["cat runs", "cat"]) == pytest.approx(0.5)


@pytest.mark.parametrize("name", sorted(TEXT_METRICS))
def test_metrics_refuse_mismatched_or_empty_lists(name: str):
    metric = TEXT_METRICS[name]
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        metric(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        metric([], [])


@pytest.mark.parametrize("name", sorted(TEXT_METRICS))
def test_metrics_are_fractions(name: str):
    perfect = ["the cat sat on the mat", "positive"]
    assert TEXT_METRICS[name](perfect, perfect) == 1.0
    assert TEXT_METRICS[name](["dog barked loudly today", "negative"], perfect) == 0.0


def test_text_metrics_are_the_spec_generation_metrics():
    assert set(TEXT_METRICS) == set(GENERATION_METRICS)


def test_compute_text_metrics_skips_perplexity():
    found = compute_text_metrics(["perplexity", "exact_match", "f1"], ["Paris", "London"],
                                 ["Paris, France", "London"])
    # exact: "paris" != "paris france", "london" == "london": 1/2; F1: 2/3 and 1, mean 5/6
    assert found == {"exact_match": 0.5, "f1": pytest.approx(5 / 6)}


def test_compute_text_metrics_perplexity_only_needs_no_text():
    assert compute_text_metrics(["perplexity"], [], []) == {}


def test_compute_text_metrics_refuses_unknown_names_and_bad_lists():
    with pytest.raises(ValueError, match="unknown metric.*rouge"):
        compute_text_metrics(["rouge"], ["a"], ["a"])
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        compute_text_metrics(["bleu"], ["a"], ["a", "b"])


def test_importing_metrics_loads_no_scorer():
    code = ("import sys, reconciler.runtime.metrics; "
            "print(sorted(m for m in ('sacrebleu', 'rouge_score') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
