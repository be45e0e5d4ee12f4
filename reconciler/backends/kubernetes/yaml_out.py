"""Manifests as the YAML `tuneops render` prints: reviewable in a pull request's diff, and the
same bytes for the same objects, for kubectl, Argo CD or a golden file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml


class _ReviewableDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # libyaml's emitter, if built
    """Multi-line strings (a ConfigMap's job.json) as literal blocks: one line of YAML per
    line of text, so a pull request's diff shows the field that changed, and the output
    never depends on where a long line happens to be folded."""


_OTHER_LINE_BREAKS = ("\r", "\x85", "\u2028", "\u2029")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # PyYAML prints NEL and its kin raw in plain and single-quoted scalars and reads them back as
    # line breaks; a double-quoted scalar escapes them.
    if any(brk in value for brk in _OTHER_LINE_BREAKS):
        style = '"'
    elif "\n" in value:
        style = "|"
    else:
        style = None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReviewableDumper.add_representer(str, _represent_str)


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """Multi-document YAML for `tuneops render`, kubectl or Argo CD."""
    return "".join("---\n" + yaml.dump(dict(obj), Dumper=_ReviewableDumper, sort_keys=False,
                                        allow_unicode=True, width=1_000_000)
                   for obj in objects)
