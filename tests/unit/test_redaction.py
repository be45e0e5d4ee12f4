"""One redaction for every line tuneops shows: user-info in any position, secret query
parameters and known secret values are masked; URIs lose their credentials before a job file
or manifest holds them, and jobs get them as MLflow's environment variables instead."""

from __future__ import annotations

import pytest

from reconciler.redaction import (
    credentials_environment,
    redact,
    remember_credentials_of,
    without_credentials,
)

NO_SECRETS: dict[str, str] = {}


@pytest.mark.parametrize("line, shown", [
    ("View run sft at: http://ci:s3cret@mlflow:5000/#/experiments/1/runs/ab",
     "View run sft at: http://ci:***@mlflow:5000/#/experiments/1/runs/ab"),
    ("cloning https://ghp_abcdef123456@github.com/org/specs.git",
     "cloning https://***@github.com/org/specs.git"),
    ("remote 'https://oauth2:glpat-xyz@gitlab.example.com/ml/specs.git' (fetch)",
     "remote 'https://oauth2:***@gitlab.example.com/ml/specs.git' (fetch)"),
    ("GET https://bucket.s3.amazonaws.com/x.parquet?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc123 200",
     "GET https://bucket.s3.amazonaws.com/x.parquet?X-Amz-Credential=***&X-Amz-Signature=*** 200"),
    ("https://hub.example.com/api/models?token=t0ps3cret&page=2",
     "https://hub.example.com/api/models?token=***&page=2"),
    ("https://x.blob.core.windows.net/c/f?sv=2024&sig=AbC%3D", "https://x.blob.core.windows.net/c/f?sv=2024&sig=***"),
    ("https://example.com/oauth?access_token=abc", "https://example.com/oauth?access_token=***"),
    # a password holding an unescaped `@`, a token in the fragment, GitLab's private_token
    ("https://u:p@ss@host/x", "https://u:***@host/x"),
    ("https://app.example.com/cb#access_token=SECRETVAL&x=1", "https://app.example.com/cb#access_token=***&x=1"),
    ("https://gitlab.example.com/api?private_token=glpat-abc", "https://gitlab.example.com/api?private_token=***"),
])
def test_credentials_in_any_position_of_a_uri_are_masked(line: str, shown: str):
    assert redact(line, NO_SECRETS) == shown


@pytest.mark.parametrize("line", [
    "Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)",
    "state from MLflow sqlite:////work/.tuneops/mlflow.db and the local backend",
    "cloning ssh://git@github.com/org/specs.git and git@github.com:org/specs.git",
    "mail tests@example.invalid about https://example.com/a?page=2&sort=name",
    "epoch 1/3 loss 0.41 at 12:30",
])
def test_lines_without_credentials_are_left_as_they_are(line: str):
    assert redact(line, NO_SECRETS) == line


def test_secret_values_from_the_environment_are_masked_wherever_they_appear():
    environment = {"HF_TOKEN": "hf_plantedTokenValue", "MLFLOW_TRACKING_PASSWORD": "pw-planted",
                   "MLFLOW_TRACKING_TOKEN": "abc", "HOME": "/root/homeval"}
    line = "token hf_plantedTokenValue, password pw-planted, short abc, home /root/homeval"
    assert redact(line, environment) == "token ***, password ***, short abc, home /root/homeval"


def test_credentials_of_a_tracking_uri_are_masked_even_when_quoted_alone():
    remember_credentials_of("https://ci:only-in-this-uri-7@mlflow.example.com")
    remember_credentials_of("https://token-in-the-user-name-9@mlflow.example.com")
    line = "basic auth as ci with only-in-this-uri-7; bearer token-in-the-user-name-9"
    assert redact(line, NO_SECRETS) == "basic auth as ci with ***; bearer ***"


@pytest.mark.parametrize("uri, stripped", [
    ("http://ci:s3cret@10.0.0.5:5000/mlflow", "http://10.0.0.5:5000/mlflow"),
    ("https://ghp_abc@github.com/org/specs.git", "https://github.com/org/specs.git"),
    ("http://mlflow:5000", "http://mlflow:5000"),
    ("git@github.com:org/specs.git", "git@github.com:org/specs.git"),
    ("sqlite:////home/a@b/.tuneops/mlflow.db", "sqlite:////home/a@b/.tuneops/mlflow.db"),
])
def test_uris_lose_their_credentials_before_a_job_file_holds_them(uri: str, stripped: str):
    assert without_credentials(uri) == stripped


@pytest.mark.parametrize("uri, environment", [
    ("http://ci:s3%40cret@mlflow:5000",
     {"MLFLOW_TRACKING_USERNAME": "ci", "MLFLOW_TRACKING_PASSWORD": "s3@cret"}),
    ("https://t0ken@mlflow.example.com", {"MLFLOW_TRACKING_TOKEN": "t0ken"}),
    ("http://mlflow:5000", {}),
    ("sqlite:////work/.tuneops/mlflow.db", {}),
])
def test_jobs_get_the_credentials_as_mlflows_own_variables(uri: str, environment: dict[str, str]):
    assert credentials_environment(uri) == environment
