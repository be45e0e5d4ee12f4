"""A stateful FAKE of the Kubernetes API server, served over real HTTP on 127.0.0.1, for tests.

The machines that run the tests have no cluster, yet the Kubernetes backend should be exercised
through its real HTTP client (JSON REST over urllib3), not through mocks. This fake keeps objects in
memory and answers the paths the backend uses with the real server's shapes: objects with metadata
(uid, resourceVersion, generation, managedFields), paginated lists, `Status` errors, server-side apply
with field ownership and conflicts, merge patches, status subresources, cascading deletes and pod
logs. What controllers would do (a Job's pods start, fail, succeed; a Deployment becomes available)
the tests drive through helper methods, and faults (403, 429, 500...) they inject.

It is a fake. It does NOT model:
- watches (`watch=true` is refused with 400) or streaming logs (`follow=true` returns the whole text
  and closes the response); API discovery (`/api`, `/apis`, `/version`), OpenAPI, cluster-scoped
  kinds, kinds other than the eleven in `RESOURCES` (a kind in `unserved` answers 404 as a cluster
  without its CRD does), deletecollection, protobuf, Table or YAML responses;
- authentication (the bearer token is only checked when `require_token` is set, and then only for
  equality: no 401 for expiry, no client certificates) and RBAC (403 only through `inject`), audit;
- admission, defaulting and schema validation: objects are stored as sent (no default replicas,
  no 422 for unknown or missing fields);
- the real server-side apply merge: associative lists (containers by name, ports by port, env by
  name) are not merged by key; every list is replaced whole and owned as one leaf
  (`"f:containers": {}`); a null in an applied body just removes the field;
- strategic merge patch semantics (`$patch`, `$retainKeys`, merging lists by key): a strategic merge
  patch is applied as a JSON merge patch (RFC 7386); JSON patch (`application/json-patch+json`) gets 415;
- finalizers, graceful and foreground deletion: a delete removes the object at once and, unless
  `Orphan`, its dependents too (no garbage collection delay, no deletionTimestamp);
- scheduling, nodes, kubelets and the Job, Deployment and ReplicaSet controllers (tests play them
  with `start_pod`, `fail_pod`, `complete_pod`, `complete_job`, `set_deployment_available`): no
  backoff delay between pod retries, no podFailurePolicy or backoffLimitPerIndex, no
  ttlSecondsAfterFinished cleanup (tests `remove` finished Jobs), no ReplicaSets or Deployment pods,
  no HPA scaling; an Indexed Job runs a pod per index at once, and one that fails for good has its
  other running pods deleted;
- Kueue, Volcano or any other controller: PodGroups and queue labels are stored, never acted on; the
  JobSet and Kubeflow training-operator controllers are played by `tests/support/fake_controllers.py`;
- list snapshots: a paged list reads live state, continue tokens never expire (no 410), and the
  `resourceVersion`/`resourceVersionMatch` query parameters are ignored;
- event objects, conditions beyond those the helpers write, and pod IPs, nodes, images pulled.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import random
import re
import socket
import string
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

DEFAULT_USER = "system:serviceaccount:default:tuneops"
DEFAULT_BACKOFF_LIMIT = 6  # what the API server defaults spec.backoffLimit to
APPLY = "application/apply-patch+yaml"
MERGE_PATCHES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
JSON_TYPES = ("application/json", "application/yaml", "text/yaml", "application/x-yaml")
PROPAGATION_POLICIES = ("Background", "Foreground", "Orphan")
# Metadata the server owns: never taken from a request body, never in a manager's field set.
SYSTEM_METADATA = ("uid", "creationTimestamp", "generation", "resourceVersion", "managedFields", "selfLink",
                   "deletionTimestamp", "deletionGracePeriodSeconds")
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
           405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType",
           422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
           504: "Timeout"}
NO_ROUTE = "the server could not find the requested resource"


@dataclass(frozen=True)
class Resource:
    """One served kind: where it lives in the URL space and how errors name it."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    has_status: bool  # served with a status subresource: main-resource writes leave status alone

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`jobs.batch`, or just `pods` for the core group, as the server's messages write it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES = (
    Resource("", "v1", "configmaps", "ConfigMap", False),
    Resource("", "v1", "services", "Service", True),
    Resource("", "v1", "pods", "Pod", True),
    Resource("", "v1", "secrets", "Secret", False),
    Resource("batch", "v1", "jobs", "Job", True),
    Resource("apps", "v1", "deployments", "Deployment", True),
    Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", False),
    Resource("scheduling.volcano.sh", "v1beta1", "podgroups", "PodGroup", True),
    Resource("jobset.x-k8s.io", "v1alpha2", "jobsets", "JobSet", True),
    Resource("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob", True),
)
PODS = RESOURCES[2]
JOBS = RESOURCES[4]
DEPLOYMENTS = RESOURCES[5]

CORE_PATH = re.compile(r"^/api/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)"
                       r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?/?$")
GROUP_PATH = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)"
                        r"/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)"
                        r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?/?$")


@dataclass
class Request:
    """One request the fake served, so tests can assert what the client sent and what it got."""

    method: str
    path: str  # without the query string
    query: dict[str, str]
    content_type: str | None
    field_manager: str | None
    status: int
    propagation_policy: str | None = None  # DELETE only: from the query or the DeleteOptions body
    authorization: str | None = None  # the Authorization header as sent ("Bearer fake-token")
    body: Any = field(default=None, repr=False)  # the parsed JSON/YAML body, when there was one


@dataclass
class _Route:
    resource: Resource
    namespace: str
    name: str | None
    sub: str | None


