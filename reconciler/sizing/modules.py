"""Do a FineTune's `adapter.targetModules` name modules its base model has? A typo such as
`q_prj` would otherwise fail only when the job loads the model (peft: "Target modules not found").

The module names come from the model's weights when the folder is on disk (a file:// source, or
the Hugging Face cache for a pinned hf:// revision): the tensor names in
`model.safetensors.index.json`, or in a `.safetensors` file's JSON header, read without torch.
Otherwise from config.json's `model_type` and a table of the linear layers of common
architectures; the config is fetched from the Hub only when asked (`fetch=True`: a plan that reads
state) and the BaseModel has no `architecture:` block, as for memory planning. Unknown models are
not checked, so an unknown never blocks.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import struct
from collections.abc import Iterator
from pathlib import Path

from reconciler.sizing.architectures import config_path, fetch_config
from reconciler.sizing.capacity import base_model_of
from reconciler.specs.basemodel import BaseModelResource
from reconciler.specs.confinement import FileRoots, leads_inside
from reconciler.specs.finetune import FineTuneResource
from reconciler.specs.problems import Problem, Severity
from reconciler.specs.rules.registry import problem
from reconciler.specs.sources import parse_source
from reconciler.specs.specset import SpecSet

_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
               "embed_tokens", "lm_head")
_NEOX_LIKE = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
MODULES_BY_MODEL_TYPE: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo",
                     "olmo2", "granite", "smollm3", "cohere", "starcoder2_llama"), _LLAMA_LIKE),
    **dict.fromkeys(("mixtral",), ("q_proj", "k_proj", "v_proj", "o_proj", "gate", "w1", "w2", "w3",
                                   "embed_tokens", "lm_head")),
    **dict.fromkeys(("qwen2_moe", "qwen3_moe"), (*_LLAMA_LIKE, "gate", "shared_expert_gate")),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "embed_tokens", "lm_head"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2", "embed_tokens", "lm_head"),
    "gpt2": ("c_attn", "c_proj", "c_fc", "wte", "wpe", "lm_head"),
    "gpt_neox": (*_NEOX_LIKE, "embed_in", "embed_out"),
    "falcon": (*_NEOX_LIKE, "word_embeddings", "lm_head"),
}
"""model_type -> names of its linear (and embedding) modules, as peft matches them."""

_HEADER_LIMIT = 16 * 1024 * 1024  # a safetensors JSON header larger than this is not a model we read


def _tensor_names(folder: Path) -> list[str] | None:
    """Tensor names of the model's weights in `folder`, from the index or the file headers."""
    index = folder / "model.safetensors.index.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return list(json.loads(index.read_text())["weight_map"])
    names: list[str] = []
    files = sorted(folder.glob("*.safetensors"))
    for file in files:
        try:
            with file.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > _HEADER_LIMIT:
                    return None
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error):
            return None
        names += [name for name in header if name != "__metadata__"]
    return names or None


def _module_paths(tensors: list[str]) -> frozenset[str]:
    """Dotted module paths that hold parameters: `model.layers.0.self_attn.q_proj` for
    `model.layers.0.self_attn.q_proj.weight`."""
    return frozenset(name.rpartition(".")[0] for name in tensors if "." in name)


class KnownModules:
    """The modules a base model is known to have, and how we know."""

    def __init__(self, paths: frozenset[str], source: str, *, by_name_only: bool = False):
        self.paths, self.source, self.by_name_only = paths, source, by_name_only
        self.leaves = sorted({path.rpartition(".")[2] for path in paths})

    def has(self, target: str) -> bool:
        if self.by_name_only:  # a table of names: only the last part of a dotted path is known
            return target.rpartition(".")[2] in self.leaves
        # peft matches a list entry against a module's full name, or a suffix after a dot.
        return any(path == target or path.endswith("." + target) for path in self.paths)

    def nearest(self, target: str) -> str | None:
        close = difflib.get_close_matches(target.rpartition(".")[2], self.leaves, n=1, cutoff=0.6)
        return close[0] if close else None


def known_modules(base: BaseModelResource, spec_folder: Path, roots: tuple[Path, ...], *,
                  fetch: bool = False) -> KnownModules | None:
    source = parse_source(base.spec.source)
    config_file = config_path(base, spec_folder)
    folder = config_file.parent if config_file is not None else None
    if folder is not None and source.scheme == "file" and not leads_inside(folder, roots):
        return None  # a folder outside the spec repository is not read (validation says so)
    if folder is not None and folder.is_dir():
        tensors = _tensor_names(folder)
        if tensors:
            # lm_head holds no tensor of its own when tied to the embeddings, yet peft finds it
            return KnownModules(_module_paths(tensors) | {"lm_head"}, "its weights")
    config = None
    with contextlib.suppress(OSError, ValueError):
        config = json.loads(config_file.read_text()) if config_file else None
    # An `architecture:` block is how a user says "do not read the config": no Hub request for it.
    if config is None and fetch and source.scheme == "hf" and base.spec.architecture is None:
        config = fetch_config(source.location, base.spec.revision)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    names = MODULES_BY_MODEL_TYPE.get(model_type) if isinstance(model_type, str) else None
    if names is None:
        return None
    return KnownModules(frozenset(names), f"model_type {model_type}", by_name_only=True)


def check(specs: SpecSet, *, fetch: bool = False) -> Iterator[Problem]:
    """An error per target module the FineTune's base model does not have, with a did-you-mean."""
    roots = FileRoots.of_project(specs.root, specs.settings.policy.allowed_file_roots).all
    found: dict[str, KnownModules | None] = {}
    for loaded in specs.of_kind("FineTune"):
        fine_tune = loaded.resource
        assert isinstance(fine_tune, FineTuneResource)
        targets = fine_tune.spec.adapter.target_modules
        if fine_tune.spec.adapter.type == "none" or isinstance(targets, str):
            continue
        base_id = base_model_of(specs, fine_tune)
        base_spec = specs.get(base_id) if base_id else None
        if base_spec is None or not isinstance(base_spec.resource, BaseModelResource):
            continue
        if base_id.name not in found:
            found[base_id.name] = known_modules(base_spec.resource, base_spec.path.parent, roots, fetch=fetch)
        known = found[base_id.name]
        if known is None:
            continue
        for index, target in enumerate(targets):
            if known.has(target):
                continue
            nearest = known.nearest(target)
            hint = f"did you mean '{nearest}'?" if nearest else \
                "its modules include " + ", ".join(known.leaves[:12])
            yield problem(loaded, Severity.ERROR, "unknown-module",
                          f"BaseModel '{base_id.name}' has no module '{target}' (from {known.source})",
                          ("spec", "adapter", "targetModules", index), hint=hint)
