"""Commands that other processes run: the reconcile daemon, and `run`, the entry of every job."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from reconciler.cli.base import (
    UserError,
    cli,
)


@cli.command()
@click.option("--repo", required=True, metavar="URL_OR_PATH", envvar="TUNEOPS_SPEC_REPO",
              help="The spec repository (or TUNEOPS_SPEC_REPO, which keeps a token in the URL off the "
                   "command line). Credentials come from the environment (git's credential helpers, "
                   "GIT_SSH_COMMAND, a token in the URL) and are never printed.")
@click.option("--branch", default="main", show_default=True, help="The branch kept converged.")
@click.option("--path", "spec_path", default=".", show_default=True,
              help="The spec folder in the repository.")
@click.option("--interval", type=click.FloatRange(min=1), default=60, show_default=True,
              help="Seconds between ticks (failures back off up to 10 minutes).")
@click.option("--once", is_flag=True,
              help="One tick, then exit (0 synced or invalid commit skipped, 1 failed).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the checkout lives; one daemon acts per folder. "
                   "Default: ~/.cache/tuneops/reconcile/<id>.")
@click.option("--listen", metavar="HOST:PORT",
              help="Serve /healthz, /readyz, /metrics, POST /hooks/git (HMAC secret in "
                   "TUNEOPS_WEBHOOK_SECRET) and the read-only dashboard at / (beyond loopback it needs "
                   "the token in TUNEOPS_UI_TOKEN).")
@click.option("--lease", metavar="NAME",
              help="Lead through this coordination.k8s.io Lease (in the namespace of the kubeconfig context "
                   "or service account) instead of a lock on the cache folder: for replicas in a cluster.")
@click.option("--notify", "notify_url", metavar="URL",
              help="POST a JSON message here on a failure, a gate failure, an invalid commit and a new "
                   "deployment (no secrets in it).")
@click.option("--notify-format", type=click.Choice(["json", "slack"]), default="json", show_default=True,
              help="Generic JSON, or Slack's incoming-webhook format.")
@click.pass_context
def reconcile(ctx: click.Context, repo: str, branch: str, spec_path: str, interval: float, once: bool,
              cache_dir: Path | None, listen: str | None, lease: str | None, notify_url: str | None,
              notify_format: str) -> None:
    """Keep MLflow and the backend converged on a branch: fetch, validate, apply, every interval.

    A commit that does not validate is never applied (the last good one stays); SIGTERM stops
    after the current steps, and a restart adopts running jobs. Only one daemon acts per cache
    folder; others wait as standbys.
    """
    import hashlib
    import signal
    from importlib.util import find_spec

    missing = [name for name in ("prometheus_client", "uvicorn") if find_spec(name) is None]
    if missing:
        raise UserError(f"tuneops reconcile needs {' and '.join(missing)}: pip install 'tuneops[daemon]'")
    from reconciler.daemon.loop import WEBHOOK_SECRET_ENV, Daemon, DaemonConfig

    if hasattr(sys.stdout, "reconfigure"):  # a log read live (kubectl logs, a file): line by line
        sys.stdout.reconfigure(line_buffering=True)
    address = None
    if listen:
        host, _, port = listen.rpartition(":")
        if not port.isdigit():
            raise UserError(f"--listen {listen}: expected HOST:PORT, e.g. 0.0.0.0:8080")
        address = (host or "0.0.0.0", int(port))
    if cache_dir is None:
        key = hashlib.sha256(f"{repo}\0{branch}\0{spec_path}".encode()).hexdigest()[:16]
        cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        cache_dir = cache_root / "tuneops" / "reconcile" / key
    secret = os.environ.get(WEBHOOK_SECRET_ENV)
    if address and not secret:
        click.echo(f"note: {WEBHOOK_SECRET_ENV} is not set: POST /hooks/git refuses every request", err=True)
    from reconciler.redaction import remember_secret
    from reconciler.ui.app import TOKEN_ENV, is_loopback, token_problem

    ui_token = os.environ.get(TOKEN_ENV) or None
    if token_problem(ui_token):
        raise UserError(token_problem(ui_token))
    remember_secret(ui_token)
    if address and not ui_token and not is_loopback(address[0]):
        click.echo(f"note: {TOKEN_ENV} is not set: the dashboard at / answers 401 beyond loopback", err=True)
    daemon = Daemon(DaemonConfig(repo=repo, cache_dir=cache_dir, branch=branch, path=spec_path,
                                 interval=interval, once=once, listen=address, lease=lease,
                                 notify_url=notify_url, notify_style=notify_format, ui_token=ui_token,
                                 webhook_secret=secret.encode() if secret else None),
                    say=lambda line: click.echo(line))
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    ctx.exit(daemon.run())  # a Lease's cluster that refuses, a --listen port taken: one error line



@cli.command(name="run")
@click.argument("command", type=click.Choice(["dataset", "finetune", "evaluate", "serve", "checkout"]))
@click.option("--job", "job_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The job file the reconciler wrote (docs/runtime.md).")
def run_job(command: str, job_file: Path) -> None:
    """Run one job: prepare a dataset, fine-tune, evaluate or serve.

    This is what the reconciler starts, as a local process or inside a Kubernetes Job; you
    rarely call it yourself. Under `torchrun` a fine-tune runs on every process, and only
    rank 0 records to MLflow. `checkout` is a pod's init container: it checks the spec
    repository's files the job reads out at the job's commit. Exits 0 when the job is done (an
    evaluation whose gates failed is done: the verdict is recorded), 1 when it could not run.
    """
    from reconciler.redaction import redact
    from reconciler.runtime import entry

    click.echo(redact(entry.run(command, job_file)))  # its errors say what to fix, in one line

