"""Where a base model's shape comes from, for memory planning: the spec's `architecture:`
block, else the model's config.json when it is already on disk (a file:// source, or the
Hugging Face cache for a pinned hf:// revision). Never the network: validation stays offline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from reconciler.planner import Architecture
from reconciler.specs.base import ResourceId
from reconciler.specs.basemodel import BaseModelResource
from reconciler.specs.sources import parse_source
from reconciler.specs.specset import SpecSet


def hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    return home / "hub"


def config_path(base: BaseModelResource, spec_folder: Path) -> Path | None:
    source = parse_source(base.spec.source)
    if source.scheme == "file":
        return source.local_path(spec_folder) / "config.json"
    if source.scheme == "hf" and base.spec.revision:
        repo = "models--" + source.location.replace("/", "--")
        return hub_cache() / repo / "snapshots" / base.spec.revision / "config.json"
    return None


def architecture_of(base: BaseModelResource, spec_folder: Path) -> Architecture | None:
    block = base.spec.architecture
    if block is not None:
        return Architecture(
            hidden_size=block.hidden_size, num_layers=block.num_layers,
            num_attention_heads=block.num_attention_heads, intermediate_size=block.intermediate_size,
            vocab_size=block.vocab_size, num_key_value_heads=block.num_key_value_heads,
            tie_word_embeddings=block.tie_word_embeddings)
    path = config_path(base, spec_folder)
    try:
        return Architecture.from_config(json.loads(path.read_text())) if path else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not on disk yet, or not a decoder config we understand: no estimate


def architectures(specs: SpecSet) -> dict[ResourceId, Architecture]:
    found = {}
    for loaded in specs.of_kind("BaseModel"):
        assert isinstance(loaded.resource, BaseModelResource)
        architecture = architecture_of(loaded.resource, loaded.path.parent)
        if architecture is not None:
            found[loaded.id] = architecture
    return found
