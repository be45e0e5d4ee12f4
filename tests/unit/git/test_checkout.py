"""The spec checkout a pod's init container makes (`tuneops run checkout`): the job's paths only,
at the job's commit, from a real bare repository; credentials from the mounted Secret's files,
never on a command line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.git.checkout import CheckoutError, credential_helper, git_environment, is_ssh_remote
from reconciler.jobs.jobfile import GitOrigin, JobFile, MlflowTarget, SpecCheckout
from reconciler.runtime.checkout import check_out
from tests.conftest import run_tuneops
from tests.support.reconcile_support import GIT_ENV


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, str]:
    """A bare remote whose first commit (no longer its tip) has data, a model and a big file."""
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "train.jsonl").write_text('{"text": "one"}\n')
    (work / "models" / "tiny").mkdir(parents=True)
    (work / "models" / "tiny" / "config.json").write_text("{}")
    (work / "huge.bin").write_bytes(b"0" * 4096)
    _git(work, "init", "-q", "-b", "main")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "first")
    first = _git(work, "rev-parse", "HEAD")
    (work / "data" / "train.jsonl").write_text('{"text": "two"}\n')
    _git(work, "commit", "-q", "-am", "second")
    _git(tmp_path, "clone", "-q", "--bare", str(work), "remote.git")
    return tmp_path / "remote.git", first


def job(remote: str, commit: str, into: Path, paths: tuple[str, ...]) -> JobFile:
    return JobFile(
        kind="Dataset",
        name="train",
        fingerprint="0" * 64,
        spec={},
        storage_root="/tmp/store",
        mlflow=MlflowTarget(tracking_uri="http://127.0.0.1:1"),
        git=GitOrigin(repo=remote, commit=commit),
        source=f"file://{into}/data/train.jsonl",
        checkout=SpecCheckout(into=str(into), paths=paths),
    )


def test_only_the_jobs_paths_are_checked_out_at_its_commit(remote, tmp_path: Path):
    bare, first = remote
    into = tmp_path / "pod" / "specs"
    checked = job(str(bare), first, into, ("data/train.jsonl", "models/tiny"))
    assert check_out(checked, tmp_path / "no-secret") == into
    assert (into / "data" / "train.jsonl").read_text() == '{"text": "one"}\n'  # the job's commit, not the tip
    assert (into / "models" / "tiny" / "config.json").is_file()
    assert not (into / "huge.bin").exists()
    assert check_out(checked, tmp_path / "no-secret") == into  # a restarted init container finds its own work


def test_the_init_container_command_runs_it_from_the_job_file(remote, tmp_path: Path):
    bare, first = remote
    into = tmp_path / "pod" / "specs"
    job_file = tmp_path / "job.json"
    job_file.write_text(job(str(bare), first, into, ("data/train.jsonl",)).to_json())
    result = run_tuneops(
        "run", "checkout", "--job", str(job_file), env={"TUNEOPS_GIT_CREDENTIALS": str(tmp_path)}
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"checked out data/train.jsonl at {first[:12]} into {into}\n"


def test_a_path_missing_at_the_commit_or_an_unknown_commit_is_one_clear_line(remote, tmp_path: Path):
    bare, first = remote
    with pytest.raises(
        CheckoutError,
        match=f"commit {first[:12]} of {bare} has no data/new.jsonl: was it committed and pushed",
    ):
        check_out(job(str(bare), first, tmp_path / "a", ("data/new.jsonl",)), tmp_path)
    job_file = tmp_path / "job.json"
    job_file.write_text(job(str(bare), "f" * 40, tmp_path / "b", ("data/train.jsonl",)).to_json())
    result = run_tuneops(
        "run", "checkout", "--job", str(job_file), env={"TUNEOPS_GIT_CREDENTIALS": str(tmp_path)}
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: git checkout failed for {bare} at ffffffffffff: ")
    assert "Traceback" not in result.output


def test_https_credentials_come_from_the_secrets_files_through_a_helper(tmp_path: Path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "username").write_text("ci-bot")
    (secret / "password").write_text("glpat-SECRET")
    env, options = git_environment("https://git.example.internal/ml/specs.git", secret, tmp_path)
    assert "glpat-SECRET" not in " ".join(options) and "glpat-SECRET" not in str(env)
    assert options[-1] == f"credential.helper={credential_helper(secret)}"
    # What git itself gets when it asks for credentials for the remote.
    done = subprocess.run(
        ["git", *options, "credential", "fill"],
        input="protocol=https\nhost=git.example.internal\n\n",
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "username=ci-bot\n" in done.stdout and "password=glpat-SECRET\n" in done.stdout


def test_ssh_needs_the_hosts_key_and_gets_a_private_copy_of_the_key(tmp_path: Path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "ssh-privatekey").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert is_ssh_remote("git@github.com:org/specs.git") and is_ssh_remote("ssh://git@host/specs.git")
    assert not is_ssh_remote("https://github.com/org/specs.git") and not is_ssh_remote(str(tmp_path))
    with pytest.raises(CheckoutError, match="has ssh-privatekey but no known_hosts: add the host key"):
        git_environment("git@github.com:org/specs.git", secret, tmp_path)
    (secret / "known_hosts").write_text("github.com ssh-ed25519 AAAA\n")
    env, _ = git_environment("git@github.com:org/specs.git", secret, tmp_path)
    assert (
        f"-o UserKnownHostsFile='{secret / 'known_hosts'}' -o StrictHostKeyChecking=yes"
        in env["GIT_SSH_COMMAND"]
    )
    assert ((tmp_path / "id").stat().st_mode & 0o777) == 0o600  # ssh refuses a key others can read


def test_without_git_in_the_image_the_checkout_says_so(remote, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    from reconciler.git import checkout as git_checkout
    from reconciler.git.command import GitUnavailable

    def no_git(*args: object, **kwargs: object) -> None:
        raise GitUnavailable("git is not installed or not runnable (Bad git executable.)")

    monkeypatch.setattr(git_checkout, "run", no_git)
    bare, first = remote
    with pytest.raises(CheckoutError, match="git is not installed in this image: the checkout needs it"):
        check_out(job(str(bare), first, tmp_path / "pod", ("data/train.jsonl",)), tmp_path)
