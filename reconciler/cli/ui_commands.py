"""`tuneops ui`: the dashboard of a local project, served until Ctrl-C."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import click

from reconciler.cli.base import SPEC_PATH, UserError, cli


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise UserError(f"--listen {listen}: expected HOST:PORT, e.g. 127.0.0.1:8765")
    return (host.strip("[]") or "127.0.0.1"), int(port)


@cli.command()
@click.argument("path", type=SPEC_PATH, default=".")
@click.option("--listen", default="127.0.0.1:8765", show_default=True, metavar="HOST:PORT",
              help="Where to serve (port 0: any free port). Beyond loopback, TUNEOPS_UI_TOKEN must hold a "
                   "secret: every request then needs it (Authorization: Bearer, or /?token= once).")
@click.option("--refresh", type=click.FloatRange(min=0.5), default=2.0, show_default=True,
              help="Seconds between reads of MLflow and the backend while a page is open.")
def ui(path: Path, listen: str, refresh: float) -> None:
    """Serve the dashboard of the project at PATH: the resource graph, live; each resource's spec,
    runs, curves, gates, switches and log; and the plan. Read-only: it changes nothing.

    It reads what `tuneops status` reads, again every few seconds while a page is open, and the
    spec files as they are on disk now (a spec that stops validating shows its errors).
    """
    from importlib.util import find_spec

    if find_spec("uvicorn") is None:
        raise UserError("tuneops ui needs uvicorn: pip install 'tuneops[ui]'")
    from reconciler import redaction
    from reconciler.daemon.http import HttpServer, ListenError, RefusalLog
    from reconciler.project import NoProject, Project
    from reconciler.specs.loader import load, resolve_scope
    from reconciler.ui.app import TOKEN_ENV, Dashboard, is_loopback, token_problem
    from reconciler.ui.snapshot import SnapshotSource

    host, port = parse_listen(listen)
    root, _ = resolve_scope([path])
    loaded = load(root)
    if not loaded.is_project:
        raise NoProject(root, len(loaded.files))
    loopback = is_loopback(host)
    token = os.environ.get(TOKEN_ENV) or None
    if not loopback and not token:
        raise UserError(f"--listen {listen} can be reached from other machines: set {TOKEN_ENV} to a secret "
                        "first (a browser then opens /?token=<it> once), or listen on 127.0.0.1")
    if token_problem(token):
        raise UserError(token_problem(token))
    redaction.remember_secret(token)

    say = click.echo
    refused = RefusalLog(lambda line: say(redaction.redact(line)))
    source = SnapshotSource(lambda: Project.load(root), refresh=refresh)  # the specs as on disk now
    dashboard = Dashboard(source, loopback=loopback, token=token, poll_ms=round(refresh * 1000),
                          refused=refused)
    try:
        server = HttpServer((host, port), dashboard, say, refused)  # type: ignore[arg-type]
    except ListenError as error:
        raise UserError(str(error)) from None
    bound = server.sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    server.start()
    say(f"dashboard of {root} at http://{shown_host}:{bound}/ (read-only; Ctrl-C stops)")
    if not loopback:
        say(f"every request needs {TOKEN_ENV}: open http://{shown_host}:{bound}/?token=<it> once")
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    say("stopped")
