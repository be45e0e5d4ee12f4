"""The daemon's mirror of the spec repository, fetched over HTTP from a remote that wants a token:
the token goes to git in its environment, as a header for that host, and is written nowhere."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.git.mirror import GitMirror, MirrorError
from tests.conftest import run_tuneops
from tests.support.reconcile_support import GIT_ENV

TOKEN = "ghp_" + "mirrortoken" * 3


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def token_remote(tmp_path: Path):
    """A bare repository served as git's "dumb" HTTP protocol (static files), refusing any request
    without `Authorization: Basic base64(TOKEN:)`; yields (URL without credentials, commit, seen)."""
    served = tmp_path / "served"
    bare = served / "specs.git"
    work = tmp_path / "work"
    work.mkdir()
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(work, "init", "-q", "-b", "main")
    (work / "tuneops.yaml").write_text("backend: local\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "specs")
    git(work, "push", "-q", str(bare), "main")
    git(bare, "update-server-info")
    expected = "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode()
    seen: list[str] = []

    class TokenRequired(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization") or "")
            if seen[-1] != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(TokenRequired, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/specs.git", git(work, "rev-parse", "HEAD"), seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_token_in_the_remote_reaches_git_as_a_header_and_is_written_nowhere(tmp_path: Path, token_remote):
    url, commit, seen = token_remote
    with_token = url.replace("http://", f"http://{TOKEN}@")
    mirror = GitMirror(with_token, "main", tmp_path / "cache" / "checkout")
    assert mirror.sync() == commit
    assert seen and all(header.startswith("Basic ") for header in seen)  # every request carried it
    config = (tmp_path / "cache" / "checkout" / ".git" / "config").read_text()
    assert TOKEN not in config and url in config
    assert mirror.sync() == commit  # and again, from the clone it made


def test_a_checkout_that_kept_the_token_in_its_config_loses_it_on_the_next_sync(tmp_path: Path, token_remote):
    url, commit, _ = token_remote
    with_token = url.replace("http://", f"http://{TOKEN}@")
    checkout = tmp_path / "cache" / "checkout"
    header = "Authorization: Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode()
    subprocess.run(["git", "-c", f"http.extraHeader={header}", "clone", "-q", "--no-checkout", with_token,
                    str(checkout)], check=True, capture_output=True)
    assert TOKEN in (checkout / ".git" / "config").read_text()  # as an earlier tuneops left it
    assert GitMirror(with_token, "main", checkout).sync() == commit
    assert TOKEN not in (checkout / ".git" / "config").read_text()


def test_without_the_token_the_remote_refuses_and_the_error_names_it_without_credentials(
        tmp_path: Path, token_remote):
    url, _, _ = token_remote
    with pytest.raises(MirrorError) as refused:
        GitMirror(url, "main", tmp_path / "cache" / "checkout").sync()
    assert f"git clone of {url} (main) failed" in str(refused.value)


def test_the_daemon_takes_the_repository_from_its_environment_off_its_command_line(
        tmp_path: Path, token_remote):
    url, _, seen = token_remote
    result = run_tuneops("reconcile", "--once", "--cache-dir", str(tmp_path / "cache"),
                         env={"TUNEOPS_SPEC_REPO": url.replace("http://", f"http://{TOKEN}@")}, timeout=120)
    assert seen, result.output  # it fetched, with the token, from the repository the variable names
    assert result.exit_code == 0 and f"reconciling {url} (main)" in result.output, result.output
    assert TOKEN not in result.output


def test_what_the_daemon_starts_inherits_neither_its_webhook_secret_nor_the_repository_url(
        monkeypatch: pytest.MonkeyPatch):
    """The daemon applies in-process: the jobs and servers its backend starts get their
    environment from job_environment, which leaves the daemon's own variables out."""
    from reconciler.backends.local.backend import job_environment

    monkeypatch.setenv("TUNEOPS_SPEC_REPO", f"https://{TOKEN}@git.example.invalid/specs.git")
    monkeypatch.setenv("TUNEOPS_WEBHOOK_SECRET", "hook-secret-value")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example.invalid")
    child = job_environment()
    assert "TUNEOPS_SPEC_REPO" not in child and "TUNEOPS_WEBHOOK_SECRET" not in child
    assert child["MLFLOW_TRACKING_URI"] == "http://mlflow.example.invalid"  # what applies need stays


def test_without_git_installed_the_mirror_fails_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from reconciler.git import mirror
    from reconciler.git.command import GitUnavailable

    def no_git(*args: object, **kwargs: object) -> None:
        raise GitUnavailable("git is not installed or not runnable (Bad git executable.)")

    monkeypatch.setattr(mirror, "run", no_git)
    with pytest.raises(MirrorError, match=r"^git clone failed: git is not installed or not runnable \(Bad"):
        GitMirror(f"https://{TOKEN}@git.example.invalid/specs.git", "main", tmp_path / "checkout").sync()
