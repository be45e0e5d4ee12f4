"""Credentials never leave their place: the one redaction for everything tuneops prints or writes.

Secrets reach tuneops in URIs (user-info, query-string tokens of signed URLs) and in the
environment (HF_TOKEN, MLflow's own variables). URIs written into job files and manifests lose
their user-info (`without_credentials`); the credentials reach a job only through its
environment (`credentials_environment`); and every line a user is shown (command output, the
logs of jobs and servers read back, failure messages) passes through `redact`, which masks
user-info in any position, secret query parameters, and the known secret values themselves.
Standard library only: the control plane imports it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
# Environment variables whose values are credentials wherever they appear in a line.
SECRET_ENVIRONMENT = (
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GITHUB_TOKEN", "GH_TOKEN", "GITLAB_TOKEN",
)
# Shorter values are masked inside URIs only: masking every "abc" in a log would hide the log.
MIN_SECRET_LENGTH = 6
# What only the reconcile daemon may hold: its webhook's secret, its dashboard's token and the
# spec repository's URL (which may carry a token). The jobs and servers it starts never inherit
# them (a job's code could print them).
DAEMON_ONLY_VARIABLES = frozenset({"TUNEOPS_WEBHOOK_SECRET", "TUNEOPS_SPEC_REPO", "TUNEOPS_UI_TOKEN"})
# Query parameters that carry a credential: tokens, API keys, signed-URL signatures (S3, Azure).
SECRET_QUERY_PARAMETERS = (
    "token", "access_token", "refresh_token", "id_token", "auth", "api_key", "apikey", "key",
    "password", "passwd", "secret", "client_secret", "signature", "sig", "x-amz-signature",
    "x-amz-credential", "x-amz-security-token", "x-goog-signature", "x-goog-credential",
    "private_token", "x-api-key", "credential", "session_token",
)
# Schemes whose user name is a login, never a secret (`ssh://git@host/org/repo.git`).
LOGIN_SCHEMES = ("ssh", "git+ssh", "ssh+git", "sftp")

# The password runs to the last `@` of the authority: a password may hold an unescaped `@`.
_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*)://(?P<user>[^\s/?#@:\"'<>]*)"
                        r"(?::(?P<password>[^\s/?#\"'<>]*))?@(?=[^\s/?#@\"'<>]*(?:[\s/?#\"'<>]|$))")
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;#](?:" + "|".join(re.escape(name) for name in SECRET_QUERY_PARAMETERS) + r")=)"
    r"(?P<value>[^&#;\s\"'<>]+)", re.IGNORECASE)
_remembered: set[str] = set()


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with every credential it holds masked: user-info of URIs, secret query parameters,
    and the values of secret environment variables and of credentials seen in a tracking URI or
    Git remote (see `remember_credentials_of`)."""
    return redactor(environ)(text) if text else text


def redactor(environ: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """`redact` with the secret values looked up once, for code that masks thousands of short
    texts in a row (a dashboard page): the lookup, not the masking, is what each call costs."""
    values = sorted(_secret_values(environ), key=len, reverse=True)

    def masked(text: str) -> str:
        if not text:
            return text
        for value in values:
            text = text.replace(value, MASK)
        text = _USER_INFO.sub(_masked_user_info, text)
        return _SECRET_QUERY.sub(lambda found: found["name"] + MASK, text)

    return masked


def redact_lines(lines: Iterable[str]) -> Iterator[str]:
    """Each line redacted as it comes: for logs read back, followed or not."""
    for line in lines:
        yield redact(line)


def without_credentials(uri: str) -> str:
    """The URI with its user-info dropped, for a job file or manifest: the credentials travel in
    the job's environment instead. A scp-like Git remote (`git@host:org/repo.git`) holds none."""
    if "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # malformed (`https://[::1`): shown masked, never a traceback
        return redact(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def credentials_environment(tracking_uri: str) -> dict[str, str]:
    """The credentials of an MLflow URI as the variables MLflow's client reads: a user and a
    password become MLFLOW_TRACKING_USERNAME/PASSWORD (basic auth); a token alone in the user-name
    position (`https://TOKEN@host`) becomes MLFLOW_TRACKING_TOKEN (a bearer token)."""
    user, password = uri_credentials(tracking_uri)
    if user and password is not None:
        return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
    if user:
        return {"MLFLOW_TRACKING_TOKEN": user}
    return {}


def uri_credentials(uri: str) -> tuple[str | None, str | None]:
    """(user, password) of a URI's user-info, percent-decoded; (None, None) without any."""
    if "://" not in uri:
        return None, None
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None, None
    if "@" not in parts.netloc:
        return None, None
    return (unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password is not None else None)


def remember_credentials_of(uri: str | None) -> None:
    """Mask this URI's password or token wherever it appears later, even outside a URI (an error
    message may quote it alone)."""
    if not uri or uri.split("://", 1)[0].lower() in LOGIN_SCHEMES:
        return
    user, password = uri_credentials(uri)
    for value in (password,) if password is not None else (user,):
        if value and len(value) >= MIN_SECRET_LENGTH:
            _remembered.add(value)


def remember_secret(value: str | None) -> None:
    """Mask this value wherever it appears later (a judge's API key, read from the variable its
    spec names): a secret tuneops knows by where it came from, not by a fixed variable name."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        _remembered.add(value)


def _secret_values(environ: Mapping[str, str] | None) -> set[str]:
    environ = os.environ if environ is None else environ
    values = {environ.get(name, "") for name in SECRET_ENVIRONMENT} | _remembered
    return {value for value in values if len(value) >= MIN_SECRET_LENGTH}


def _masked_user_info(found: re.Match[str]) -> str:
    scheme, user, password = found["scheme"], found["user"], found["password"]
    if password is not None:
        return f"{scheme}://{user}:{MASK}@"
    if scheme.lower() in LOGIN_SCHEMES:
        return found.group(0)
    return f"{scheme}://{MASK}@"
