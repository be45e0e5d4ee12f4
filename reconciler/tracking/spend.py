"""What each team has spent this month: the GPU-hours MLflow recorded for its runs that ended
since the first of the month (UTC), and those hours priced at `pricing`. Read back from the
runs themselves (`tuneops.gpu_hours`, written when a run ends), so it counts every apply, the
daemon's and anyone's, and failed runs too: their GPUs were paid for."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from reconciler.config import PricingSettings
from reconciler.tracking import vocabulary as tracking


@dataclass(frozen=True)
class Spend:
    gpu_hours: float = 0.0
    dollars: float = 0.0  # at the on-demand price of each run's GPU product
    unpriced_gpu_hours: float = 0.0  # hours of GPU products `pricing` does not price
    runs: int = 0


def month_start(now: float) -> float:
    """The first instant of `now`'s calendar month, UTC, in epoch seconds."""
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def month_to_date(store: Any, experiment_id: str | None, pricing: PricingSettings,
                  now: float) -> dict[str, Spend]:
    """Team -> its spend since the first of the month; teams without a run are absent."""
    if store is None or experiment_id is None:
        return {}
    since = int(month_start(now) * 1000)
    spent: dict[str, Spend] = {}
    for record in store.search_runs(experiment_id, f"attributes.end_time >= {since}"):
        team, hours = record.tags.get(tracking.TAG_TEAM), _hours(record.tags.get(tracking.TAG_GPU_HOURS))
        if not team or hours is None:
            continue
        price = pricing.price_of(record.tags.get(tracking.TAG_GPU_PRODUCT))
        before = spent.get(team, Spend())
        spent[team] = Spend(before.gpu_hours + hours,
                            before.dollars + (hours * price.on_demand if price is not None else 0.0),
                            before.unpriced_gpu_hours + (hours if price is None else 0.0), before.runs + 1)
    return spent


def _hours(text: str | None) -> float | None:
    try:
        hours = float(text) if text else None
    except ValueError:
        return None
    return hours if hours is not None and 0 <= hours < float("inf") else None
