"""The paired comparison a notWorseThan gate is decided on: the bootstrap interval of
(candidate - champion) on the same rows, McNemar's exact test, and the gate's verdict on them."""

from __future__ import annotations

import math
import random

import pytest

from reconciler.plan.gates import PairedResult, comparison_metrics, evaluate_gates, verdict_of_run
from reconciler.runtime.paired import mcnemar_exact, paired_bootstrap
from reconciler.runtime.row_scores import perplexity_row_scores, text_row_scores
from reconciler.specs.evaluation import Gate

pytest.importorskip("numpy", reason="the paired comparison runs in the evaluation job, with numpy")

ROWS = 200


def _answers(correct: list[bool]) -> list[str]:
    return ["paris" if right else "london" for right in correct]


def _versions(seed: int = 7) -> tuple[list[str], list[str], list[str], list[str]]:
    """References and three models' answers on 200 rows: the champion right on 70% of them, a
    truly better candidate that also gets 30 of the champion's misses right (and loses none),
    and an equal one that swaps 10 wins for 10 losses."""
    rng = random.Random(seed)
    champion = [rng.random() < 0.7 for _ in range(ROWS)]
    misses = [i for i, right in enumerate(champion) if not right]
    hits = [i for i, right in enumerate(champion) if right]
    better = list(champion)
    for i in misses[:30]:
        better[i] = True
    equal = list(champion)
    for i in misses[:10]:
        equal[i] = True
    for i in hits[:10]:
        equal[i] = False
    return ["paris"] * ROWS, _answers(champion), _answers(better), _answers(equal)


def _paired(references: list[str], candidate: list[str], champion: list[str]) -> PairedResult:
    mine = text_row_scores("exact_match", candidate, references)
    theirs = text_row_scores("exact_match", champion, references)
    c = paired_bootstrap(mine, theirs, confidence=0.95)
    return PairedResult(c.rows, c.candidate, c.champion, c.low, c.high, c.confidence,
                        mcnemar_exact(mine.stats[:, 0], theirs.stats[:, 0]))


def _verdict(paired: PairedResult, margin: float) -> bool:
    gate = Gate.model_validate({"metric": "exact_match", "notWorseThan": "serving", "margin": margin})
    return evaluate_gates({"exact_match": paired.candidate}, [gate], compared={
        ("serving", "exact_match"): (paired, "")}).passed


def test_a_truly_better_version_passes_and_an_equal_one_is_judged_by_its_margin() -> None:
    references, champion, better, equal = _versions()
    improved = _paired(references, better, champion)
    assert improved.difference == pytest.approx(30 / ROWS)
    assert improved.low > 0 and improved.p_value is not None and improved.p_value < 0.001
    assert _verdict(improved, margin=0.0)

    same = _paired(references, equal, champion)
    assert same.difference == 0
    assert same.low < 0 < same.high  # the interval includes 0
    assert same.p_value == 1.0  # 10 wins, 10 losses
    assert not _verdict(same, margin=0.0)  # it cannot show it is not worse
    assert same.low > -0.05
    assert _verdict(same, margin=0.05)


def test_the_same_rows_and_scores_give_the_same_interval_to_the_last_digit() -> None:
    references, champion, better, _ = _versions()
    first, second = _paired(references, better, champion), _paired(references, better, champion)
    assert (first.low, first.high) == (second.low, second.high)
    # continuous per-row scores (token F1), resampled row by row: the fixed seed is what makes
    # two runs agree; another seed moves the interval's ends a little
    rng = random.Random(1)
    references = [" ".join(rng.choice("abcdefgh") for _ in range(6)) for _ in range(300)]
    candidate = [" ".join(ref.split()[: rng.randint(2, 6)]) for ref in references]
    champion = [" ".join(ref.split()[: rng.randint(1, 6)]) for ref in references]
    mine = text_row_scores("f1", candidate, references)
    theirs = text_row_scores("f1", champion, references)
    runs = [paired_bootstrap(mine, theirs, seed=seed) for seed in (1, 1, 2)]
    assert (runs[0].low, runs[0].high) == (runs[1].low, runs[1].high)
    assert (runs[0].low, runs[0].high) != (runs[2].low, runs[2].high)


