"""`tuneops ui` as a user starts it: a real process on a free port, read over HTTP; the mistakes
it refuses in one line; and a credential in the project's settings that no page shows."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import run_tuneops
from tests.support.reconcile_support import CLI_ENV
from tests.support.runtime_support import free_port

PASSWORD = "S3cretPassw0rd-for-ui"


@contextmanager
def serving(root: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    full_env = {**os.environ, **CLI_ENV, **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen([sys.executable, "-m", "reconciler", "ui", str(root), "--listen",
                                f"127.0.0.1:{port}", *args], env=full_env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "tuneops ui did not listen"
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
        assert f"dashboard of {root.resolve()} at {url}/" in output, output
        assert process.returncode == 0, output


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_project_nothing_was_applied_to_is_shown_pending_with_its_plan(valid_repo: Path):
    with serving(valid_repo) as url:
        status, page = get(url + "/")
        assert status == 200, page
        assert 'data-resource="FineTune/sft" data-phase="Pending"' in page
        status, plan = get(url + "/plan")
        assert status == 200 and "create" in plan and "FineTune/sft" in plan
        status, spec = get(url + "/resources/FineTune/sft")
        assert status == 200 and "kind: FineTune" in spec and "fine-tune.yaml" in spec
        assert get(url + "/static/../reconciler/ui/app.py")[0] == 404
        assert get(url + "/resources/FineTune/%2e%2e")[0] == 404
        huge = get(url + "/", headers={"X-Padding": "x" * 20_000})[0]
        assert huge == 431


def test_a_credential_in_the_projects_settings_is_never_rendered(valid_repo: Path):
    port = free_port()  # nothing listens there: reading the state fails, and says where
    (valid_repo / "tuneops.yaml").write_text(f"mlflow:\n  trackingUri: http://bob:{PASSWORD}@127.0.0.1:{port}/\n")
    with serving(valid_repo, env={"TUNEOPS_MLFLOW_RETRY_DELAYS": "0.1"}) as url:
        for path in ("/", "/plan", "/api/state", "/resources/FineTune/sft"):
            status, page = get(url + path)
            assert PASSWORD not in page, path
        status, page = get(url + "/")
        assert status == 200 and f"127.0.0.1:{port}" in page  # the problem names the server, masked


def test_mistakes_are_refused_in_one_line(valid_repo: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_tuneops("ui", str(empty))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no tuneops" in result.output.lower(), result.output
    result = run_tuneops("ui", str(valid_repo), "--listen", "0.0.0.0:0", env={"TUNEOPS_UI_TOKEN": ""})
    assert result.exit_code == 1 and "TUNEOPS_UI_TOKEN" in result.stderr, result.output
    result = run_tuneops("ui", str(valid_repo), "--listen", "0.0.0.0:0", env={"TUNEOPS_UI_TOKEN": "short"})
    assert result.exit_code == 1 and "too short" in result.stderr, result.output
    result = run_tuneops("ui", str(valid_repo), "--listen", "localhost")
    assert result.exit_code == 1 and "expected HOST:PORT" in result.stderr, result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        result = run_tuneops("ui", str(valid_repo), "--listen", f"127.0.0.1:{taken.getsockname()[1]}")
    assert result.exit_code == 1 and "cannot listen on" in result.stderr and "Traceback" not in result.output


def test_the_wheel_carries_the_dashboards_files_and_they_fetch_nothing_from_elsewhere(tmp_path: Path):
    """The page works offline from the wheel: its script and stylesheet ship inside it, and
    neither names a URL of another host (no CDN, no web font)."""
    import re
    import zipfile

    from tests.conftest import REPO_ROOT

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(REPO_ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("tuneops-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in ("ui.js", "ui.css"):
            text = archive.read(f"reconciler/ui/static/{name}").decode()
            assert not re.search(r"(https?:)?//[\w.-]+\.\w+/", text), name
            assert "@import" not in text and "url(" not in text, name
