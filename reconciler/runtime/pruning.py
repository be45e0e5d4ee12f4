"""Median pruning of a sweep trial inside its fine-tune job: the sweep driver puts the curves of
the trials that finished into the job file (`pruning`), and training stops as soon as this
trial falls behind them, so a bad hyperparameter costs a few steps instead of a whole run.

The rule is decided here, in the job, not by the driver polling MLflow: a trial stops at the
step it falls behind, and under torchrun every rank stops at that same step.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from reconciler.jobs.jobfile import PruningJob

if TYPE_CHECKING:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

Curve = Sequence[tuple[int, float]]


@dataclass(frozen=True)
class TrialPruned:
    """What `run_finetune` returns for a trial it stopped: no model was saved or registered."""

    reason: str
    step: int
    value: float


def value_at(curve: Curve, step: int) -> float | None:
    """A finished curve's value at `step`: the one at its largest recorded step <= `step`, so
    curves logged at other steps (every evaluation, another logging cadence) still line up."""
    found = None
    for recorded, value in curve:
        if recorded > step:
            break
        found = value
    return found


def should_prune(
    step: int,
    value: float,
    history: Sequence[Curve],
    direction: Literal["minimize", "maximize"] = "minimize",
    min_steps: int = 0,
    min_trials: int = 2,
    *,
    metric: str = "value",
) -> str | None:
    """None to keep training, else the one-line reason to stop.

    In order: a non-finite value is a diverged trial, at any step; before `min_steps` nothing
    else prunes; then Optuna's MedianPruner rule: prune when `value` is worse (strictly) than
    the median of the finished trials' values at this step, once at least `min_trials` of them
    have one. A finished curve's non-finite values are left out, as numpy's nanmedian does."""
    if not math.isfinite(value):
        return f"{metric} is {value} at step {step}: diverged"
    if step < min_steps:
        return None
    others = [found for curve in history
              if (found := value_at(curve, step)) is not None and math.isfinite(found)]
    if not others or len(others) < min_trials:
        return None
    median = statistics.median(others)
    worse = value > median if direction == "minimize" else value < median
    if not worse:
        return None
    trials = "trial" if len(others) == 1 else "trials"
    return (f"{metric} {value:.4g} at step {step} is worse than the median {median:.4g} "
            f"of {len(others)} finished {trials}")


def curve_tag(curve: Curve, limit: int) -> str:
    """The curve as compact JSON `[[step, value], ...]` (values to 6 significant digits;
    Python's json writes and reads NaN and Infinity), evenly thinned to fit `limit` characters,
    always keeping the first and last points."""
    points = [[step, float(f"{value:.6g}")] for step, value in curve]

    def text(chosen: list[list[float]]) -> str:
        return json.dumps(chosen, separators=(",", ":"))

    keep = len(points)
    while keep > 2 and len(text(points)) > limit:
        keep = max(2, min(keep - 1, int(keep * limit / len(text(points)))))
        indices = sorted({round(i * (len(curve) - 1) / (keep - 1)) for i in range(keep)})
        points = [[curve[i][0], float(f"{curve[i][1]:.6g}")] for i in indices]
    return text(points)


def _callback_base() -> type[TrainerCallback]:
    from transformers import TrainerCallback

    return TrainerCallback


class MedianPruning(_callback_base()):
    """Watches the pruning metric in the Trainer's logs and stops training when `should_prune`
    says so. The Trainer calls `on_log` on every rank with the same values (the loss is
    all-gathered and averaged, the evaluation gathered, before logging); rank 0's decision is
    still broadcast, so every rank stops at the same step whatever the floating point did.

    Like Optuna's MedianPruner, the median rule judges the trial's best value so far (a step's
    noisy training loss alone would prune good trials); a non-finite value prunes at once."""

    def __init__(self, pruning: PruningJob):
        self.pruning = pruning
        self.curve: list[tuple[int, float]] = []
        self.reason: str | None = None
        self.step: int | None = None
        self.value: float | None = None
        self._training = False

    @property
    def pruned(self) -> bool:
        return self.reason is not None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: object) -> None:
        """A resumed trial keeps the points logged before its checkpoint (the Trainer restores
        them into `log_history`); those after it are trained and logged again."""
        self._training = True
        metric = self.pruning.metric
        self.curve = [(int(entry["step"]), float(entry[metric])) for entry in state.log_history
                      if metric in entry and "step" in entry and entry["step"] <= state.global_step]

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: object) -> None:
        self._training = False

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: object) -> None:
        metric = self.pruning.metric
        if not self._training or self.pruned or not logs or metric not in logs:
            return  # the same on every rank: the same keys are logged everywhere
        value = float(logs[metric])
        step = state.global_step
        self.curve.append((step, value))
        judged, label = value, metric
        if math.isfinite(value):
            finite = [v for _, v in self.curve if math.isfinite(v)]
            best = min(finite) if self.pruning.direction == "minimize" else max(finite)
            if best != value:
                judged, label = best, f"best {metric}"
        reason = should_prune(step, judged, self.pruning.history, self.pruning.direction,
                              self.pruning.min_steps, self.pruning.min_trials, metric=label)
        if not _agreed(reason is not None, args):
            return
        self.reason = reason or f"{metric} pruned on rank 0 at step {step}"
        self.step, self.value = step, judged
        control.should_training_stop = True
        control.should_evaluate = False  # no evaluation or checkpoint of a trial being dropped
        control.should_save = False

    def curve_tag(self, limit: int) -> str:
        return curve_tag(self.curve, limit)


def _agreed(prune: bool, args: TrainingArguments) -> bool:
    """Rank 0's decision on every rank (a no-op in a single process). Every rank calls this at
    the same log, so the broadcast cannot wait on a rank that never comes."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return prune
    device = args.device if dist.get_backend() == "nccl" else torch.device("cpu")
    flag = torch.tensor([1 if prune else 0], dtype=torch.int32, device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())
