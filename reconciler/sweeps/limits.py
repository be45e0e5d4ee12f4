"""What bounds a sweep, pure and without Optuna: how many trials it may have, and whether a
recorded trial still lies in its search space (the plan needs both offline)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.specs.sweep import Distribution, SweepSpec
    from reconciler.state import TrialRecord


def grid_size(spec: SweepSpec) -> int | None:
    """How many points a grid sweep has (None for the other algorithms)."""
    if spec.algorithm != "grid":
        return None
    size = 1
    for dist in spec.parameters.values():
        size *= len(finite_values(dist) or ())
    return size


def finite_values(dist: Distribution) -> list | None:
    """A finite parameter's values in order (None for a continuous one)."""
    if dist.int_range is not None:
        return list(range(int(dist.int_range[0]), int(dist.int_range[1]) + 1))
    if dist.choice is not None:
        return list(dist.choice)
    return None


def trial_limit(spec: SweepSpec) -> int:
    """maxTrials, or a grid's size when that is smaller (a grid has no more points to try)."""
    grid = grid_size(spec)
    return min(spec.max_trials, grid) if grid is not None else spec.max_trials


def contains(dist: Distribution, value: object) -> bool:
    if isinstance(value, bool) and dist.choice is None:
        return False
    if dist.log_uniform is not None or dist.uniform is not None:
        low, high = dist.log_uniform or dist.uniform  # type: ignore[misc]
        return isinstance(value, int | float) and math.isfinite(value) and low <= value <= high
    if dist.int_range is not None:
        low, high = dist.int_range
        return isinstance(value, int) and low <= value <= high
    return any(type(value) is type(choice) and value == choice for choice in dist.choice or ())


def in_space(spec: SweepSpec, trial: TrialRecord) -> str:
    """"" when the trial's parameters are those of the search space and each value lies in its
    distribution; otherwise why not, in words."""
    wanted, have = set(spec.parameters), set(trial.params)
    if wanted != have:
        added, removed = sorted(wanted - have), sorted(have - wanted)
        parts = ([f"new parameter {', '.join(added)}"] if added else []) + \
            ([f"parameter {', '.join(removed)} removed"] if removed else [])
        return "search space changed: " + "; ".join(parts)
    outside = [path for path, dist in sorted(spec.parameters.items())
               if not contains(dist, trial.params[path])]
    if outside:
        return "outside the search space: " + ", ".join(f"{path}={trial.params[path]!r}" for path in outside)
    return ""


def refused_by_template(trial: TrialRecord) -> bool:
    """A trial whose parameters, each allowed alone, the template refused together: recorded as
    failed with no FineTune, and counted, so that the search moves on rather than asking again."""
    return trial.state == "failed" and not trial.fine_tune
