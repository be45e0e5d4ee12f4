"""The rules the Kubernetes API server applies to the strings tuneops writes into manifests.

Checked when specs and tuneops.yaml are validated, so a name the cluster would refuse is
reported at its file and line rather than by `kubectl apply` (kubernetes-validate at render time
is the second line). The control plane does not import the kubernetes client, so the rules are
written out here, each after the function of k8s.io/apimachinery that it follows:
pkg/util/validation/validation.go (IsDNS1123Label, IsDNS1123Subdomain, IsDNS1035Label,
IsQualifiedName, IsValidLabelValue), pkg/api/validation/path/name.go (IsValidPathSegmentName)
and pkg/api/resource/quantity.go (the grammar of a Quantity).

Patterns are matched whole (`fullmatch`): Go's `$` ends the text, Python's also matches before
a final newline, which let `name: "a\\n"` through into object names and file paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, Field, Strict

from reconciler.errors import PermanentError

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63
QUALIFIED_NAME_MAX = 63
# TotalAnnotationSizeLimitB in apimachinery's ValidateAnnotations: keys and values together.
ANNOTATIONS_SIZE_MAX = 256 * 1024

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
# <quantity> ::= <signedNumber><suffix>, without the sign: requests and limits may not be
# negative (ValidateResourceQuantityValue). A decimal exponent is a whole number.
_QUANTITY = re.compile(r"\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]+)?")


class KubernetesValueError(PermanentError, ValueError):
    """A string Kubernetes would refuse in the field it becomes; `hint` is a likely fix."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def _too_long(value: str, limit: int, becomes: str) -> None:
    if len(value) > limit:
        raise KubernetesValueError(f"must be at most {limit} characters (it has {len(value)}): it becomes "
                                   f"{becomes}")


def check_dns1123_label(value: str, becomes: str = "a Kubernetes name") -> str:
    """IsDNS1123Label: namespaces, and every name that is also a label value or a hostname."""
    if not value:
        raise KubernetesValueError("must not be empty")
    _too_long(value, DNS1123_LABEL_MAX, becomes)
    if not _DNS1123_LABEL.fullmatch(value):
        raise KubernetesValueError(f"must be a DNS-1123 label (it becomes {becomes}): lowercase letters, "
                                   "digits and '-', starting and ending with a letter or digit")
    return value


def check_dns1123_subdomain(value: str, becomes: str = "a Kubernetes object name") -> str:
    """IsDNS1123Subdomain: the names of most objects (Secrets, PersistentVolumeClaims,
    ServiceAccounts, PriorityClasses) and label key prefixes."""
    if not value:
        raise KubernetesValueError("must not be empty")
    _too_long(value, DNS1123_SUBDOMAIN_MAX, becomes)
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        raise KubernetesValueError(f"must be a DNS-1123 subdomain (it becomes {becomes}): lowercase letters, "
                                   "digits, '-' and '.', each dot-separated part starting and ending with a "
                                   "letter or digit")
    return value


def is_dns1123_label(value: str) -> bool:
    return len(value) <= DNS1123_LABEL_MAX and _DNS1123_LABEL.fullmatch(value) is not None


def is_dns1035_label(value: str) -> bool:
    """IsDNS1035Label: Service names, which also must start with a letter."""
    return len(value) <= DNS1123_LABEL_MAX and _DNS1035_LABEL.fullmatch(value) is not None


def check_qualified_name(value: str) -> str:
    """IsQualifiedName: label and annotation keys, `name` or `prefix/name`, where the prefix is a
    DNS-1123 subdomain and the name at most 63 letters, digits, '-', '_' or '.'."""
    parts = value.split("/")
    if len(parts) > 2:
        raise KubernetesValueError("must be a Kubernetes qualified name: a name with at most one "
                                   "'prefix/' (e.g. 'example.com/team')")
    name = parts[-1]
    if len(parts) == 2:
        if not parts[0]:
            raise KubernetesValueError("must be a Kubernetes qualified name: the part before '/' must not "
                                       "be empty")
        try:
            check_dns1123_subdomain(parts[0], "a label key prefix")
        except KubernetesValueError as error:
            raise KubernetesValueError(f"prefix {parts[0]!r}: {error}") from None
    if not name or len(name) > QUALIFIED_NAME_MAX or not _QUALIFIED_NAME.fullmatch(name):
        raise KubernetesValueError("must be a Kubernetes qualified name: an optional 'prefix/' and at most "
                                   "63 letters, digits, '-', '_' or '.', starting and ending with a letter "
                                   "or digit")
    return value


