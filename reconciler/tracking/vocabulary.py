"""The MLflow vocabulary shared by the runtime (which writes it) and the reconciler (which reads it).

One MLflow run per materialised resource, tagged so that actual state is a handful of paged
searches and lineage can be walked with MLflow's own client. mlflow itself is imported only
inside the functions that talk to a server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from reconciler.errors import TemporaryError

TAG_KIND = "tuneops.kind"
TAG_NAME = "tuneops.name"
TAG_GPU_HOURS = "tuneops.gpu_hours"  # when a FineTune's or Evaluation's run ends: GPUs x wall-clock hours
TAG_GPU_PRODUCT = "tuneops.gpu_product"  # the GPU product it asked for, when it named one (for pricing)
TAG_TEAM = "tuneops.team"  # the team of a team's runs and model versions (its name is team-qualified too)
TAG_FINGERPRINT = "tuneops.fingerprint"
TAG_GIT_REPO = "tuneops.git.repo"
TAG_GIT_COMMIT = "tuneops.git.commit"
TAG_GIT_DIRTY = "tuneops.git.dirty"
TAG_SPEC_PATH = "tuneops.spec.path"
TAG_STATUS = "tuneops.status"  # "complete" once the outputs are in place; "pruned": a trial stopped early
TAG_OUTPUT = "tuneops.output"  # where the outputs are (a path or URI)
TAG_BASE_SOURCE = "tuneops.base_model.source"
TAG_BASE_REVISION = "tuneops.base_model.revision"
TAG_DATASET_DIGEST_PREFIX = "tuneops.dataset."  # + name -> digest
# + FineTune name -> the "<model>/<version>" of a reward model a GRPO run scored with
TAG_REWARD_MODEL_PREFIX = "tuneops.reward_model."
TAG_STARTED_FROM = "tuneops.started_from"  # with fromFineTune: the "<model>/<version>" trained further
TAG_MODEL_VERSION = "tuneops.model.version"  # on evaluation runs: the "<model>/<version>" scored
TAG_REGISTERED_VERSION = "tuneops.registered.version"  # on fine-tune runs: the "<model>/<version>" made
TAG_GATE_PREFIX = "tuneops.gate."  # + evaluation name -> "passed" | "failed"
TAG_GATE_SUMMARY = "tuneops.verdict"  # on evaluation runs: "failed: gate rougeL 0.21 < 0.35"
TAG_SPEC = "tuneops.spec"  # the resolved spec the job ran, compact JSON
TAG_LINEAGE = "tuneops.lineage"  # the fingerprint's other inputs: upstream fingerprints, source digests
TAG_DATASET_DIGEST = "tuneops.dataset.digest"  # on dataset runs: the full-content digest
TAG_ADAPTER = "tuneops.adapter"  # on model versions: "true" for adapter weights
# On a sweep trial's fine-tune run (see runtime/pruning.py): where and why median pruning stopped it,
# and the pruning metric's curve as logged, compact JSON [[step, value], ...] (thinned to fit a tag).
TAG_PRUNED_STEP = "tuneops.pruned.step"
TAG_PRUNED_VALUE = "tuneops.pruned.value"
TAG_PRUNED_REASON = "tuneops.pruned.reason"  # one line: "loss is nan at step 12: diverged"
TAG_TRIAL_CURVE = "tuneops.trial.curve"
MAX_TAG_LENGTH = 8000  # MLflow's limit on a tag value
# Sweeps: a parent run per Sweep (TAG_KIND "Sweep") and a child run per trial ("SweepTrial", its
# TAG_NAME the sweep's name, MLflow's parent tag on it), written by apply, read back by the plan.
KIND_SWEEP = "Sweep"
KIND_TRIAL = "SweepTrial"
TAG_PARENT_RUN = "mlflow.parentRunId"  # MLflow's own nesting tag: the UI shows trials under the sweep
TAG_TRIAL_NUMBER = "tuneops.trial.number"
TAG_TRIAL_FINE_TUNE = "tuneops.trial.fine_tune"  # the trial's FineTune name
TAG_TRIAL_PARAMS = "tuneops.trial.params"  # JSON: dotted path -> value
TAG_TRIAL_DISTRIBUTIONS = "tuneops.trial.distributions"  # JSON: dotted path -> Optuna distribution JSON
TAG_TRIAL_STATE = "tuneops.trial.state"  # running | complete | pruned | failed
TAG_TRIAL_VALUE = "tuneops.trial.value"  # the objective, repr of a float
TAG_TRIAL_MESSAGE = "tuneops.trial.message"  # why it was pruned or failed, one line
TAG_TRIAL_SYSTEM_PREFIX = "tuneops.trial.system."  # + chunk number: the sampler's JSON state
TAG_TRIAL_GPU_HOURS = "tuneops.trial.gpu_hours"  # the planner's estimate when it was suggested
TAG_SWEEP_STOPPED = "tuneops.sweep.stopped"  # on the sweep's run: "budget: ..." when the budget stopped it
TAG_SWEEP_BUDGET = "tuneops.sweep.budget"  # the budget (GPU-hours) it stopped at
# The audit trail: one run per switch of a Deployment's served version (TAG_KIND "DeploymentSwitch",
# TAG_NAME the Deployment), created before the switch and ended FINISHED once it serves, FAILED
# when it did not; never edited after. See tracking/switches.py.
KIND_SWITCH = "DeploymentSwitch"
TAG_SWITCH_VERSION = "tuneops.switch.version"  # "name/N" now served; "" when it stopped serving
TAG_SWITCH_PREVIOUS = "tuneops.switch.previous"  # "name/N" served before; "" when none
TAG_SWITCH_ROLLBACK = "tuneops.switch.rollback"  # "true" when it goes back to an earlier version
TAG_SWITCH_COMMIT = "tuneops.switch.commit"  # the spec repository's commit that asked for it
TAG_SWITCH_DIRTY = "tuneops.switch.dirty"  # "true" when the specs had uncommitted changes
TAG_SWITCH_AUTHOR = "tuneops.switch.author"  # that commit's author, "Name <email>"
TAG_SWITCH_SUBJECT = "tuneops.switch.subject"  # that commit's subject line
TAG_SWITCH_GATES = "tuneops.switch.gates"  # JSON: Evaluation -> its verdict summary
TAG_SWITCH_BY = "tuneops.switch.by"  # who applied it: the user, or the daemon
TAG_SWITCH_REASON = "tuneops.switch.reason"  # why, as the plan said it
# Policy overrides: one run per violation an apply let through (TAG_KIND "PolicyOverride",
# TAG_NAME the Policy). See tracking/overrides.py.
KIND_OVERRIDE = "PolicyOverride"
TAG_OVERRIDE_RESOURCE = "tuneops.override.resource"  # the spec that violates it: "Deployment/bot"
TAG_OVERRIDE_WHERE = "tuneops.override.where"  # its file and line
TAG_OVERRIDE_APPROVED_BY = "tuneops.override.approved_by"  # who approved it (or which annotation)
TAG_OVERRIDE_REASON = "tuneops.override.reason"  # why
TAG_OVERRIDE_COMMIT = "tuneops.override.commit"  # the spec repository's commit applied
TAG_OVERRIDE_APPLIED_BY = "tuneops.override.applied_by"  # who ran the apply

STATUS_COMPLETE = "complete"
STATUS_PRUNED = "pruned"  # final, like complete, but nothing was saved or registered
GATE_PASSED = "passed"
GATE_FAILED = "failed"


def gate_tag(evaluation: str) -> str:
    return f"{TAG_GATE_PREFIX}{evaluation}"


def dataset_digest_tag(dataset: str) -> str:
    return f"{TAG_DATASET_DIGEST_PREFIX}{dataset}.digest"


class TrackingUnavailable(TemporaryError, RuntimeError):
    """MLflow could not be reached after retrying; the message names the URI."""


T = TypeVar("T")

# Seconds between attempts; the total (about 15 s) rides out a server that is still starting.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


def with_retries(call: Callable[[], T], tracking_uri: str, what: str,
                 delays: tuple[float, ...] | None = None) -> T:
    """Run `call`, retrying connection failures with backoff; then fail naming the URI.

    TUNEOPS_MLFLOW_RETRY_DELAYS (comma-separated seconds) overrides the schedule, for tests.
    """
    if delays is None:
        override = os.environ.get("TUNEOPS_MLFLOW_RETRY_DELAYS")
        delays = tuple(float(d) for d in override.split(",")) if override else RETRY_DELAYS
    last: Exception | None = None
    for attempt in range(len(delays) + 1):
        try:
            return call()
        except Exception as error:  # classified below
            if not _is_connection_error(error):
                raise
            last = error
            if attempt < len(delays):
                time.sleep(delays[attempt])
    raise TrackingUnavailable(
        f"cannot reach MLflow at {redact_uri(tracking_uri)} to {what} after {len(delays) + 1} attempts: "
        f"{_short(last, tracking_uri)}") from None


def redact_uri(uri: str) -> str:
    """The URI as it may be shown: `http://user:secret@host` -> `http://user:***@host`, a token in
    the user-name position masked too (redaction.redact)."""
    from reconciler.redaction import redact

    return redact(uri)


def _is_connection_error(error: BaseException) -> bool:
    """A failure worth retrying: the network (requests' or urllib's), or an error that says so
    with `retryable = True` (the REST store's HTTP 429 and 5xx)."""
    import urllib.error

    network: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)  # RemoteDisconnected too
    try:
        import requests  # mlflow's HTTP client; the core install has none and talks urllib
    except ImportError:
        pass
    else:
        network += (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, network) or getattr(current, "retryable", False) is True:
            return True
        if (isinstance(current, urllib.error.URLError) and not isinstance(current, urllib.error.HTTPError)
                and isinstance(current.reason, OSError)):  # refused, unreachable, DNS, timeout
            return True
        text = str(current)
        if "Max retries exceeded" in text or "Connection refused" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def _short(error: Any, tracking_uri: str) -> str:
    from reconciler.redaction import redact

    text = str(error).splitlines()[0] if error else "unknown error"
    return redact(text.replace(tracking_uri, redact_uri(tracking_uri)))[:300]
