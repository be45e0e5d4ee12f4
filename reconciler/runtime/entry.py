"""`tuneops run KIND --job FILE`: read the job file, run the job, turn user errors into one line.

Exit codes: 0 done (an evaluation whose gates failed is done too: the verdict is a result, and so
is a sweep trial that pruning stopped),
1 the job could not run (the message says why), 130 interrupted.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.errors import PermanentError
from reconciler.jobs.jobfile import COMMAND_BY_KIND, JobFile, JobFileError, read_job_file


class JobRefused(PermanentError, ValueError):
    """The job file is for another command."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'fix your input', not 'tuneops has a bug'."""
    from reconciler.runtime.checkout import CheckoutError
    from reconciler.runtime.dataset import DatasetError
    from reconciler.runtime.evaluate import EvaluationError
    from reconciler.runtime.finetune import FineTuneError
    from reconciler.runtime.judge_client import JudgeError
    from reconciler.runtime.loading import ModelLoadError
    from reconciler.runtime.serve import ServeError
    from reconciler.runtime.training_data import TrainingDataError
    from reconciler.tracking.vocabulary import TrackingUnavailable

    return (JobFileError, JobRefused, CheckoutError, DatasetError, EvaluationError, FineTuneError,
            ModelLoadError, ServeError, TrainingDataError, TrackingUnavailable, JudgeError)


def load(command: str, path: Path) -> JobFile:
    job = read_job_file(path)
    if job.command != command:
        raise JobRefused(f"{path} is a {job.kind} job: run it with `tuneops run {job.command} --job {path}`")
    check_spec(job, path)
    return job


def check_spec(job: JobFile, path: Path) -> None:
    """The job's spec validates as its kind's: a job file written by hand, or by another release,
    fails here in one line naming the field, not later with a traceback."""
    from pydantic import ValidationError

    from reconciler.specs.kinds import KINDS

    model = KINDS[job.kind].model_fields["spec"].annotation
    try:
        model.model_validate(job.spec)  # type: ignore[union-attr]
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in ("spec", *first["loc"]))
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise JobRefused(f"{path}: the {job.kind} spec in it does not validate: {where}: "
                         f"{first['msg']}{more}") from None


def run(command: str, path: Path) -> str:
    """Run the job; returns a one-line summary for the log."""
    if command == "checkout":  # the init container before any kind of job
        from reconciler.runtime.checkout import check_out

        job = read_job_file(path)
        into = check_out(job)
        assert job.checkout is not None
        return (f"checked out {', '.join(job.checkout.paths)} at {(job.git.commit or '')[:12]} "
                f"into {into}")
    job = load(command, path)
    if command == "dataset":
        from reconciler.runtime.dataset import dropped_summary, read_manifest
        from reconciler.runtime.dataset_run import run_dataset

        output = run_dataset(job)
        return f"dataset {job.name}: prepared in {output} ({dropped_summary(read_manifest(output))})"
    if command == "finetune":
        import os

        from reconciler.runtime.finetune import run_finetune
        from reconciler.runtime.pruning import TrialPruned

        output = run_finetune(job)
        rank = os.environ.get("RANK", "0")
        if rank != "0":  # rank 0 moves the output into place and says where
            return f"fine-tune {job.name}: rank {rank} done"
        if isinstance(output, TrialPruned):  # a sweep's verdict on this trial, not a failure
            trial = f" (trial {job.pruning.trial})" if job.pruning and job.pruning.trial else ""
            return f"fine-tune {job.name}{trial}: pruned: {output.reason}"
        return f"fine-tune {job.name}: saved to {output}"
    if command == "evaluate":
        import json

        from reconciler.runtime.evaluate import run_evaluate

        output = run_evaluate(job)
        verdict = json.loads((output / "results.json").read_text())["verdict"]
        return f"evaluation {job.name}: {verdict} (report: {output / 'report.md'})"
    if command == "serve":
        from reconciler.runtime.serve import serve

        serve(job)
        return f"deployment {job.name}: stopped"
    raise JobRefused(f"unknown command {command}; use one of {', '.join(COMMAND_BY_KIND.values())}")
