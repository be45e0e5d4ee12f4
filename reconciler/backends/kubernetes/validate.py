"""Whether a manifest is valid: each built-in object against the Kubernetes OpenAPI schemas of
the configured version (kubernetes-validate, strict), custom resources against the structure
their CRD publishes (crd_schemas), and the metadata rules the schemas leave to the API server.
`tuneops render`, `validate` and the backend ask here before anything reaches a cluster.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from reconciler.backends.kubernetes.crd_schemas import crd_problems, embedded_objects, operator_problems
from reconciler.values import kubernetes as kube

if TYPE_CHECKING:
    from jsonschema.protocols import Validator


def validate_manifests(objects: Iterable[Mapping[str, Any]], version: str) -> list[str]:
    """Problems of each built-in object against Kubernetes `version`'s OpenAPI schemas (strict:
    unknown fields are problems). Custom resources the bundled schemas lack (PodGroup, JobSet,
    PyTorchJob) are checked against the structure their CRD publishes (crd_schemas), and the
    Jobs and pod templates they embed against the OpenAPI schemas again; a kind known to
    neither is a problem, so nothing reaches a cluster unchecked."""
    import jsonschema
    import kubernetes_validate
    from kubernetes_validate.utils import InvalidSchemaError, SchemaNotFoundError, VersionNotSupportedError

    problems: list[str] = []
    full_version = version if version.count(".") == 2 else f"{version}.0"

    def check(obj: Mapping[str, Any], where: str) -> None:
        try:
            try:
                validator = _openapi_validator(full_version, str(obj.get("apiVersion")), str(obj.get("kind")))
            except (AttributeError, ImportError, TypeError):  # a release whose internals differ
                kubernetes_validate.validate(dict(obj), full_version, strict=True)
            else:
                validator.validate(dict(obj))
        except jsonschema.ValidationError as error:  # kubernetes_validate's own is one too
            problems.append(f"{where}: {error.message} (at {'.'.join(map(str, error.path)) or 'top level'})")
        except SchemaNotFoundError:
            found = crd_problems(dict(obj))
            if found is None:
                problems.append(f"{where}: no schema for {obj.get('apiVersion')} {obj.get('kind')}")
                return
            problems.extend(f"{where}: {problem}" for problem in found + operator_problems(dict(obj)))
            for path, embedded in embedded_objects(dict(obj)):
                check(embedded, f"{where} {path}")
        except InvalidSchemaError as error:
            problems.append(f"{where}: {error.message}")

    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            check(obj, where)
        except VersionNotSupportedError as error:  # one line, not one per object
            return [f"kubernetes.version {version}: {error.message} (newest: "
                    f"{_newest_schema_version()}); set an older one in tuneops.yaml or upgrade it"]
        problems.extend(f"{where}: {problem}" for problem in metadata_problems(obj))
    return problems


def metadata_problems(obj: Mapping[str, Any]) -> list[str]:
    """What the OpenAPI schemas leave to the API server's ValidateObjectMeta: the syntax of the
    name (a DNS-1035 label for a Service, a DNS-1123 subdomain otherwise, at most 63 for a Job),
    namespace, label keys and values and annotation keys. Validation holds specs to these rules
    first; this is the second line, for whatever reaches a manifest another way."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    found = []
    if obj.get("kind") == "Service" and not kube.is_dns1035_label(name):
        found.append(f"metadata.name {name!r}: a Service name must be a DNS-1035 label (start with a letter)")
    checks = [(kube.check_dns1123_subdomain, "metadata.name", name),
              (kube.check_dns1123_label, "metadata.namespace", str(meta.get("namespace") or "default"))]
    if obj.get("kind") == "Job":  # its pods carry it in the label batch.kubernetes.io/job-name
        checks.append((kube.check_label_value, "metadata.name", name))
    for key, value in (meta.get("labels") or {}).items():
        checks += [(kube.check_qualified_name, "metadata.labels key", key),
                   (kube.check_label_value, f"metadata.labels[{key!r}]", value)]
    checks += [(kube.check_qualified_name, "metadata.annotations key", key)
               for key in meta.get("annotations") or {}]
    for rule, field_name, value in checks:
        try:
            rule(value)
        except kube.KubernetesValueError as error:
            found.append(f"{field_name} {value!r}: {error}")
    return found


def _newest_schema_version() -> str:
    from kubernetes_validate import utils

    try:
        return utils.major_minor(utils.latest_version())
    except AttributeError:
        return "unknown"


@functools.cache
def _openapi_validator(version: str, api_version: str, kind: str) -> Validator:
    """What kubernetes_validate.validate(obj, version, strict=True) checks, with each kind's
    schema read and compiled once: it reads and parses the whole definitions file on every
    call, which made checking a thousand objects take seconds. Raises its SchemaNotFoundError
    for kinds it has no schema for (custom resources). It reaches into kubernetes-validate's
    module (`utils`): with a release where that differs, callers fall back to its `validate`."""
    import re

    import jsonschema
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    if utils.major_minor(version) > utils.latest_version():
        raise utils.VersionNotSupportedError(version=utils.major_minor(version))
    wanted = utils.major_minor(version)
    schema_version = [v for v in utils.all_versions() if utils.major_minor(v) <= wanted][-1]
    # rbac.authorization.k8s.io/v1 -> rbac-v1, as kubernetes-validate names its files
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{schema_version}-local-strict"
    try:
        schema = utils.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", version)
    except FileNotFoundError:
        raise utils.SchemaNotFoundError(version=utils.major_minor(version), kind=kind,
                                        api_version=api_version) from None
    registry = Resource.from_contents(_openapi_definitions(folder, version)) @ (
        Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


@functools.cache
def _openapi_definitions(folder: str, version: str) -> Any:
    from kubernetes_validate import utils

    return utils.schema_contents(f"{folder}/_definitions.json", version)
