"""The envelope every spec shares, and the field vocabulary the kinds are built from.

Models are pydantic v2, immutable, camelCase on the wire, and refuse unknown fields. Scalars
are strict: YAML `r: "8"` is a string, and a string where a number belongs is a mistake we
report rather than guess at.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    field_validator,
)
from pydantic import BaseModel as PydanticModel
from pydantic.alias_generators import to_camel

from reconciler.errors import PermanentError
from reconciler.values import kubernetes as kube
from reconciler.values.scalars import Bool, Float, Int, Str  # noqa: F401 - the kinds import them from here

API_VERSION = "tuneops.dev/v1alpha1"
"""The only apiVersion this release reads."""


class SpecValueError(PermanentError, ValueError):
    """A value that parses but means nothing valid; carries an optional fix for the user."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class SpecModel(PydanticModel):
    """Base of every spec model: frozen, camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=False,  # users write camelCase; snake_case gets "did you mean"
    )


def field(
    default: Any = ...,
    doc: str = "",
    *,
    unit: str | None = None,
    example: Any = None,
    operational: bool = False,
    added_later: bool = False,
    alias: str | None = None,
    default_factory: Any = None,
    **constraints: Any,
) -> Any:
    """A documented field. `operational` marks fields that do not change what is produced
    (so a change to them never retrains anything); docs and fingerprints read the marker.
    `added_later` marks a field added after resources were built with what its default does:
    at the default it stays out of fingerprints, so upgrading rebuilds nothing."""
    extra: dict[str, Any] = {}
    if unit:
        extra["x-unit"] = unit
    if operational:
        extra["x-operational"] = True
    if added_later:
        extra["x-fingerprint-omits-default"] = True
    kwargs: dict[str, Any] = dict(description=doc, json_schema_extra=extra or None, **constraints)
    if example is not None:
        kwargs["examples"] = [example]
    if alias:
        kwargs["alias"] = alias
    if default_factory is not None:
        return Field(default_factory=default_factory, **kwargs)
    return Field(default, **kwargs)



class ValueHiddenError(SpecValueError):
    """A mistake whose value may be a credential (a key pasted where its variable's name goes):
    reported without echoing the value."""

    hides_value = True


def require_exactly_one(model: PydanticModel, first: str, second: str) -> None:
    """For 'this or that' fields (baseModel or fromFineTune, fineTune or baseModel)."""
    if (getattr(model, first) is None) == (getattr(model, second) is None):
        aliases = [to_camel(first), to_camel(second)]
        raise SpecValueError(f"set exactly one of {aliases[0]} or {aliases[1]}")


def suggest_dns_label(value: str) -> str:
    """The nearest valid name to what the user typed (`Support_SFT` -> `support-sft`,
    `données` -> `donnees`)."""
    ascii_only = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9-]+", "-", ascii_only.lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)[:63].strip("-")
    return slug


def check_dns_label(value: str) -> str:
    """A spec's name: a DNS-1123 label, as it becomes part of object names and label values."""
    if not value:
        raise SpecValueError("must not be empty")
    if len(value) > kube.DNS1123_LABEL_MAX:
        raise SpecValueError(
            f"must be at most 63 characters (it has {len(value)}): names become Kubernetes object names"
        )
    if not kube.is_dns1123_label(value):
        suggestion = suggest_dns_label(value)
        raise SpecValueError(
            "must be a DNS-1123 label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit",
            hint=f"did you mean {suggestion!r}?" if suggestion and suggestion != value else None,
        )
    return value


TEAM_SEPARATOR = "."
"""Between a team and a spec's name: `nlp.support-sft` is team nlp's `support-sft`. A spec's own
name (a DNS-1123 label) has no dot, so a qualified name parses back without ambiguity."""


def qualified_name(team: str | None, name: str) -> str:
    """The name a spec of `team` is known by everywhere (graph, state, MLflow, objects)."""
    return f"{team}{TEAM_SEPARATOR}{name}" if team else name


def team_of(name: str) -> str | None:
    """The team part of a qualified name; None for a project without teams."""
    team, separator, _ = name.partition(TEAM_SEPARATOR)
    return team if separator else None


def bare_name(name: str) -> str:
    """A qualified name without its team: what the spec's author wrote in metadata.name."""
    return name.rpartition(TEAM_SEPARATOR)[2]


def kubernetes_name(name: str) -> str:
    """A qualified name as a DNS-1123 label (a server's Service and Deployment name)."""
    return name.replace(TEAM_SEPARATOR, "-")


def _fits_label(name: str) -> str:
    if len(name) > kube.DNS1123_LABEL_MAX:
        raise SpecValueError(
            f"with its team, the name {name!r} has {len(name)} characters; at most 63 fit, as it "
            "becomes a Kubernetes label value", hint="shorten the spec's name or the team's")
    return name


def _team_context(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


def check_spec_name(value: str, info: ValidationInfo) -> str:
    """metadata.name: a DNS-1123 label as written; qualified with the team of the file it is in
    (validation context `team`). A spec already qualified (a sweep trial's copy) is read back
    with context `qualified`."""
    context = _team_context(info)
    if context.get("qualified") and team_of(value):
        team, _, name = value.partition(TEAM_SEPARATOR)
        check_dns_label(team)
        check_dns_label(name)
        return _fits_label(value)
    check_dns_label(value)
    return _fits_label(qualified_name(context.get("team"), value))


def check_reference_name(value: str, info: ValidationInfo) -> str:
    """A field naming another spec: `name` is a spec of the same team, `team.name` another
    team's (which must export it; specs/rules/teams.py)."""
    team, separator, name = value.rpartition(TEAM_SEPARATOR)
    if separator:
        if not team or TEAM_SEPARATOR in team:
            raise SpecValueError("must be a spec's name, or `team.name` for another team's spec")
        check_dns_label(team)
        check_dns_label(name)
        return _fits_label(value)
    check_dns_label(value)
    return _fits_label(qualified_name(_team_context(info).get("team"), value))


_QUALIFIED_PATTERN = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?")


# Keys tuneops sets on every object it renders: a spec's own value would be overwritten.
RESERVED_LABEL_KEYS = frozenset({"app.kubernetes.io/managed-by", "app.kubernetes.io/name",
                                 "app.kubernetes.io/component", "kueue.x-k8s.io/queue-name"})
RESERVED_PREFIX = "tuneops.dev/"


def _not_reserved(key: str, reserved: frozenset[str] = frozenset()) -> str:
    if key.startswith(RESERVED_PREFIX) or key in reserved:
        raise SpecValueError(f"{key!r} is set by tuneops on the objects it renders",
                             hint="use a key of your own, e.g. example.com/team")
    return key


def check_label_key(value: str) -> str:
    return _not_reserved(kube.check_qualified_name(value), RESERVED_LABEL_KEYS)


# Annotation prefixes that Kubernetes and its add-ons act on (AppArmor and seccomp profiles,
# the autoscaler's eviction rules, ...): spec annotations reach pods, so a pull request could
# loosen a job's sandbox through them. They are the operator's, set in the cluster, not a spec's.
SYSTEM_ANNOTATION_DOMAINS = ("kubernetes.io", "k8s.io")


# The annotations that approve a spec's policy violations (specs/policy.py): tuneops reads them.
APPROVED_BY = "tuneops.dev/approved-by"  # comma-separated policy names
APPROVAL_REASON = "tuneops.dev/approval-reason"  # why: required with APPROVED_BY


def check_annotation_key(value: str) -> str:
    if value in (APPROVED_BY, APPROVAL_REASON):
        return value
    key = _not_reserved(kube.check_qualified_name(value))
    prefix = key.partition("/")[0] if "/" in key else ""
    if any(prefix == domain or prefix.endswith("." + domain) for domain in SYSTEM_ANNOTATION_DOMAINS):
        raise SpecValueError(f"{key!r} is a Kubernetes system annotation: the cluster acts on it (a pod's "
                             "sandbox, scheduling, eviction), so specs may not set it",
                             hint="use a key of your own, e.g. example.com/team; the cluster's policy "
                                  "sets these")
    return key


def _number_to_string(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Name = Annotated[str, Strict(), AfterValidator(check_dns_label), kube.DNS1123_LABEL_SCHEMA]
SpecName = Annotated[str, Strict(), AfterValidator(check_spec_name), kube.DNS1123_LABEL_SCHEMA]
ReferenceName = Annotated[str, Strict(), AfterValidator(check_reference_name),
                          kube.json_schema(_QUALIFIED_PATTERN, kube.DNS1123_LABEL_MAX)]
"""Another spec's name: `support-chats`, or `nlp.support-chats` for a spec team nlp exports."""
LabelKey = Annotated[str, Strict(), AfterValidator(check_label_key)]
AnnotationKey = Annotated[str, Strict(), AfterValidator(check_annotation_key)]
LabelValue = Annotated[str, Strict(), AfterValidator(kube.check_label_value), kube.LABEL_VALUE_SCHEMA]
Quantity = Annotated[
    str,
    BeforeValidator(_number_to_string, json_schema_input_type=str | int | float),
    Strict(),
    AfterValidator(kube.check_quantity),
]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]


class ResourceId(NamedTuple):
    """How specs refer to each other and how the graph names nodes: `FineTune/support-sft`."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class Reference:
    """One spec naming another. `path` is the field that names it (for error positions)."""

    target: ResourceId
    path: tuple[str | int, ...]
    role: str  # in the user's words: "base model", "dataset", "gating evaluation", ...


class Metadata(SpecModel):
    REFUSED_FIELDS: ClassVar[dict[str, str]] = {
        "namespace": "metadata.namespace is not supported: a project's objects all go to one namespace, "
                     "kubernetes.namespace in tuneops.yaml, where its storage claim and Secrets are and "
                     "where the backend looks for them",
    }

    name: SpecName = field(doc="The spec's name, unique per kind (per team, where tuneops.yaml has "
                               "teams). Becomes part of Kubernetes object names.",
                       example="support-sft")
    labels: dict[LabelKey, LabelValue] = field(
        default_factory=dict, doc="Kubernetes labels, copied onto every rendered object and its pods. "
                                  "Keys under tuneops.dev/, and those tuneops sets "
                                  "(app.kubernetes.io/managed-by, name and component, "
                                  "kueue.x-k8s.io/queue-name), are refused.",
        example={"team": "support"}, operational=True)
    annotations: dict[AnnotationKey, Str] = field(
        default_factory=dict, doc="Kubernetes annotations, copied onto every rendered object and its pods "
                                  "(at most 256 KiB together). Keys under tuneops.dev/ are refused, "
                                  "but for tuneops.dev/approved-by and tuneops.dev/approval-reason, "
                                  "which approve policy violations.",
        example={"owner": "ml-platform"}, operational=True)
    description: Str | None = field(None, "What this resource is for, in a sentence.",
                                    example="Support assistant tuned on resolved tickets.",
                                    operational=True, max_length=4096)

    @field_validator("annotations")
    @classmethod
    def _annotations_fit(cls, value: dict[str, str]) -> dict[str, str]:
        size = sum(len(key.encode()) + len(text.encode()) for key, text in value.items())
        if size > kube.ANNOTATIONS_SIZE_MAX:
            raise SpecValueError(f"annotations take {size} bytes together; Kubernetes allows "
                                 f"{kube.ANNOTATIONS_SIZE_MAX} (256 KiB)")
        return value


class Resource(SpecModel):
    """The Kubernetes-style envelope: apiVersion, kind, metadata, spec."""

    KIND: ClassVar[str] = ""

    api_version: Literal["tuneops.dev/v1alpha1"] = field(doc="Always `tuneops.dev/v1alpha1`.")
    metadata: Metadata = field(doc="Name, labels and description.")

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def id(self) -> ResourceId:
        return ResourceId(self.KIND, self.metadata.name)

    def references(self) -> list[Reference]:
        """Every other spec this one depends on; the graph and the reference rules read this."""
        return []