@dataclass
class _Injection:
    method: str
    path_contains: str
    status: int
    remaining: int
    retry_after: int | None
    message: str | None


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """An answer in the API server's `Status` shape, raised from anywhere inside a request."""

    def __init__(self, code: int, message: str, details: dict | None = None, *,
                 retry_after: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or {}
        self.reason = reason or REASONS.get(code, "Unknown")
        self.retry_after = retry_after

    def reply(self) -> _Reply:
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": self.message, "reason": self.reason, "details": self.details, "code": self.code}
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        return _Reply(self.code, json.dumps(status).encode(), headers=headers)


def completion_index(pod: dict) -> int:
    """An Indexed Job's pod's completion index (0 for any other pod)."""
    index = (pod["metadata"].get("annotations") or {}).get("batch.kubernetes.io/job-completion-index", "0")
    return int(index) if index.isdigit() else 0


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def details(resource: Resource, name: str | None) -> dict:
    """Status details as the server writes them: the plural as `kind`, no empty group."""
    out: dict[str, Any] = {}
    if name:
        out["name"] = name
    if resource.group:
        out["group"] = resource.group
    out["kind"] = resource.plural
    return out


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(404, f'{resource.qualified} "{name}" not found', details(resource, name))


def stale(resource: Resource, name: str) -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {resource.qualified} "{name}": the object has '
                         "been modified; please apply your changes to the latest version and try again",
                    details(resource, name))


# -- field sets (managedFields) ------------------------------------------------------------------
# A path is a tuple of fieldsV1 keys, ("f:spec", "f:replicas"); a leaf is a scalar, a list or an empty map.

MISSING = object()
FieldPath = tuple[str, ...]
IGNORED_PATHS: tuple[FieldPath, ...] = (("f:apiVersion",), ("f:kind",), ("f:metadata", "f:name"),
                                    ("f:metadata", "f:namespace"),
                                    *(("f:metadata", f"f:{key}") for key in SYSTEM_METADATA))


def covers(outer: FieldPath, inner: FieldPath) -> bool:
    """True when `inner` is `outer` or lies under it."""
    return inner[:len(outer)] == outer


def overlaps(first: FieldPath, second: FieldPath) -> bool:
    return covers(first, second) or covers(second, first)


def leaf_paths(obj: Any, prefix: FieldPath = ()) -> set[FieldPath]:
    """The leaf paths an object sets, minus the server-owned ones; nulls set nothing."""
    paths: set[FieldPath] = set()
    if not isinstance(obj, dict):
        return paths
    for key, value in obj.items():
        path = (*prefix, f"f:{key}")
        if value is None or any(covers(ignored, path) for ignored in IGNORED_PATHS):
            continue
        if isinstance(value, dict) and value:
            paths |= leaf_paths(value, path)
        else:
            paths.add(path)
    return paths


def value_at(obj: Any, path: FieldPath) -> Any:
    for key in path:
        if not key.startswith("f:") or not isinstance(obj, dict) or key[2:] not in obj:
            return MISSING
        obj = obj[key[2:]]
    return obj


def delete_at(obj: dict, path: FieldPath) -> None:
    """Remove one field, and the maps it leaves empty (never `metadata` itself)."""
    parents: list[tuple[dict, str]] = []
    node: Any = obj
    for key in path:
        if not key.startswith("f:") or not isinstance(node, dict) or key[2:] not in node:
            return
        parents.append((node, key[2:]))
        node = node[key[2:]]
    for depth, (parent, key) in enumerate(reversed(parents)):
        if depth and (parent[key] or (len(parents) - depth == 1 and key == "metadata")):
            break
        del parent[key]


def fields_to_paths(fields: dict, prefix: FieldPath = ()) -> set[FieldPath]:
    paths: set[FieldPath] = set()
    for key, child in fields.items():
        if key == ".":
            paths.add(prefix)
        elif child:
            paths |= fields_to_paths(child, (*prefix, key))
        else:
            paths.add((*prefix, key))
    return paths


def paths_to_fields(paths: set[FieldPath]) -> dict:
    root: dict = {}
    for path in sorted(paths):
        node = root
        for key in path:
            node = node.setdefault(key, {})
    for path in paths:  # a leaf that also has fields under it is marked with "."
        node = root
        for key in path:
            node = node[key]
        if node and "." not in node:
            node["."] = {}
    return root


def path_text(path: FieldPath) -> str:
    return "." + ".".join(key[2:] if key.startswith("f:") else key for key in path)


def entry_key(entry: dict) -> tuple[str, str, str]:
    return entry.get("manager", ""), entry.get("operation", ""), entry.get("subresource", "")


def entry_paths(entry: dict) -> set[FieldPath]:
    return fields_to_paths(entry.get("fieldsV1") or {})


def set_entry(entries: list[dict], manager: str, operation: str, subresource: str, api_version: str,
              paths: set[FieldPath]) -> list[dict]:
    """The entries with this manager's entry replaced by `paths` (dropped when empty)."""
    kept = [entry for entry in entries if entry_key(entry) != (manager, operation, subresource)]
    if paths:
        entry = {"manager": manager, "operation": operation, "apiVersion": api_version, "time": now(),
                 "fieldsType": "FieldsV1", "fieldsV1": paths_to_fields(paths)}
        if subresource:
            entry["subresource"] = subresource
        kept.append(entry)
    return kept


def take_paths(entries: list[dict], taken: set[FieldPath],
               keep: tuple[str, str, str] | None = None) -> list[dict]:
    """Other managers lose `taken` (and what lies under it); entries left empty are dropped."""
    out = []
    for entry in entries:
        if entry_key(entry) == keep:
            out.append(entry)
            continue
        paths = {path for path in entry_paths(entry) if not any(covers(cut, path) for cut in taken)}
        if paths:
            out.append({**entry, "fieldsV1": paths_to_fields(paths)})
    return out


def record_update(old: dict, new: dict, manager: str, subresource: str, api_version: str) -> list[dict]:
    """managedFields after an Update (create, put, merge patch): the manager takes what it changed."""
    entries = copy.deepcopy((old.get("metadata") or {}).get("managedFields") or [])
    scope = ("f:status",) if subresource else None
    changed = {path for path in leaf_paths(new) if value_at(old, path) != value_at(new, path)}
    removed = {path for path in leaf_paths(old) if value_at(new, path) is MISSING}
    if scope:
        changed, removed = ({p for p in paths if covers(scope, p)} for paths in (changed, removed))
    key = (manager, "Update", subresource)
    entries = take_paths(entries, changed | removed, keep=key)
    own = next((entry for entry in entries if entry_key(entry) == key), None)
    kept = entry_paths(own) if own else set()
    paths = {path for path in kept if not any(covers(cut, path) for cut in removed)}
    if not changed and own is None:
        return entries
    return set_entry(entries, manager, "Update", subresource, api_version, paths | changed)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def without_times(obj: dict) -> dict:
    """The object as a no-op check compares it: managedFields timestamps do not count as a change."""
    stripped = copy.deepcopy(obj)
    for entry in (stripped.get("metadata") or {}).get("managedFields") or []:
        entry.pop("time", None)
    return stripped


