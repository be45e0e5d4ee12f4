"""The envelope every spec shares, and the field vocabulary the five kinds are built from.

Models are pydantic v2, immutable, camelCase on the wire, and refuse unknown fields. Scalars
are strict: YAML `r: "8"` is a string, and a string where a number belongs is a mistake we
report rather than guess at.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict
from pydantic import BaseModel as PydanticModel
from pydantic.alias_generators import to_camel

from reconciler.scalars import Bool, Float, Int, Str  # noqa: F401 - the kinds import them from here

API_VERSION = "tuneops.dev/v1alpha1"
"""The only apiVersion this release reads."""


class SpecValueError(ValueError):
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
    alias: str | None = None,
    default_factory: Any = None,
    **constraints: Any,
) -> Any:
    """A documented field. `operational` marks fields that do not change what is produced
    (so a change to them never retrains anything); docs and fingerprints read the marker."""
    extra: dict[str, Any] = {}
    if unit:
        extra["x-unit"] = unit
    if operational:
        extra["x-operational"] = True
    kwargs: dict[str, Any] = dict(description=doc, json_schema_extra=extra or None, **constraints)
    if example is not None:
        kwargs["examples"] = [example]
    if alias:
        kwargs["alias"] = alias
    if default_factory is not None:
        return Field(default_factory=default_factory, **kwargs)
    return Field(default, **kwargs)



_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


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
    if not value:
        raise SpecValueError("must not be empty")
    if len(value) > 63:
        raise SpecValueError(
            f"must be at most 63 characters (it has {len(value)}): names become Kubernetes object names"
        )
    if not _DNS_LABEL.match(value):
        suggestion = suggest_dns_label(value)
        raise SpecValueError(
            "must be a DNS-1123 label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit",
            hint=f"did you mean {suggestion!r}?" if suggestion and suggestion != value else None,
        )
    return value


def check_dns_subdomain(value: str) -> str:
    if not value or len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise SpecValueError("must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')")
    return value


def check_label_key(value: str) -> str:
    """Kubernetes qualified name: optional `prefix/` (a DNS subdomain) and a name of <= 63 chars."""
    prefix, _, name = value.rpartition("/")
    if prefix:
        check_dns_subdomain(prefix)
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise SpecValueError(
            "must be a Kubernetes qualified name: an optional 'prefix/' and at most 63 letters, "
            "digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    return value


def check_label_value(value: str) -> str:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise SpecValueError(
            "must be a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


def _number_to_string(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def check_quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise SpecValueError(
            "must be a Kubernetes quantity such as 8, 500m, 64Gi or 1.5"
        )
    return value


Name = Annotated[str, Strict(), AfterValidator(check_dns_label)]
LabelKey = Annotated[str, Strict(), AfterValidator(check_label_key)]
LabelValue = Annotated[str, Strict(), AfterValidator(check_label_value)]
Quantity = Annotated[
    str,
    BeforeValidator(_number_to_string, json_schema_input_type=str | int | float),
    Strict(),
    AfterValidator(check_quantity),
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
    name: Name = field(doc="The spec's name, unique per kind. Becomes part of Kubernetes object names.",
                       example="support-sft")
    namespace: Name | None = field(
        None, "Kubernetes namespace for this resource's objects; defaults to the project's.",
        example="ml-training", operational=True)
    labels: dict[LabelKey, LabelValue] = field(
        default_factory=dict, doc="Kubernetes-style labels, copied onto rendered objects.",
        example={"team": "support"}, operational=True)
    annotations: dict[LabelKey, Str] = field(
        default_factory=dict, doc="Free-form annotations, copied onto rendered objects.",
        example={"owner": "ml-platform"}, operational=True)
    description: Str | None = field(None, "What this resource is for, in a sentence.",
                                    example="Support assistant tuned on resolved tickets.",
                                    operational=True, max_length=4096)


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
