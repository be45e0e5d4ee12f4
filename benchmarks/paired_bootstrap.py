"""The paired bootstrap a `notWorseThan` gate is decided on, timed: 10,000 resamples over 10,000
rows, against scipy's `scipy.stats.bootstrap(..., paired=True)` on the same data in the same session.

Each case runs in its own process (`--child CASE`), which builds the data (seeded), then times
the bootstrap call alone with `time.perf_counter`; the parent also records each process's wall
time. Cases:

- `binary`: exact match, 0/1 per row (the runtime draws counts of each distinct difference);
- `continuous`: token F1 in [0, 1] per row, all distinct (the runtime resamples rows);
- `perplexity`: (NLL, tokens) per row, aggregated as exp(sum NLL / sum tokens);
- `scipy-binary`, `scipy-continuous`: scipy's paired bootstrap of the mean difference, with
  `method="percentile"` (the interval the runtime reports) and `vectorized=True`.

    python benchmarks/paired_bootstrap.py              # 3 rounds, medians
    python benchmarks/paired_bootstrap.py --markdown   # the table for docs/benchmarks.md

Never asserts on time; the target (under 1 s) is reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import git_commit, print_table  # benchmarks/common.py, beside this script

HERE = Path(__file__).resolve().parent
ROWS, RESAMPLES, TARGET_S = 10_000, 10_000, 1.0
CASES = ("binary", "continuous", "perplexity", "scipy-binary", "scipy-continuous")


def _data(case: str):  # -> (candidate, champion) as numpy arrays of per-row values
    import numpy as np

    rng = np.random.default_rng(0)
    if "binary" in case:
        champion = (rng.random(ROWS) < 0.7).astype(float)
        candidate = np.where(rng.random(ROWS) < 0.1, 1 - champion, champion)
    elif case == "perplexity":
        tokens = rng.integers(5, 200, ROWS).astype(float)
        champion = np.stack([tokens * rng.uniform(1, 3, ROWS), tokens], axis=1)
        candidate = np.stack([champion[:, 0] * rng.uniform(0.9, 1.05, ROWS), tokens], axis=1)
    else:
        champion = rng.random(ROWS)
        candidate = np.clip(champion + rng.normal(0.02, 0.1, ROWS), 0, 1)
    return candidate, champion


def child(case: str) -> None:
    sys.path.insert(0, str(HERE.parent))
    candidate, champion = _data(case)
    if case.startswith("scipy"):
        from scipy.stats import bootstrap

        def mean_difference(a, b, axis=-1):  # noqa: ANN001, ANN202 - scipy's statistic signature
            return a.mean(axis=axis) - b.mean(axis=axis)

        start = time.perf_counter()
        found = bootstrap((candidate, champion), mean_difference, paired=True, vectorized=True,
                          n_resamples=RESAMPLES, method="percentile", confidence_level=0.95,
                          random_state=0)
        elapsed = time.perf_counter() - start
        low, high = found.confidence_interval
    else:
        from reconciler.runtime.paired import RowScores, mean_of_rows, paired_bootstrap
        from reconciler.runtime.row_scores import perplexity_row_scores

        if case == "perplexity":
            mine, theirs = perplexity_row_scores(candidate), perplexity_row_scores(champion)
        else:
            mine = RowScores(case, candidate[:, None], mean_of_rows)
            theirs = RowScores(case, champion[:, None], mean_of_rows)
        start = time.perf_counter()
        found = paired_bootstrap(mine, theirs, resamples=RESAMPLES)
        elapsed = time.perf_counter() - start
        low, high = found.low, found.high
    print(json.dumps({"case": case, "seconds": elapsed, "low": float(low), "high": float(high)}))


def run(case: str) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", case], capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"FAIL: case {case}: {done.stderr[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default: %(default)s)")
    parser.add_argument("--markdown", action="store_true", help="print the table for docs/benchmarks.md")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    results: dict[str, list[dict]] = {case: [] for case in CASES}
    for round_index in range(args.repeat):
        order = CASES if round_index % 2 == 0 else tuple(reversed(CASES))
        for case in order:
            results[case].append(run(case))
    median = {case: {key: statistics.median(r[key] for r in runs) for key in ("seconds", "process_s")}
              for case, runs in results.items()}
    baseline = {"binary": "scipy-binary", "continuous": "scipy-continuous"}
    rows = [["case", "bootstrap s", "process s", "vs scipy", "interval", f"< {TARGET_S:g} s"]]
    for case in CASES:
        found = results[case][0]
        ratio = ""
        if case in baseline:
            ratio = f"{median[baseline[case]]['seconds'] / median[case]['seconds']:.1f}x faster"
        fast = median[case]["seconds"] < TARGET_S
        target = "" if case.startswith("scipy") else ("met" if fast else "NOT met")
        rows.append([case, f"{median[case]['seconds']:.3f}", f"{median[case]['process_s']:.2f}", ratio,
                     f"[{found['low']:+.4f}, {found['high']:+.4f}]", target])
    print(f"{ROWS:,} rows, {RESAMPLES:,} resamples, medians of {args.repeat} rounds; commit {git_commit()}; "
          f"Python {platform.python_version()}, {platform.machine()}")
    if args.markdown:
        print("| " + " | ".join(rows[0]) + " |")
        print("|" + "---|" * len(rows[0]))
        for row in rows[1:]:
            print("| " + " | ".join(row) + " |")
    else:
        print_table(rows)


if __name__ == "__main__":
    main()