def test_the_fast_path_and_plain_resampling_are_the_same_bootstrap() -> None:
    """0/1 differences take three values, so resamples are drawn as counts of each; continuous
    scores are resampled row by row. Both estimate the same distribution."""
    from reconciler.runtime import paired as module

    references, champion, better, _ = _versions()
    mine = text_row_scores("exact_match", better, references)
    theirs = text_row_scores("exact_match", champion, references)
    fast = paired_bootstrap(mine, theirs, resamples=20_000)
    module_mean = module.mean_of_rows
    try:  # a different aggregate function object forces row-by-row resampling
        module.mean_of_rows = lambda sums, rows: sums[..., 0] / rows  # type: ignore[assignment]
        slow = paired_bootstrap(mine, theirs, resamples=20_000)
    finally:
        module.mean_of_rows = module_mean
    assert fast.low == pytest.approx(slow.low, abs=0.011)
    assert fast.high == pytest.approx(slow.high, abs=0.011)


def test_perplexity_is_token_weighted_and_lower_is_better() -> None:
    """Perplexity resamples rows of (NLL, tokens): the candidate's lower perplexity passes a
    notWorseThan gate whose bound is +margin; a worse one fails."""
    rng = random.Random(3)
    rows = [(rng.uniform(1, 3) * n, n) for n in (rng.randint(5, 40) for _ in range(150))]
    champion = perplexity_row_scores(rows)
    better = perplexity_row_scores([(nll * 0.8, n) for nll, n in rows])
    worse = perplexity_row_scores([(nll * 1.2, n) for nll, n in rows])
    assert champion.value == pytest.approx(math.exp(sum(r[0] for r in rows) / sum(r[1] for r in rows)))
    gate = Gate.model_validate({"metric": "perplexity", "notWorseThan": "baseline", "margin": 0.1})
    for candidate, passes in ((better, True), (worse, False)):
        c = paired_bootstrap(candidate, champion)
        paired = PairedResult(c.rows, c.candidate, c.champion, c.low, c.high, c.confidence)
        verdict = evaluate_gates({"perplexity": c.candidate}, [gate],
                                 compared={("baseline", "perplexity"): (paired, "")})
        assert verdict.passed is passes, verdict.summary()
        assert ("notWorseThan +0.1" in verdict.results[0].describe())


def test_bleu_is_resampled_with_the_corpus_formula() -> None:
    references = [f"the cat sat on mat number {i}" for i in range(60)]
    candidate = [f"the cat sat on mat number {i}" for i in range(60)]
    champion = [f"a dog sat on the rug {i}" for i in range(60)]
    c = paired_bootstrap(text_row_scores("bleu", candidate, references),
                         text_row_scores("bleu", champion, references), resamples=2000)
    assert c.candidate == pytest.approx(1.0) and c.low > 0.3


def test_mcnemar_exact_matches_the_binomial_test() -> None:
    # 8 wins, 2 losses of 10 discordant rows: 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * 56/1024
    candidate = [1] * 8 + [0] * 2 + [1] * 5
    champion = [0] * 8 + [1] * 2 + [1] * 5
    assert mcnemar_exact(candidate, champion) == pytest.approx(2 * 56 / 1024)
    assert mcnemar_exact([1, 0], [1, 0]) == 1.0


def test_the_plan_rederives_a_comparison_verdict_from_the_logged_figures() -> None:
    gate = Gate.model_validate({"metric": "exact_match", "notWorseThan": "serving", "margin": 0.02})
    paired = PairedResult(200, 0.81, 0.78, -0.02, 0.08, 0.95, 0.31)
    logged = {"exact_match": 0.81, **comparison_metrics("serving", "exact_match", paired)}
    verdict = verdict_of_run(logged, [gate], None)
    assert verdict.passed
    line = verdict.results[0].describe()
    assert line == ("exact_match 0.81 vs serving 0.78: +0.03 [-0.02, +0.08] (n=200, 95%, McNemar p=0.31) "
                    "passes notWorseThan -0.02")
    assert line in verdict.summary()
    failing = {**logged, "compare/serving/exact_match/low": -0.05}
    assert not verdict_of_run(failing, [gate], None).passed


def test_a_comparison_with_nothing_serving_is_skipped_and_says_so() -> None:
    gate = Gate.model_validate({"metric": "exact_match", "notWorseThan": "serving"})
    logged = {"exact_match": 0.5, **comparison_metrics("serving", "exact_match", None)}
    verdict = verdict_of_run(logged, [gate], None)
    assert verdict.passed
    assert "exact_match vs serving: not compared, no version serves yet" in verdict.summary()
    # a comparison that was never logged (an older run) fails as not computed
    assert not verdict_of_run({"exact_match": 0.5}, [gate], None).passed
