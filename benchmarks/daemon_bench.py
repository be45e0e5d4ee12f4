"""The reconcile daemon as it runs: commit-to-sync latency, and a soak of idle ticks.

    python benchmarks/daemon_bench.py [--interval 10] [--pushes 5] [--ticks 500]

A bare remote and an author clone are made under benchmarks/.work/daemon/; the spec folder is a
BaseModel and a local Dataset (the quickstart's), tracked in the embedded SQLite MLflow, so no
server is needed. The daemon (`tuneops reconcile`, a real process) is started once:

- latency: the author pushes a change that needs no job (a description), and the clock runs
  until the daemon's /metrics shows that commit synced. Target: within the interval plus 5 s.
  Then the same with the webhook (a signed POST right after the push): the wake-up path.
- soak: with nothing to do, the daemon ticks `--ticks` times at a 1 s interval; its resident
  memory (VmRSS) is read at the first and the last tick. Target: growth under 10%.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import HERE, git_commit, print_table

ROOT = HERE.parent
QUICKSTART = ROOT / "specs-example" / "quickstart"
WORK = HERE / ".work" / "daemon"
SECRET = "benchmark-secret"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True
    ).stdout.strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return answer.read().decode()


def value(text: str, series: str) -> float | None:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def wait_synced(port: int, commit: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not synced(port, commit):
        if time.monotonic() > deadline:
            raise SystemExit(f"{commit[:12]} not synced in {timeout:.0f} s: see {WORK / 'daemon.log'}")
        time.sleep(0.05)


def synced(port: int, commit: str) -> bool:
    try:
        return value(metrics(port), f'tuneops_synced_commit_info{{commit="{commit}"}}') == 1.0
    except OSError:
        return False


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def ticks(port: int) -> int:
    text = metrics(port)
    return int(
        sum(float(v) for v in re.findall(r'^tuneops_reconcile_total\{outcome="\w+"\} (\S+)$', text, re.M))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--pushes", type=int, default=5)
    parser.add_argument("--ticks", type=int, default=500)
    parser.add_argument(
        "--tracking-uri",
        help="an MLflow server (default: the embedded SQLite file, which makes every tick import MLflow)",
    )
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    remote, author = WORK / "remote.git", WORK / "author"
    git(WORK, "init", "-q", "--bare", "-b", "main", str(remote))
    git(WORK, "clone", "-q", str(remote), str(author))
    specs = author / "specs"
    specs.mkdir()
    for name in ("base-model.yaml", "dataset.yaml"):
        shutil.copy(QUICKSTART / name, specs / name)
    for folder in ("data", "models"):
        shutil.copytree(QUICKSTART / folder, specs / folder)
    tracking = f"  trackingUri: {args.tracking_uri}\n" if args.tracking_uri else ""
    experiment = f"daemon-bench-{int(time.time())}"
    (specs / "tuneops.yaml").write_text(f"backend: local\nmlflow:\n{tracking}  experiment: {experiment}\n")
    (author / ".gitignore").write_text(".tuneops/\n")

    def push(message: str) -> str:
        git(author, "add", "-A")
        git(author, "commit", "-q", "-m", message)
        git(author, "push", "-q", "origin", "HEAD:main")
        return git(author, "rev-parse", "HEAD")

    first = push("start")
    port = free_port()
    log = (WORK / "daemon.log").open("w")
    env = {**os.environ, "TUNEOPS_WEBHOOK_SECRET": SECRET, "NO_COLOR": "1"}
    command = [
        sys.executable,
        "-m",
        "reconciler",
        "reconcile",
        "--repo",
        str(remote),
        "--path",
        "specs",
        "--interval",
        str(args.interval),
        "--cache-dir",
        str(WORK / "cache"),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    daemon = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_synced(port, first)  # the first sync builds the dataset
        latencies, woken = [], []
        for index in range(args.pushes):
            description = specs / "dataset.yaml"
            description.write_text(
                description.read_text().replace("description: ", f"description: revision {index}a, ", 1)
            )
            commit = push(f"describe {index}")
            pushed = time.perf_counter()
            wait_synced(port, commit)
            latencies.append(time.perf_counter() - pushed)
            description.write_text(
                description.read_text().replace(f"revision {index}a, ", f"revision {index}b, ", 1)
            )
            commit = push(f"describe {index} again")
            pushed = time.perf_counter()
            body = b'{"ref": "refs/heads/main"}'
            signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            urllib.request.urlopen(
                urllib.request.Request(
                    f"http://127.0.0.1:{port}/hooks/git",
                    data=body,
                    headers={"X-Hub-Signature-256": signature},
                ),
                timeout=5,
            )
            wait_synced(port, commit)
            woken.append(time.perf_counter() - pushed)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)

        # The soak: the same cache folder (it resumes), a 1 s interval, nothing to do.
        daemon = subprocess.Popen(
            [*command[: command.index("--interval") + 1], "1", *command[command.index("--interval") + 2 :]],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        while True:
            try:
                if ticks(port) >= 1:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        start_rss, started = rss_kib(daemon.pid), time.perf_counter()
        while ticks(port) < args.ticks:
            time.sleep(1)
        end_rss, elapsed = rss_kib(daemon.pid), time.perf_counter() - started
        done = ticks(port)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)

    print(
        f"daemon benchmark at {git_commit()}, interval {args.interval:g} s, {args.pushes} pushes, "
        f"{done} idle ticks, MLflow {args.tracking_uri or 'embedded SQLite'}"
    )
    print_table(
        [
            ["measure", "median", "max"],
            ["commit to sync, polling (s)", f"{statistics.median(latencies):.1f}", f"{max(latencies):.1f}"],
            ["commit to sync, webhook (s)", f"{statistics.median(woken):.1f}", f"{max(woken):.1f}"],
        ]
    )
    print(
        f"soak: {done} ticks in {elapsed:.0f} s ({elapsed / max(done - 1, 1):.2f} s a tick); daemon RSS "
        f"{start_rss / 1024:.1f} MiB at the first tick, {end_rss / 1024:.1f} MiB at the last "
        f"({(end_rss - start_rss) / start_rss:+.1%})"
    )


if __name__ == "__main__":
    main()