def check_label_value(value: str, becomes: str = "a Kubernetes label value") -> str:
    """IsValidLabelValue: empty, or at most 63 letters, digits, '-', '_' or '.', starting and
    ending with a letter or digit. Node selector values are label values too."""
    _too_long(value, LABEL_VALUE_MAX, becomes)
    if value and not _QUALIFIED_NAME.fullmatch(value):
        raise KubernetesValueError(f"must be a Kubernetes label value (it becomes {becomes}): letters, "
                                   "digits, '-', '_' or '.', starting and ending with a letter or digit")
    return value


def check_quantity(value: str) -> str:
    """resource.Quantity's grammar, not negative: `8`, `500m`, `64Gi`, `1.5`, `1e3`."""
    if not _QUANTITY.fullmatch(value):
        hint = None
        if value.strip() != value:
            hint = "remove the spaces"
        elif value.lower().endswith(("ib", "b")):
            hint = "binary units are written Ki, Mi, Gi, Ti (no B)"
        raise KubernetesValueError("must be a Kubernetes quantity such as 8, 500m, 64Gi or 1.5", hint)
    return value


def check_path_segment_name(value: str) -> str:
    """IsValidPathSegmentName: a custom metric's name is a segment of the metrics API's URL
    path, so not `.` or `..` and without '/' or '%'. Whitespace and control characters are
    refused as well: a metrics adapter serves names of Prometheus series, which have none."""
    if not value:
        raise KubernetesValueError("must not be empty")
    if value in (".", ".."):
        raise KubernetesValueError(f"may not be {value!r}: the metric name is a URL path segment")
    if "/" in value or "%" in value:
        raise KubernetesValueError("may not contain '/' or '%': the metric name is a URL path segment")
    if any(char.isspace() or not char.isprintable() for char in value):
        raise KubernetesValueError("may not contain spaces or control characters")
    return value


def check_image(value: str) -> str:
    """validateContainers: an image reference without leading or trailing whitespace."""
    if not value:
        raise KubernetesValueError("must not be empty")
    if value.strip() != value:
        raise KubernetesValueError("must not have leading or trailing whitespace")
    return value


def _becomes(check: Callable[[str, str], str], becomes: str) -> Callable[[str], str]:
    """The rule `check`, saying what its value turns into (`becomes`) when it refuses one."""
    return lambda value: check(value, becomes)


def json_schema(pattern: re.Pattern[str], max_length: int | None = None) -> Any:
    """The rule for editors (the published JSON Schemas): the same pattern, anchored, whose `$`
    ends the text in JSON Schema's ECMAScript regexes."""
    extra: dict[str, Any] = {"pattern": f"^{pattern.pattern}$"}
    if max_length:
        extra["maxLength"] = max_length
    return Field(json_schema_extra=extra)


DNS1123_LABEL_SCHEMA = json_schema(_DNS1123_LABEL, DNS1123_LABEL_MAX)
_SUBDOMAIN_SCHEMA = json_schema(_DNS1123_SUBDOMAIN, DNS1123_SUBDOMAIN_MAX)
LABEL_VALUE_SCHEMA = json_schema(re.compile(f"({_QUALIFIED_NAME.pattern})?"), LABEL_VALUE_MAX)


def _subdomain(becomes: str) -> Any:
    return Annotated[str, Strict(), AfterValidator(_becomes(check_dns1123_subdomain, becomes)),
                     _SUBDOMAIN_SCHEMA]


Namespace = Annotated[str, Strict(), AfterValidator(_becomes(check_dns1123_label, "a Kubernetes namespace")),
                      DNS1123_LABEL_SCHEMA]
SecretName = _subdomain("a Secret's name")
ClaimName = _subdomain("a PersistentVolumeClaim's name")
ServiceAccountName = _subdomain("a ServiceAccount's name")
PriorityClassName = _subdomain("a PriorityClass's name")
NodeLabelValue = Annotated[str, Strict(),
                           AfterValidator(_becomes(check_label_value, "a node selector value")),
                           LABEL_VALUE_SCHEMA]
Image = Annotated[str, Strict(), AfterValidator(check_image)]
MetricName = Annotated[str, Strict(), AfterValidator(check_path_segment_name)]
