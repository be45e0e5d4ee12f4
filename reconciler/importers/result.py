"""What an import produces, whichever tool the config came from: the spec documents to write
(each value with the config key it came from), and an account of every key of the config:
mapped to a field, or reported as not translated with why. Nothing is dropped silently: keys
the importer neither mapped nor reported are reported as unknown when it finishes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from reconciler.importers.commented_yaml import Commented, render

Category = Literal["ignored", "unsupported", "unknown"]
CATEGORY_TITLES: dict[str, str] = {
    "ignored": "ignored by design (logging, output, hub, caching: tuneops does these its own way)",
    "unsupported": "not supported by tuneops",
    "unknown": "unknown keys (not read by this importer)",
}
API_VERSION = "tuneops.dev/v1alpha1"


@dataclass(frozen=True)
class Untranslated:
    key: str  # "lora_fan_in_fan_out", "datasets[0].roles_to_train"
    category: Category
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "category": self.category, "reason": self.reason}


@dataclass
class SpecDraft:
    """One spec under construction: `set("training.learningRate", 2e-4, "axolotl: learning_rate")`."""

    kind: str
    name: str
    spec: dict[str, Any] = field(default_factory=dict)
    header: list[str] = field(default_factory=list)
    description: str | None = None

    def set(self, path: str, value: Any, comment: str | None = None) -> None:
        *parents, last = path.split(".")
        node = self.spec
        for part in parents:
            child = node.setdefault(part, {})
            if isinstance(child, Commented):  # a mapping with its own comment: descend into it
                child = child.value
            node = child
        node[last] = Commented(value, comment)

    def get(self, path: str) -> Any:
        node: Any = self.spec
        for part in path.split("."):
            if isinstance(node, Commented):
                node = node.value
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node.value if isinstance(node, Commented) else node

    def document(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name}
        if self.description:
            metadata["description"] = self.description
        return {"apiVersion": API_VERSION, "kind": self.kind, "metadata": metadata, "spec": self.spec}

    def text(self) -> str:
        return render(self.document(), self.header)


@dataclass
class ImportResult:
    """Specs by file name (several documents in a file are joined by `---`), extra files (a chat
    template) and the account of the config's keys."""

    tool: str
    config: str
    files: dict[str, list[SpecDraft]] = field(default_factory=dict)
    extra_files: dict[str, str] = field(default_factory=dict)
    mapped: dict[str, list[str]] = field(default_factory=dict)  # config key -> spec fields
    untranslated: list[Untranslated] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def map(self, key: str, spec_field: str) -> None:
        fields = self.mapped.setdefault(key, [])
        if spec_field not in fields:
            fields.append(spec_field)

    def report(self, key: str, category: Category, reason: str) -> None:
        if not any(u.key == key for u in self.untranslated):
            self.untranslated.append(Untranslated(key, category, reason))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def accounted(self) -> set[str]:
        return set(self.mapped) | {u.key for u in self.untranslated}

    def report_unread(self, data: Any, prefix: str = "") -> None:
        """Report as unknown every key of `data` that was neither mapped nor reported: a key is
        covered by itself or by a covered parent (`special_tokens` covers `special_tokens.pad_token`)."""
        for _, path, value in _children(data, prefix):
            covered = self.accounted()
            if path in covered:
                continue
            if _has_children(value) and any(k.startswith((path + ".", path + "[")) for k in covered):
                self.report_unread(value, path)
            else:
                self.report(path, "unknown", "not a key this importer knows; check it by hand")

    def texts(self) -> dict[str, str]:
        out = {name: "---\n".join(draft.text() for draft in drafts) for name, drafts in self.files.items()}
        return {**out, **self.extra_files}

    def by_category(self) -> dict[str, list[Untranslated]]:
        grouped: dict[str, list[Untranslated]] = {category: [] for category in CATEGORY_TITLES}
        for item in self.untranslated:
            grouped[item.category].append(item)
        return grouped


def _has_children(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        or (isinstance(value, list) and any(isinstance(item, dict) for item in value))
    )


def _children(data: Any, prefix: str) -> list[tuple[str | None, str, Any]]:
    if isinstance(data, dict):
        return [(str(k), f"{prefix}.{k}" if prefix else str(k), v) for k, v in data.items()]
    if isinstance(data, list):
        return [(None, f"{prefix}[{i}]", v) for i, v in enumerate(data)]
    return []


def flattened_keys(data: Any, prefix: str = "") -> list[str]:
    """Every leaf key of a config, as the import reports them (`datasets[0].path`)."""
    out: list[str] = []
    for _, path, value in _children(data, prefix):
        out += flattened_keys(value, path) if _has_children(value) else [path]
    return out


def is_covered(key: str, accounted: set[str]) -> bool:
    """Whether a key, or a mapping or list it is inside, was mapped or reported."""
    candidate = key
    while True:
        if candidate in accounted:
            return True
        cut = max(candidate.rfind("."), candidate.rfind("["))
        if cut <= 0:
            return False
        candidate = candidate[:cut]
