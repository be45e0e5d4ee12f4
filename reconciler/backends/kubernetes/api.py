"""A small JSON client for the Kubernetes API: the few verbs the backend needs, with the error
handling users need (403 names the missing RBAC verb, 409 re-reads, 429 and 5xx back off).

Credentials and the cluster address come from the official `kubernetes` client's loaders
(kubeconfig and context, exec and OIDC plugins, in-cluster service account), which are stable
across its releases. Requests are plain JSON over urllib3: the client's generated API classes
changed shape between releases 36 and 37, and the backend works on dicts (what the templates
render) anyway.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from reconciler.backends.base import BackendError

if TYPE_CHECKING:
    import urllib3

FIELD_MANAGER = "tuneops"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"  # the body is JSON, which is YAML


@dataclass(frozen=True)
class KindPath:
    """Where a namespaced kind lives in the API."""

    prefix: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str
    installed_by: str = ""  # for a custom resource: what installs its CRD in a cluster

    @property
    def group(self) -> str:
        return "" if self.prefix == "/api/v1" else self.prefix.split("/")[2]


KINDS: dict[str, KindPath] = {
    "ConfigMap": KindPath("/api/v1", "configmaps"),
    "Service": KindPath("/api/v1", "services"),
    "Pod": KindPath("/api/v1", "pods"),
    "Job": KindPath("/apis/batch/v1", "jobs"),
    "Deployment": KindPath("/apis/apps/v1", "deployments"),
    "HorizontalPodAutoscaler": KindPath("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "PodGroup": KindPath("/apis/scheduling.volcano.sh/v1beta1", "podgroups", "Volcano"),
    "JobSet": KindPath("/apis/jobset.x-k8s.io/v1alpha2", "jobsets", "JobSet (jobset.sigs.k8s.io)"),
    "PyTorchJob": KindPath("/apis/kubeflow.org/v1", "pytorchjobs", "the Kubeflow training operator"),
    "Lease": KindPath("/apis/coordination.k8s.io/v1", "leases"),
}
VERBS = {
    "GET": "get",
    "LIST": "list",
    "PATCH": "patch",
    "POST": "create",
    "DELETE": "delete",
    "PUT": "update",
}
RETRYABLE = {429, 500, 502, 503, 504}


class KubeApiError(BackendError):
    """A request the API server refused, in one line, with its HTTP status."""

    def __init__(self, message: str, status: int = 0, reason: str = ""):
        super().__init__(message)
        self.status, self.reason = status, reason

    @property
    def retryable(self) -> bool:  # type: ignore[override] - throttled (429) or the server's fault (5xx)
        return self.status in RETRYABLE


@dataclass
class Connection:
    """Where the API server is and how to authenticate to it."""

    host: str
    namespace: str = "default"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    # Authentication headers, asked for before every request: exec plugins and in-cluster
    # tokens rotate, and the client's configuration refreshes them.
    auth_headers: Callable[[], dict[str, str]] = dict
    source: str = ""  # where it was loaded from, for messages


def load_connection(context: str | None = None, namespace: str | None = None) -> Connection:
    """In-cluster service account when running in a pod without KUBECONFIG; else the kubeconfig
    (KUBECONFIG or ~/.kube/config) at `context` (default: its current context)."""
    try:
        from kubernetes import config as kube_config
        from kubernetes.client import Configuration
    except ImportError:
        raise BackendError(
            "the kubernetes backend needs the Kubernetes client: pip install 'tuneops[kubernetes]'"
        ) from None
    configuration = Configuration()
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ and not os.environ.get("KUBECONFIG")
    try:
        if in_cluster:
            kube_config.load_incluster_config(client_configuration=configuration)
            source = "in-cluster service account"
            default_namespace = _service_account_namespace()
        else:
            # Named each time: the client reads KUBECONFIG once, when it is first imported.
            config_file = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
            kube_config.load_kube_config(
                config_file=config_file, context=context, client_configuration=configuration
            )
            contexts, current = kube_config.list_kube_config_contexts(config_file=config_file)
            chosen = next((c for c in contexts if c["name"] == context), current) if context else current
            source = f"kubeconfig context {chosen['name']!r}"
            default_namespace = chosen.get("context", {}).get("namespace") or "default"
    except (kube_config.ConfigException, OSError, KeyError, TypeError) as error:
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        hint = f" (context {context!r})" if context else ""
        raise BackendError(
            f"cannot load Kubernetes credentials from {where}{hint}: {error}; set KUBECONFIG "
            "or kubernetes.context in tuneops.yaml"
        ) from None

    def auth_headers() -> dict[str, str]:
        # auth_settings() is the client's own answer (the token's key moved in release 36).
        return {
            setting["key"]: setting["value"]
            for setting in configuration.auth_settings().values()
            if setting.get("in") == "header" and setting.get("value")
        }

    return Connection(
        host=configuration.host.rstrip("/"),
        namespace=namespace or default_namespace,
        ca_file=configuration.ssl_ca_cert,
        cert_file=configuration.cert_file,
        key_file=configuration.key_file,
        verify=bool(configuration.verify_ssl),
        auth_headers=auth_headers,
        source=source,
    )


def _service_account_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as handle:
            return handle.read().strip() or "default"
    except OSError:
        return "default"


class KubeApi:
    """GET, LIST (paged), server-side apply, DELETE and pod logs against one API server."""

    def __init__(
        self,
        connection: Connection,
        *,
        attempts: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        import urllib3

        self.connection = connection
        self.attempts, self.backoff, self.max_backoff, self.timeout = attempts, backoff, max_backoff, timeout
        self.sleep = sleep
        self.pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=4,
            cert_reqs="CERT_REQUIRED" if connection.verify else "CERT_NONE",
            ca_certs=connection.ca_file,
            cert_file=connection.cert_file,
            key_file=connection.key_file,
        )

    # -- verbs -------------------------------------------------------------------------------

    def list(self, kind: str, namespace: str, label_selector: str = "", page_size: int = 500, *,
             missing_ok: bool = False) -> list[dict]:
        """Every object of `kind` matching the selector, following `continue` pages. With
        `missing_ok`, a kind the cluster does not serve (its CRD is not installed) has none."""
        items: list[dict] = []
        token = ""
        while True:
            query = {"labelSelector": label_selector, "limit": str(page_size)}
            if token:
                query["continue"] = token
            try:
                page = self._json("LIST", kind, namespace, query=query)
            except KubeApiError as error:
                if missing_ok and error.status == 404:
                    return []
                raise
            kind_items = page.get("items") or []
            api_version = page.get("apiVersion", "")
            for item in kind_items:  # list items omit kind and apiVersion
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", api_version)
            items += kind_items
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        try:
            return self._json("GET", kind, namespace, name)
        except KubeApiError as error:
            if error.status == 404:
                return None
            raise

    def apply(self, obj: Mapping[str, Any], *, force: bool = True) -> dict:
        """Server-side apply as field manager `tuneops`. `force` takes back fields someone else
        changed (that is how drift is restored). A 409 (the object changed while we applied)
        re-reads it and applies again."""
        kind, meta = obj["kind"], obj["metadata"]
        body = json.dumps(obj).encode()
        query = {"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"}
        for attempt in range(self.attempts):
            try:
                return self._json(
                    "PATCH",
                    kind,
                    meta["namespace"],
                    meta["name"],
                    query=query,
                    body=body,
                    content_type=APPLY_CONTENT_TYPE,
                )
            except KubeApiError as error:
                if error.status != 409 or attempt == self.attempts - 1:
                    raise
                self.get(kind, meta["namespace"], meta["name"])  # re-read, then apply again
                self.sleep(self._delay(attempt))
        raise AssertionError("unreachable")

    def create(self, obj: Mapping[str, Any]) -> dict:
        """POST: fails with 409 when the object exists (how a candidate learns it lost a race)."""
        meta = obj["metadata"]
        return self._json("POST", obj["kind"], meta["namespace"], body=json.dumps(obj).encode(),
                          content_type="application/json")

    def replace(self, obj: Mapping[str, Any]) -> dict:
        """PUT with the resourceVersion that was read: 409 when someone wrote in between."""
        meta = obj["metadata"]
        return self._json("PUT", obj["kind"], meta["namespace"], meta["name"], body=json.dumps(obj).encode(),
                          content_type="application/json")

    def delete(self, kind: str, namespace: str, name: str, propagation: str = "Background") -> bool:
        """Delete one object (its dependents by garbage collection, in the background); False when
        it was already gone."""
        body = json.dumps(
            {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        ).encode()
        try:
            self._json(
                "DELETE",
                kind,
                namespace,
                name,
                query={"propagationPolicy": propagation},
                body=body,
                content_type="application/json",
            )
        except KubeApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def pod_log(
        self, namespace: str, pod: str, *, tail: int | None = None, follow: bool = False
    ) -> Iterator[str]:
        """A pod's log, line by line (streamed when following)."""
        query = {"follow": "true" if follow else "false"}
        if tail is not None:
            query["tailLines"] = str(tail)
        response = self._send(
            "GET",
            f"{KINDS['Pod'].prefix}/namespaces/{quote(namespace)}/pods/{quote(pod)}/log",
            query,
            verb="get",
            what=f"pods/log {pod!r}",
            stream=True,
            timeout=None if follow else self.timeout,
        )
        try:
            pending = b""
            for chunk in response.stream(8192):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", errors="replace") + "\n"
            if pending:
                yield pending.decode("utf-8", errors="replace") + "\n"
        finally:
            response.release_conn()

    # -- transport ---------------------------------------------------------------------------

    def path(self, kind: str, namespace: str, name: str | None = None) -> str:
        where = KINDS[kind]
        path = f"{where.prefix}/namespaces/{quote(namespace)}/{where.plural}"
        return f"{path}/{quote(name)}" if name else path

    def _json(
        self,
        verb: str,
        kind: str,
        namespace: str,
        name: str | None = None,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> dict:
        where = KINDS[kind]
        what = f"{where.plural}{'.' + where.group if where.group else ''}" + (f" {name!r}" if name else "")
        method = "GET" if verb == "LIST" else verb
        response = self._send(
            method,
            self.path(kind, namespace, name),
            query or {},
            verb=VERBS[verb],
            what=what,
            body=body,
            content_type=content_type,
        )
        try:
            return json.loads(response.data or b"{}")
        except ValueError:
            raise KubeApiError(
                f"the Kubernetes API at {self.connection.host} answered {what} with "
                "something that is not JSON",
                response.status,
            ) from None

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        *,
        verb: str,
        what: str,
        body: bytes | None = None,
        content_type: str | None = None,
        stream: bool = False,
        timeout: float | None = -1.0,
    ) -> urllib3.BaseHTTPResponse:
        import urllib3

        url = (
            self.connection.host
            + path
            + ("?" + urlencode({k: v for k, v in query.items() if v != ""}) if query else "")
        )
        headers = {"Accept": "application/json", "User-Agent": "tuneops"}
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in range(self.attempts):
            headers.update(self.connection.auth_headers())
            try:
                response = self.pool.request(
                    method,
                    url,
                    body=body,
                    headers=headers,
                    preload_content=not stream,
                    timeout=self.timeout if timeout == -1.0 else timeout,
                    retries=False,
                )
            except urllib3.exceptions.HTTPError as error:
                if attempt == self.attempts - 1:
                    raise KubeApiError(
                        f"cannot reach the Kubernetes API at {self.connection.host} "
                        f"({self.connection.source}): {_cause(error)}"
                    ) from None
                self.sleep(self._delay(attempt))
                continue
            if 200 <= response.status < 300:
                return response
            data = response.data if not stream else response.read()
            retry_after = response.headers.get("Retry-After")
            if response.status in RETRYABLE and attempt < self.attempts - 1:
                self.sleep(self._delay(attempt, retry_after))
                continue
            error = self._error(response.status, data, verb, what)
            if error.retryable and retry_after and retry_after.isdigit():
                error.delay = float(retry_after)  # the server said when: the daemon waits so long
            raise error
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), self.max_backoff)
        return min(self.backoff * 2**attempt, self.max_backoff)

    def _error(self, status: int, data: bytes, verb: str, what: str) -> KubeApiError:
        try:
            detail = json.loads(data or b"{}")
        except ValueError:
            detail = {}
        message = (
            detail.get("message") or (data or b"").decode("utf-8", errors="replace")[:200] or "no message"
        )
        reason = detail.get("reason", "")
        namespace = self.connection.namespace
        if status == 401:
            return KubeApiError(
                f"the Kubernetes API at {self.connection.host} refused the credentials of "
                f"{self.connection.source} (401): log in again or fix the kubeconfig",
                status,
                reason,
            )
        if status == 403:
            resource = what.split(" ")[0]
            return KubeApiError(
                f"forbidden: tuneops needs RBAC verb {verb!r} on {resource} in namespace "
                f"{namespace!r} ({message}); grant it in the Role (docs/kubernetes.md lists "
                "each verb)",
                status,
                reason,
            )
        hint = ""
        installed_by = next((k.installed_by for k in KINDS.values() if what.startswith(f"{k.plural}.")), "")
        if status == 404 and installed_by and not detail.get("details", {}).get("name"):
            hint = f"; is {installed_by} installed in the cluster? Its CRD serves this kind"
        return KubeApiError(
            f"Kubernetes API: {verb} {what} failed ({status} {reason or ''}): {message}{hint}".replace(
                " )", ")"),
            status,
            reason,
        )


def _cause(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error)