# -- selectors ------------------------------------------------------------------------------------

_LABEL_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY = re.compile(rf"^(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
LABEL_VALUE = re.compile(rf"^(?:{_LABEL_NAME})?$")
Requirement = Callable[[dict], bool]


def _split_requirements(text: str) -> list[str]:
    """Split on commas outside parentheses (`a in (x,y),b` is two requirements)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def parse_label_selector(text: str) -> list[Requirement]:
    """Equality (`a=b`, `a==b`, `a!=b`), existence (`a`, `!a`) and set (`a in (x,y)`, `a notin (x)`)
    requirements, ANDed; ValueError for anything the server would refuse."""
    if not text.strip():
        return []
    requirements: list[Requirement] = []
    for part in (piece.strip() for piece in _split_requirements(text)):
        if match := re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^()]*)\)", part):
            key, operator, values = match[1], match[2], {value.strip() for value in match[3].split(",")}
            if not all(LABEL_VALUE.match(value) for value in values):
                raise ValueError(f"invalid label value in {part!r}")
            requirement = ((lambda labels, k=key, v=values: labels.get(k) in v) if operator == "in"
                           else (lambda labels, k=key, v=values: labels.get(k) not in v))
        elif match := re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)", part):
            key, operator, value = match[1], match[2], match[3]
            if not LABEL_VALUE.match(value):
                raise ValueError(f"invalid label value: {value!r}")
            requirement = ((lambda labels, k=key, v=value: labels.get(k) != v) if operator == "!="
                           else (lambda labels, k=key, v=value: labels.get(k) == v))
        elif match := re.fullmatch(r"(!?)\s*([^=!\s(),]+)", part):
            key = match[2]
            requirement = ((lambda labels, k=key: k not in labels) if match[1]
                           else (lambda labels, k=key: k in labels))
        else:
            raise ValueError(f"unable to parse requirement: {part!r}")
        if not LABEL_KEY.match(key):
            raise ValueError(f"invalid label key {key!r}")
        requirements.append(requirement)
    return requirements


FIELD_SELECTABLE = {"metadata.name", "metadata.namespace", "status.phase"}


def parse_field_selector(text: str) -> list[Requirement]:
    """The few field selectors tests need: metadata.name, metadata.namespace, status.phase."""
    requirements: list[Requirement] = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        match = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(\S*)", part)
        if not match:
            raise ValueError(f"invalid field selector: {part!r}")
        if match[1] not in FIELD_SELECTABLE:
            raise ValueError(f'field label not supported: {match[1]}')
        section, name = match[1].split(".")
        equal = match[2] != "!="
        requirements.append(
            lambda obj, s=section, n=name, v=match[3], e=equal: ((obj.get(s) or {}).get(n) == v) == e)
    return requirements


# -- HTTP -----------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, api: FakeKubeApi):
        self.api = api
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with Content-Length on every answer, so urllib3 can keep connections alive."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `FakeKubeApi.requests` instead."""

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        body = self._read_body()
        reply = self.server.api._serve(self.command, self.path, self.headers.get("Content-Type"), body,
                                       self.headers.get("Authorization"))
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


# -- the fake -------------------------------------------------------------------------------------


class FakeKubeApi:
    """A fake namespaced Kubernetes API server: in-memory objects behind real HTTP on 127.0.0.1."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str], dict] = {}  # (plural, namespace, name) -> object
        self._logs: dict[tuple[str, str], str] = {}  # (namespace, pod) -> log text
        self._resource_version = 0
        self._injections: list[_Injection] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[Request] = []
        self.user = DEFAULT_USER  # who 403 messages say was refused
        # None: the token is not checked. Set it (e.g. "fake-token") and requests without
        # `Authorization: Bearer <it>` get 401, so a client that drops the kubeconfig token is caught.
        self.require_token: str | None = None
        # Kinds answered 404 "could not find the requested resource", as by a cluster whose CRD for
        # them is not installed (e.g. {"JobSet"}).
        self.unserved: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeKubeApi:
        self._server = _Server(self)
        # A short poll interval: shutdown() waits for it, and tests start and stop a server each.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-kube-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close kept-alive connections, so no handler thread outlives the test."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.shutdown()
        with server.connections_lock:
            for connection in list(server.connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeKubeApi:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Kubernetes API is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, path: Path, namespace: str = "default", context: str = "fake") -> Path:
        """A kubeconfig pointing at this fake over plain HTTP with a static token."""
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "fake-token"}}],
            "contexts": [{"name": context,
                          "context": {"cluster": context, "user": context, "namespace": namespace}}],
            "current-context": context,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path

    # -- state helpers for tests ---------------------------------------------------------------

    def objects(self, kind: str, namespace: str = "default") -> list[dict]:
        """Deep copies of every `kind` (Kind or plural, any case) in `namespace`, sorted by name."""
        resource = self._resource_for(kind)
        with self._lock:
            return [copy.deepcopy(obj) for obj in self._in_namespace(resource, namespace)]

    def get(self, kind: str, name: str, namespace: str = "default") -> dict | None:
        resource = self._resource_for(kind)
        with self._lock:
            obj = self._objects.get((resource.plural, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def put(self, obj: dict) -> dict:
        """Create or replace an object as given (test setup), filling only what the server owns."""
        obj = copy.deepcopy(obj)
        resource = self._resource_for(obj["kind"])
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            raise ValueError("put needs metadata.name")
        obj.setdefault("apiVersion", resource.api_version)
        namespace = meta.setdefault("namespace", "default")
        with self._lock:
            old = self._objects.get((resource.plural, namespace, meta["name"]))
            old_meta = old["metadata"] if old else {}
            meta.setdefault("uid", old_meta.get("uid") or str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", old_meta.get("creationTimestamp") or now())
            meta.setdefault("generation", old_meta.get("generation") or 1)
            self._store(resource, obj)
            return copy.deepcopy(obj)

    def remove(self, kind: str, name: str, namespace: str = "default") -> None:
        """Delete behind the client's back: no cascade, no request recorded. KeyError when absent."""
        resource = self._resource_for(kind)
        with self._lock:
            del self._objects[(resource.plural, namespace, name)]
            self._resource_version += 1
            if resource is PODS:
                self._logs.pop((namespace, name), None)

    def inject(self, method: str, path_contains: str, status: int, times: int = 1,
               retry_after: int | None = None, message: str | None = None) -> None:
        """The next `times` requests with this method ("*" for any) whose path contains
        `path_contains` are refused with `status` in the server's Status shape."""
        with self._lock:
            self._injections.append(
                _Injection(method.upper(), path_contains, status, times, retry_after, message))

    # -- controllers and kubelet, driven by tests ---------------------------------------------------

    def start_pod(self, job_name: str, namespace: str = "default", index: int = 0) -> dict:
        """What the Job controller and kubelet do for one attempt: a Running pod owned by the Job
        (for an Indexed Job, the pod of completion `index`, with its hostname)."""
        with self._lock:
            job = self._require(JOBS, job_name, namespace)
            finished = [c["type"] for c in (job.get("status") or {}).get("conditions") or []
                        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"]
            if finished:  # the Job controller never starts pods for a finished Job
                raise RuntimeError(f"job {job_name!r} is {finished[0]}: no new pods")
            template = (job.get("spec") or {}).get("template") or {}
            template_meta = template.get("metadata") or {}
            uid = job["metadata"]["uid"]
            labels = {**(template_meta.get("labels") or {}), "batch.kubernetes.io/controller-uid": uid,
                      "controller-uid": uid, "batch.kubernetes.io/job-name": job_name, "job-name": job_name}
            annotations = dict(template_meta.get("annotations") or {})
            spec = copy.deepcopy(template.get("spec") or {})
            if (job.get("spec") or {}).get("completionMode") == "Indexed":
                labels["batch.kubernetes.io/job-completion-index"] = str(index)
                annotations["batch.kubernetes.io/job-completion-index"] = str(index)
                spec.setdefault("hostname", f"{job_name}-{index}")
            suffix = "".join(random.choices(string.ascii_lowercase, k=5))
            containers = spec.get("containers") or [{}]
            started = now()
            metadata: dict[str, Any] = {
                "name": f"{job_name}-{index}-{suffix}", "namespace": namespace, "labels": labels,
                "ownerReferences": [{"apiVersion": JOBS.api_version, "kind": "Job", "name": job_name,
                                     "uid": uid, "controller": True, "blockOwnerDeletion": True}],
                "uid": str(uuid.uuid4()), "creationTimestamp": started, "generation": 1}
            if annotations:
                metadata["annotations"] = annotations
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec,
                   "status": {"phase": "Running", "startTime": started, "containerStatuses": [
                       {"name": containers[0].get("name", ""), "image": containers[0].get("image", ""),
                        "ready": True, "restartCount": 0, "started": True,
                        "state": {"running": {"startedAt": started}}}]}}
            self._store(PODS, pod)
            status = job.setdefault("status", {})
            active = len(self._running_pods(job))
            status.update(active=active, ready=active)
            status.setdefault("startTime", started)
            self._store(JOBS, job)
            return copy.deepcopy(pod)

    def fail_pod(self, job_name: str, reason: str = "Error", exit_code: int = 1, message: str = "",
                 namespace: str = "default", index: int | None = None,
                 init_container: str | None = None) -> None:
        """The Job's running pod (of completion `index`, if given) fails, in its container or the
        named init container; past spec.backoffLimit the Job fails and its other running pods are
        deleted, else that pod is replaced."""
        with self._lock:
            job = self._require(JOBS, job_name, namespace)
            pod = self._finish_pod(job, "Failed", exit_code, reason, message, index, init_container)
            status = job.setdefault("status", {})
            status["failed"] = status.get("failed", 0) + 1
            active = len(self._running_pods(job))
            status.update(active=active, ready=active)
            backoff_limit = (job.get("spec") or {}).get("backoffLimit", DEFAULT_BACKOFF_LIMIT)
            if status["failed"] > backoff_limit:
                at = now()
                status["conditions"] = [*(status.get("conditions") or []), *(
                    {"type": kind, "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit", "lastProbeTime": at,
                     "lastTransitionTime": at} for kind in ("FailureTarget", "Failed"))]
                for running in self._running_pods(job):  # the Job controller terminates the rest
                    self.remove("Pod", running["metadata"]["name"], namespace)
                status.update(active=0, ready=0)
                self._store(JOBS, job)
                return
            self._store(JOBS, job)
            # The controller replaces the pod at once (no backoff delay).
            self.start_pod(job_name, namespace, completion_index(pod))

    def complete_pod(self, job_name: str, index: int = 0, namespace: str = "default") -> None:
        """The pod of completion `index` succeeds; once every index has, the Job completes."""
        with self._lock:
            job = self._require(JOBS, job_name, namespace)
            self._finish_pod(job, "Succeeded", 0, "Completed", "", index)
            status = job.setdefault("status", {})
            status["succeeded"] = status.get("succeeded", 0) + 1
            active = len(self._running_pods(job))
            status.update(active=active, ready=active)
            if status["succeeded"] >= int((job.get("spec") or {}).get("completions") or 1):
                at = now()
                status.update(completionTime=at)
                status["conditions"] = [*(status.get("conditions") or []), *(
                    {"type": kind, "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods", "lastProbeTime": at,
                     "lastTransitionTime": at} for kind in ("SuccessCriteriaMet", "Complete"))]
            self._store(JOBS, job)

    def complete_job(self, job_name: str, namespace: str = "default") -> None:
        """The Job's pod (started first when none runs) succeeds, and the Job completes."""
        with self._lock:
            job = self._require(JOBS, job_name, namespace)
            if not self._running_pods(job):
                self.start_pod(job_name, namespace)
                job = self._require(JOBS, job_name, namespace)
            self.complete_pod(job_name, completion_index(self._running_pods(job)[-1]), namespace)

    def delete_with_dependents(self, kind: str, name: str, namespace: str = "default") -> None:
        """What a controller's foreground delete ends with: the object and, by garbage
        collection, everything it owns. No request is recorded."""
        with self._lock:
            obj = self._objects.get((self._resource_for(kind).plural, namespace, name))
            if obj is None:
                return
            self.remove(kind, name, namespace)
            self._collect_dependents(obj["metadata"]["uid"], orphan=False)

    def pod_log(self, pod_name: str, namespace: str = "default") -> str:
        with self._lock:
            return self._logs.get((namespace, pod_name), "")

    def set_pod_log(self, pod_name: str, text: str, namespace: str = "default") -> None:
        with self._lock:
            self._logs[(namespace, pod_name)] = text

    def set_deployment_available(self, name: str, namespace: str = "default", available: bool = True) -> None:
        """What the Deployment controller reports once its pods are (or are not) ready."""
        with self._lock:
            deployment = self._require(DEPLOYMENTS, name, namespace)
            replicas = (deployment.get("spec") or {}).get("replicas", 1)
            ready = replicas if available else 0
            template = json.dumps((deployment.get("spec") or {}).get("template") or {}, sort_keys=True)
            replica_set = f"{name}-{zlib.crc32(template.encode()):08x}"
            at = now()
            deployment["status"] = {
                "observedGeneration": deployment["metadata"].get("generation", 1), "replicas": replicas,
                "updatedReplicas": replicas, "readyReplicas": ready, "availableReplicas": ready,
                **({} if available else {"unavailableReplicas": replicas}),
                "conditions": [
                    {"type": "Available", "status": "True" if available else "False",
                     "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                     "message": "Deployment has minimum availability." if available
                     else "Deployment does not have minimum availability.",
                     "lastUpdateTime": at, "lastTransitionTime": at},
                    {"type": "Progressing", "status": "True",
                     "reason": "NewReplicaSetAvailable" if available else "ReplicaSetUpdated",
                     "message": f'ReplicaSet "{replica_set}" has successfully progressed.' if available
                     else f'ReplicaSet "{replica_set}" is progressing.',
                     "lastUpdateTime": at, "lastTransitionTime": at}]}
            self._store(DEPLOYMENTS, deployment)

    # -- internals: state ------------------------------------------------------------------------

    @staticmethod
    def _resource_for(kind: str) -> Resource:
        for resource in RESOURCES:
            if kind.lower() in (resource.kind.lower(), resource.plural):
                return resource
        raise KeyError(f"the fake Kubernetes API does not serve {kind!r}")

    def _in_namespace(self, resource: Resource, namespace: str) -> list[dict]:
        found = [obj for (plural, ns, _), obj in self._objects.items()
                 if plural == resource.plural and ns == namespace]
        return sorted(found, key=lambda obj: obj["metadata"]["name"])

    def _require(self, resource: Resource, name: str, namespace: str) -> dict:
        obj = self._objects.get((resource.plural, namespace, name))
        if obj is None:
            raise KeyError(f"no {resource.kind} {namespace}/{name} in the fake Kubernetes API")
        return copy.deepcopy(obj)

    def _store(self, resource: Resource, obj: dict) -> None:
        """Every write goes here: a new global resourceVersion on the object."""
        self._resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self._resource_version)
        obj.setdefault("kind", resource.kind)
        obj.setdefault("apiVersion", resource.api_version)
        meta = obj["metadata"]
        self._objects[(resource.plural, meta["namespace"], meta["name"])] = obj

    def _pods_of(self, job: dict) -> list[dict]:
        uid = job["metadata"]["uid"]
        return [copy.deepcopy(pod) for (plural, ns, _), pod in self._objects.items()
                if plural == "pods" and ns == job["metadata"]["namespace"]
                and any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or [])]

    def _running_pods(self, job: dict) -> list[dict]:
        return [pod for pod in self._pods_of(job) if (pod.get("status") or {}).get("phase") == "Running"]

    def _finish_pod(self, job: dict, phase: str, exit_code: int, reason: str, message: str,
                    index: int | None = None, init_container: str | None = None) -> dict:
        running = [pod for pod in self._running_pods(job) if index is None or completion_index(pod) == index]
        if not running:
            raise LookupError(f"job {job['metadata']['name']!r} has no running pod"
                              + (f" of index {index}" if index is not None else ""))
        pod = running[-1]
        status = pod.setdefault("status", {})
        statuses = status.get("containerStatuses") or [{"name": "", "restartCount": 0}]
        state = (statuses[0].get("state") or {}).get("running") or {}
        terminated: dict[str, Any] = {"exitCode": exit_code, "reason": reason,
                                      "startedAt": state.get("startedAt"), "finishedAt": now()}
        if message:  # the server omits empty strings
            terminated["message"] = message
        if init_container is not None:  # the container never started
            status["initContainerStatuses"] = [{"name": init_container, "ready": False, "restartCount": 0,
                                                "state": {"terminated": terminated}}]
            statuses[0].update(state={"waiting": {"reason": "PodInitializing"}}, ready=False, started=False)
        else:
            statuses[0].update(state={"terminated": terminated}, ready=False, started=False)
        status.update(phase=phase, containerStatuses=statuses)
        self._store(PODS, pod)
        return pod

    # -- internals: HTTP ---------------------------------------------------------------------------

    def _serve(self, method: str, raw_path: str, content_type: str | None, body: bytes,
               authorization: str | None = None) -> _Reply:
        split = urlsplit(raw_path)
        path = split.path
        query = {key: values[-1] for key, values in parse_qs(split.query, keep_blank_values=True).items()}
        media_type = content_type.split(";")[0].strip().lower() if content_type else None
        with self._lock:
            request = Request(method, path, query, content_type, query.get("fieldManager"), 0,
                              authorization=authorization)
            try:
                if self.require_token is not None and authorization != f"Bearer {self.require_token}":
                    raise ApiError(401, "Unauthorized")
                route = self._route(path)
                self._raise_injected(method, path, route, query)
                if route is None:
                    raise ApiError(404, NO_ROUTE)
                reply = self._dispatch(method, route, query, media_type, body, request)
            except ApiError as error:
                reply = error.reply()
            except Exception as error:  # a bug in the fake: answer as a server would, not hang the client
                reply = ApiError(500, f"fake kube api: {type(error).__name__}: {error}").reply()
            request.status = reply.status
            self.requests.append(request)
        return reply

    def _route(self, path: str) -> _Route | None:
        match = CORE_PATH.match(path)
        group = ""
        if match is None:
            match = GROUP_PATH.match(path)
            if match is None:
                return None
            group = match["group"]
        for resource in RESOURCES:
            if (resource.group, resource.version) == (group, match["version"]) and \
                    resource.plural == match["plural"] and resource.kind not in self.unserved:
                name = unquote(match["name"]) if match["name"] else None
                return _Route(resource, unquote(match["ns"]), name, match["sub"])
        return None

    @staticmethod
    def _verb(method: str, route: _Route | None, query: dict[str, str]) -> str:
        named = route is not None and route.name is not None
        if method == "GET":
            return "get" if named else ("watch" if query.get("watch") in ("true", "1") else "list")
        if method == "DELETE":
            return "delete" if named else "deletecollection"
        return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())

    def _raise_injected(self, method: str, path: str, route: _Route | None, query: dict[str, str]) -> None:
        for injection in self._injections:
            if injection.remaining <= 0 or injection.path_contains not in path:
                continue
            if injection.method not in ("*", method.upper()):
                continue
            injection.remaining -= 1
            self._injections = [item for item in self._injections if item.remaining > 0]
            code, verb = injection.status, self._verb(method, route, query)
            resource_details = details(route.resource, route.name) if route else {}
            if injection.retry_after is not None:
                resource_details["retryAfterSeconds"] = injection.retry_after
            message = injection.message or self._injected_message(code, verb, route)
            raise ApiError(code, message, resource_details, retry_after=injection.retry_after)

    def _injected_message(self, code: int, verb: str, route: _Route | None) -> str:
        if route is None:
            return f"injected failure ({code})"
        resource, name = route.resource, route.name
        subject = f'{resource.qualified} "{name}"' if name else resource.qualified
        if code == 403:
            plural = resource.plural + (f"/{route.sub}" if route.sub else "")
            return (f'{subject} is forbidden: User "{self.user}" cannot {verb} resource "{plural}" '
                    f'in API group "{resource.group}" in the namespace "{route.namespace}"')
        if code == 404:
            return f"{subject} not found"
        if code == 409:
            return stale(resource, name or "").message
        if code == 429:
            return "Too many requests, please try again later."
        if code == 500:
            return "Internal error occurred: injected by the fake Kubernetes API"
        if code == 503:
            return "the server is currently unable to handle the request"
        return f"injected failure ({code})"

    def _dispatch(self, method: str, route: _Route, query: dict[str, str], media_type: str | None,
                  body: bytes, request: Request) -> _Reply:
        resource = route.resource
        if route.sub == "log" and resource is PODS and route.name:
            if method != "GET":
                raise ApiError(405, "the server does not allow this method on the requested resource")
            return self._read_log(route, query)
        if route.sub is not None and not (route.sub == "status" and resource.has_status):
            raise ApiError(404, NO_ROUTE)
        dry_run = query.get("dryRun") == "All"
        if method == "GET":
            if route.name is None:
                return self._list(route, query)
            return self._json(200, self._existing(route))
        if method == "POST" and route.name is None:
            return self._create(route, query, media_type, body, request, dry_run)
        if route.name is not None and method == "PUT":
            return self._replace(route, query, media_type, body, request, dry_run)
        if route.name is not None and method == "PATCH":
            if media_type == APPLY:
                return self._apply(route, query, body, request, dry_run)
            if media_type in MERGE_PATCHES:
                return self._merge(route, query, body, request, dry_run)
            raise ApiError(415, "the body of the request was in an unknown format - accepted media types "
                                "include: application/json-patch+json, application/merge-patch+json, "
                                "application/apply-patch+yaml, application/strategic-merge-patch+json")
        if route.name is not None and route.sub is None and method == "DELETE":
            return self._delete(route, query, body, request, dry_run)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    @staticmethod
    def _json(status: int, obj: dict) -> _Reply:
        return _Reply(status, json.dumps(obj).encode())

    def _existing(self, route: _Route) -> dict:
        obj = self._objects.get((route.resource.plural, route.namespace, route.name or ""))
        if obj is None:
            raise not_found(route.resource, route.name or "")
        return copy.deepcopy(obj)

    @staticmethod
    def _parse(body: bytes, media_type: str | None, request: Request) -> dict:
        """A JSON (or, where the content type allows, YAML) object body; 400 for anything else."""
        try:
            text = body.decode("utf-8")
            if media_type in (APPLY, "application/yaml", "text/yaml", "application/x-yaml"):
                parsed = yaml.safe_load(text)
            else:
                parsed = json.loads(text)
        except (UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
            raise ApiError(400, f"the request body could not be decoded: {error}") from None
        if not isinstance(parsed, dict):
            raise ApiError(400, "the request body must be an object")
        request.body = parsed
        return parsed

    @staticmethod
    def _check_identity(route: _Route, obj: dict, *, require_type: bool = False) -> None:
        """The body must be the kind, name and namespace the URL says."""
        resource = route.resource
        if require_type and (not obj.get("apiVersion") or not obj.get("kind")):
            raise ApiError(400, "apiVersion and kind must be set in an apply patch")
        if obj.get("kind") not in (None, resource.kind):
            raise ApiError(400, f"the kind of the object ({obj['kind']}) does not match the kind on the URL "
                                f"({resource.kind})")
        if obj.get("apiVersion") not in (None, resource.api_version):
            raise ApiError(400, f"the API version of the object ({obj['apiVersion']}) does not match the URL "
                                f"({resource.api_version})")
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        meta = meta or {}
        if route.name is not None and meta.get("name") not in (None, route.name):
            raise ApiError(400, f"the name of the object ({meta['name']}) does not match the name on the URL "
                                f"({route.name})")
        if meta.get("namespace") not in (None, route.namespace):
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on "
                                "the request")

    @staticmethod
    def _check_version(route: _Route, old: dict, obj: dict) -> None:
        wanted = (obj.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != old["metadata"].get("resourceVersion"):
            raise stale(route.resource, route.name or "")

    @staticmethod
    def _without_system_metadata(obj: dict) -> dict:
        clean = copy.deepcopy(obj)
        meta = clean.get("metadata")
        if isinstance(meta, dict):
            for key in SYSTEM_METADATA:
                meta.pop(key, None)
        return clean

    def _commit(self, route: _Route, name: str, old: dict | None, new: dict, dry_run: bool) -> dict | None:
        """Store `new` with the metadata the server owns; None when nothing changed (no write, no new
        resourceVersion, as a real no-op update)."""
        resource = route.resource
        new["apiVersion"], new["kind"] = resource.api_version, resource.kind
        meta = new.setdefault("metadata", {})
        meta["name"], meta["namespace"] = name, route.namespace
        if old is not None:
            old_meta = old["metadata"]
            for key in ("uid", "creationTimestamp", "generation", "resourceVersion"):
                if key in old_meta:
                    meta[key] = old_meta[key]
            if new.get("spec") != old.get("spec"):
                meta["generation"] = old_meta.get("generation", 1) + 1
            if without_times(new) == without_times(old):
                return None
        else:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        if not dry_run:
            self._store(resource, new)
        return copy.deepcopy(new)

    def _create(self, route: _Route, query: dict[str, str], media_type: str | None, body: bytes,
                request: Request, dry_run: bool) -> _Reply:
        if media_type not in (None, *JSON_TYPES):
            raise ApiError(415, f"the body of the request was in an unknown format: {media_type}")
        resource = route.resource
        obj = self._without_system_metadata(self._parse(body, media_type, request))
        self._check_identity(route, obj)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = meta["generateName"] + "".join(random.choices(string.ascii_lowercase, k=5))
        if not name:
            raise ApiError(422, f"{resource.kind} is invalid: metadata.name: Required value: name or "
                                "generateName is required", details(resource, None))
        if (resource.plural, route.namespace, name) in self._objects:
            raise ApiError(409, f'{resource.qualified} "{name}" already exists', details(resource, name),
                           reason="AlreadyExists")
        if resource.has_status:
            obj["status"] = {"phase": "Pending"} if resource is PODS else {}
        meta["name"], meta["namespace"] = name, route.namespace
        scope_obj = {key: value for key, value in obj.items()
                     if not (resource.has_status and key == "status")}
        meta["managedFields"] = record_update({}, scope_obj, query.get("fieldManager") or "unknown", "",
                                              resource.api_version)
        created = self._commit(route, name, None, obj, dry_run)
        assert created is not None
        return self._json(201, created)

    def _replace(self, route: _Route, query: dict[str, str], media_type: str | None, body: bytes,
                 request: Request, dry_run: bool) -> _Reply:
        if media_type not in (None, *JSON_TYPES):
            raise ApiError(415, f"the body of the request was in an unknown format: {media_type}")
        resource = route.resource
        obj = self._parse(body, media_type, request)
        self._check_identity(route, obj)
        old = self._existing(route)
        self._check_version(route, old, obj)
        if route.sub == "status":
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(obj.get("status") or {})
        else:
            new = self._without_system_metadata(obj)
            if resource.has_status:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
        return self._write_update(route, old, new, query, dry_run)

    def _merge(self, route: _Route, query: dict[str, str], body: bytes, request: Request,
               dry_run: bool) -> _Reply:
        patch = self._parse(body, "application/json", request)
        self._check_identity(route, patch)
        old = self._existing(route)
        self._check_version(route, old, patch)
        patch = self._without_system_metadata(patch)
        if route.sub == "status":
            patch = {"status": patch["status"]} if "status" in patch else {}
        elif route.resource.has_status:
            patch.pop("status", None)
        return self._write_update(route, old, merge_patch(old, patch), query, dry_run)

    def _write_update(self, route: _Route, old: dict, new: dict, query: dict[str, str],
                      dry_run: bool) -> _Reply:
        new.setdefault("metadata", {})["managedFields"] = record_update(
            old, new, query.get("fieldManager") or "unknown", route.sub or "", route.resource.api_version)
        written = self._commit(route, route.name or "", old, new, dry_run)
        return self._json(200, written if written is not None else old)

    def _apply(self, route: _Route, query: dict[str, str], body: bytes, request: Request,
               dry_run: bool) -> _Reply:
        """Server-side apply: the manager owns exactly the leaves it applies; others' differing leaves
        conflict unless forced; leaves it stops applying are removed when nobody else owns them."""
        manager = query.get("fieldManager")
        if not manager:
            raise ApiError(400, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                                "is required for apply patch")
        resource, name = route.resource, route.name or ""
        applied = self._parse(body, APPLY, request)
        self._check_identity(route, applied, require_type=True)
        old = self._objects.get((resource.plural, route.namespace, name))
        old = copy.deepcopy(old) if old is not None else None
        if old is not None:
            self._check_version(route, old, applied)
        clean = self._without_system_metadata(applied)
        subresource = route.sub or ""
        if subresource:
            clean = {"status": clean["status"]} if "status" in clean else {}
        elif resource.has_status:
            clean.pop("status", None)
        paths = leaf_paths(clean)
        entries = copy.deepcopy((old or {}).get("metadata", {}).get("managedFields") or [])
        own_key = (manager, "Apply", subresource)
        conflicts: list[tuple[str, FieldPath]] = []
        for entry in entries:
            if entry_key(entry) == own_key or entry.get("subresource", "") != subresource:
                continue
            for owned in sorted(entry_paths(entry)):
                for path in paths:
                    longer = owned if len(owned) >= len(path) else path
                    if overlaps(owned, path) and value_at(clean, longer) != value_at(old, longer):
                        conflicts.append((entry.get("manager", ""), owned))
                        break
        if conflicts and query.get("force") != "true":
            raise self._conflict_error(route, conflicts)
        if conflicts:  # forced: the applier takes the contested fields; shared, equal ones stay shared
            entries = take_paths(entries, {owned for _, owned in conflicts}, keep=own_key)
        base = copy.deepcopy(old) if old is not None else {"metadata": {}}
        previously = set().union(*(entry_paths(e) for e in entries if entry_key(e) == own_key))
        others = set().union(*(entry_paths(e) for e in entries
                               if entry_key(e) != own_key and e.get("subresource", "") == subresource))
        for gone in previously - paths:
            if not any(overlaps(gone, other) for other in others):
                delete_at(base, gone)
        new = merge_patch(base, clean)
        if resource.has_status and not subresource:
            new.pop("status", None)
            new["status"] = copy.deepcopy(old["status"]) if old is not None and "status" in old else (
                {"phase": "Pending"} if resource is PODS else {})
        new.setdefault("metadata", {})["managedFields"] = set_entry(
            entries, manager, "Apply", subresource, str(applied.get("apiVersion")), paths)
        written = self._commit(route, name, old, new, dry_run)
        if old is None:
            return self._json(201, written or new)
        return self._json(200, written if written is not None else old)

    @staticmethod
    def _conflict_error(route: _Route, conflicts: list[tuple[str, FieldPath]]) -> ApiError:
        count = len(conflicts)
        if count == 1:
            manager, path = conflicts[0]
            text = f'conflict with "{manager}": {path_text(path)}'
        else:
            by_manager: dict[str, list[str]] = {}
            for manager, path in conflicts:
                by_manager.setdefault(manager, []).append(path_text(path))
            text = "conflicts with" + "".join(
                f' "{manager}":' + "".join(f"\n- {field_}" for field_ in fields)
                for manager, fields in sorted(by_manager.items()))
        error = ApiError(409, f"Apply failed with {count} conflict{'s' if count > 1 else ''}: {text}",
                         details(route.resource, route.name))
        error.details["causes"] = [{"reason": "FieldManagerConflict", "message": f'conflict with "{manager}"',
                                    "field": path_text(path)} for manager, path in conflicts]
        return error

    def _delete(self, route: _Route, query: dict[str, str], body: bytes, request: Request,
                dry_run: bool) -> _Reply:
        options = self._parse(body, "application/json", request) if body.strip() else {}
        policy = query.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
        request.propagation_policy = policy
        if policy not in PROPAGATION_POLICIES:
            raise ApiError(400, f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported '
                                f'value: "{policy}": supported values: "Foreground", "Background", '
                                '"Orphan", "nil"')
        old = self._existing(route)
        preconditions = options.get("preconditions") or {}
        for key in ("uid", "resourceVersion"):
            if preconditions.get(key) and preconditions[key] != old["metadata"].get(key):
                raise ApiError(409, f"Precondition failed: {key} in precondition: {preconditions[key]}, "
                                    f"{key} in object meta: {old['metadata'].get(key)}",
                               details(route.resource, route.name))
        uid = old["metadata"]["uid"]
        if not dry_run:
            self.remove(route.resource.plural, route.name or "", route.namespace)
            self._collect_dependents(uid, orphan=policy == "Orphan")
        status_details = {**details(route.resource, route.name), "uid": uid}
        return self._json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                "details": status_details})

    def _collect_dependents(self, owner_uid: str, *, orphan: bool) -> None:
        """Garbage collection, at once: dependents go too, or lose their ownerReference when orphaned."""
        for (plural, namespace, name), obj in list(self._objects.items()):
            if (plural, namespace, name) not in self._objects:  # already collected further down the chain
                continue
            refs = obj["metadata"].get("ownerReferences") or []
            if not any(ref.get("uid") == owner_uid for ref in refs):
                continue
            resource = self._resource_for(plural)
            if orphan:
                remaining = [ref for ref in refs if ref.get("uid") != owner_uid]
                if remaining:
                    obj["metadata"]["ownerReferences"] = remaining
                else:
                    obj["metadata"].pop("ownerReferences")
                self._store(resource, obj)
            else:
                self.remove(plural, name, namespace)
                self._collect_dependents(obj["metadata"]["uid"], orphan=False)

    def _list(self, route: _Route, query: dict[str, str]) -> _Reply:
        if query.get("watch") in ("true", "1"):
            raise ApiError(400, "watch is not modeled by the fake Kubernetes API")
        try:
            label_requirements = parse_label_selector(query.get("labelSelector", ""))
            field_requirements = parse_field_selector(query.get("fieldSelector", ""))
        except ValueError as error:
            raise ApiError(400, f"unable to parse requirement: {error}") from None
        items = [obj for obj in self._in_namespace(route.resource, route.namespace)
                 if all(match(obj["metadata"].get("labels") or {}) for match in label_requirements)
                 and all(match(obj) for match in field_requirements)]
        token = query.get("continue", "")
        if token:
            try:
                after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "continue key is not valid: incorrect encoded start resourceVersion "
                                    "(version meta.k8s.io/v1)") from None
            items = [obj for obj in items if obj["metadata"]["name"] > after]
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise ApiError(400, f"invalid limit: {query.get('limit')!r}") from None
        metadata: dict[str, Any] = {"resourceVersion": str(self._resource_version), "continue": ""}
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]["name"]
            metadata["continue"] = base64.urlsafe_b64encode(json.dumps({"after": last}).encode()).decode()
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        # The real server leaves kind and apiVersion out of list items; so does the fake.
        page = [{key: value for key, value in copy.deepcopy(obj).items() if key not in ("kind", "apiVersion")}
                for obj in items]
        resource = route.resource
        return self._json(200, {"kind": f"{resource.kind}List", "apiVersion": resource.api_version,
                                "metadata": metadata, "items": page})

    def _read_log(self, route: _Route, query: dict[str, str]) -> _Reply:
        pod = self._existing(route)
        container = query.get("container")
        names = [container_.get("name") for container_ in (pod.get("spec") or {}).get("containers") or []]
        if container and container not in names:
            raise ApiError(400, f"container {container} is not valid for pod {route.name}")
        text = self._logs.get((route.namespace, route.name or ""), "")
        if "tailLines" in query:
            try:
                tail = int(query["tailLines"])
            except ValueError:
                raise ApiError(400, f"invalid tailLines: {query['tailLines']!r}") from None
            if tail < 0:
                raise ApiError(422, "tailLines must be greater than or equal to 0")
            text = "".join(text.splitlines(keepends=True)[-tail:]) if tail else ""
        return _Reply(200, text.encode(), content_type="text/plain")
