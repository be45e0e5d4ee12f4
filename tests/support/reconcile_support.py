"""A spec repository in Git for reconciler tests: the quickstart copied into a temporary folder,
committed, pointed at a real MLflow server, and driven through the real `tuneops` CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

from tests.conftest import REPO_ROOT, CliResult

QUICKSTART = REPO_ROOT / "specs-example" / "quickstart"
GIT_ENV = {"GIT_AUTHOR_NAME": "tuneops tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
           "GIT_COMMITTER_NAME": "tuneops tests", "GIT_COMMITTER_EMAIL": "tests@example.invalid"}
# Short MLflow retry waits, so a test of an unreachable server takes seconds, not a quarter minute.
CLI_ENV = {"NO_COLOR": "1", "TUNEOPS_MLFLOW_RETRY_DELAYS": "0.2,0.5", "TOKENIZERS_PARALLELISM": "false"}


class SpecRepo:
    """The quickstart in its own Git repository, with its own MLflow experiment."""

    def __init__(self, root: Path, tracking_uri: str | None, *, own_model: bool = True):
        self.root = root
        shutil.copytree(QUICKSTART, root, ignore=shutil.ignore_patterns(".tuneops", "__pycache__"))
        # Registered model names are global on a server the tests share: each repo gets its own,
        # so version numbers start at 1 whatever ran before.
        self.model = f"fruit-sft-{uuid.uuid4().hex[:8]}" if own_model else "fruit-sft"
        if own_model:
            with (root / "fine-tune.yaml").open("a") as spec:
                spec.write(f"  register:\n    model: {self.model}\n")
        self.experiment = f"tests-{uuid.uuid4().hex[:8]}"
        settings = ["backend: local", "mlflow:", f"  experiment: {self.experiment}"]
        if tracking_uri:
            settings.insert(2, f"  trackingUri: {tracking_uri}")
        (root / "tuneops.yaml").write_text("\n".join(settings) + "\n")
        (root / ".gitignore").write_text(".tuneops/\n")
        self.remote: Path | None = None
        self.git("init", "-q", "-b", "main")
        self.commit("the quickstart")

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.root, env={**os.environ, **GIT_ENV},
                              capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def commit(self, message: str) -> str:
        """Commit everything (and push it, once the repository has a remote)."""
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        if self.remote is not None:
            self.git("push", "-q", "origin", "main")
        return self.git("rev-parse", "HEAD")

    def publish(self, remote: Path) -> Path:
        """A bare repository as `origin`, holding main: where pods check the spec files out."""
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
        self.git("remote", "add", "origin", str(remote))
        self.git("push", "-q", "-u", "origin", "main")
        self.remote = remote
        return remote

    def edit(self, file: str, old: str, new: str) -> None:
        path = self.root / file
        text = path.read_text()
        assert old in text, f"{old!r} not in {file}"
        path.write_text(text.replace(old, new, 1))

    def tuneops(self, *args: str, timeout: float = 900, env: dict[str, str] | None = None) -> CliResult:
        full_env = {**os.environ, **CLI_ENV, **(env or {})}
        full_env.pop("TUNEOPS_DEBUG", None)
        full_env.pop("MLFLOW_TRACKING_URI", None)
        done = subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=self.root, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
        return CliResult(done.returncode, done.stdout, done.stderr)

    def plan(self, *args: str) -> dict:
        """`tuneops plan --format json`, as {"Kind/name": action} plus the whole document."""
        result = self.tuneops("plan", ".", "--format", "json", *args)
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        document["by_resource"] = {f"{a['kind']}/{a['name']}": a["action"] for a in document["actions"]}
        return document

    def stop_servers(self) -> None:
        """Tests leave no server behind."""
        from reconciler.backends.local.backend import LocalBackend

        backend = LocalBackend(self.root / ".tuneops")
        for server in backend.observe().servers:
            backend.stop("Deployment", server.name)


def chat(url: str, question: str, max_tokens: int | None = 8, model: str = "fruit-bot") -> dict:
    """Ask the Deployment; max_tokens None leaves it to the server, as temperature always is."""
    body = {"model": model, "messages": [{"role": "user", "content": question}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    body = json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())
