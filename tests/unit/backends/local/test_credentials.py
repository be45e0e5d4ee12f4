"""What a local job prints comes back redacted, and what it was given is readable by its owner
only: real processes print credentials; the log read back, the failure message, the job file
and the job's environment are checked."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from reconciler.backends.local.backend import LocalBackend
from reconciler.jobs.jobfile import JobFile, MlflowTarget
from reconciler.project import open_backend

FINGERPRINT = "c" * 64
PLANTED_HF_TOKEN = "hf_plantedInTheEnvironment"
# What a careless library prints: MLflow's run link with the URI it was given, a signed URL,
# a token in the user-name position, the Hub token itself.
PRINTED = [
    "View run sft at: http://ci:pw-planted-1@mlflow:5000/#/experiments/1/runs/0a",
    "GET https://bucket.s3.amazonaws.com/x?X-Amz-Credential=AKIAPLANTED&X-Amz-Signature=sigplanted",
    "cloning https://ghp_plantedtoken@github.com/org/specs.git",
    f"using token {PLANTED_HF_TOKEN}",
]
PLANTED = ("pw-planted-1", "AKIAPLANTED", "sigplanted", "ghp_plantedtoken", PLANTED_HF_TOKEN)


def printing_job(exit_code: int) -> list[str]:
    code = f"import sys\nfor line in {PRINTED!r}: print(line)\nsys.exit({exit_code})"
    return [sys.executable, "-c", code]


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalBackend:
    monkeypatch.setenv("HF_TOKEN", PLANTED_HF_TOKEN)
    return LocalBackend(tmp_path / ".tuneops")


def test_logs_read_back_are_redacted_line_by_line(backend: LocalBackend):
    backend.start_process("Dataset", "chats", FINGERPRINT, printing_job(0))
    backend.wait("Dataset", "chats", FINGERPRINT, poll=0.05)
    shown = "".join(backend.logs("Dataset", "chats"))
    assert shown.splitlines() == [
        "View run sft at: http://ci:***@mlflow:5000/#/experiments/1/runs/0a",
        "GET https://bucket.s3.amazonaws.com/x?X-Amz-Credential=***&X-Amz-Signature=***",
        "cloning https://***@github.com/org/specs.git",
        "using token ***",
    ]
    assert "".join(backend.logs("Dataset", "chats", tail=1)) == "using token ***\n"


def test_the_last_log_line_of_a_failed_job_is_redacted_in_its_message(backend: LocalBackend):
    backend.start_process("Dataset", "chats", FINGERPRINT, printing_job(3))
    failed = backend.wait("Dataset", "chats", FINGERPRINT, poll=0.05)
    assert failed.message == "exited with 3: using token ***"
    assert failed == backend.observe().job("Dataset", "chats", FINGERPRINT)


def test_job_files_and_logs_are_readable_by_their_owner_only(backend: LocalBackend):
    job = JobFile(kind="Dataset", name="chats", fingerprint=FINGERPRINT, spec={}, storage_root="/tmp/store",
                  mlflow=MlflowTarget(tracking_uri="http://mlflow:5000"))
    started = backend.start_process("Dataset", "chats", FINGERPRINT, lambda job_file: printing_job(0),
                                    job_text=job.to_json())
    backend.wait("Dataset", "chats", FINGERPRINT, poll=0.05)
    (job_file,) = (backend.state_dir / "jobs").glob("*.json")
    for path in (job_file, Path(started.log)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_jobs_get_the_tracking_uris_credentials_in_their_environment(tmp_path: Path):
    from reconciler.config import ProjectSettings

    settings = ProjectSettings.model_validate({"mlflow": {"trackingUri": "https://ci:pw-planted-2@mlflow"}})
    backend = open_backend(settings, tmp_path / ".tuneops")
    assert backend.credentials == {"MLFLOW_TRACKING_USERNAME": "ci",
                                   "MLFLOW_TRACKING_PASSWORD": "pw-planted-2"}
