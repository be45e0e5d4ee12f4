"""Where a base model's shape comes from, for memory planning: the spec's `architecture:`
block, else the model's config.json when it is already on disk (a file:// source, or the
Hugging Face cache for a pinned hf:// revision), else, only when asked (`fetch=True`: `tuneops
estimate` and a plan that reads state), config.json from the Hub (HF_ENDPOINT, HF_TOKEN),
kept under ~/.cache/tuneops for pinned revisions. Validation and `plan --offline` never touch
the network.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from reconciler.sizing.memory import Architecture
from reconciler.specs.base import ResourceId
from reconciler.specs.basemodel import BaseModelResource
from reconciler.specs.confinement import FileRoots, leads_inside
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


HUB_TIMEOUT_S = 5.0
HUB_ANSWER_LIMIT = 4 * 1024 * 1024
"""Bytes read from a Hub answer (a config.json, a revision's metadata): a peer that sends more is
not read further, so a hostile or broken endpoint cannot fill memory."""


def read_hub_answer(answer: Any) -> str:
    """The body of a Hub answer as text, refusing one longer than HUB_ANSWER_LIMIT."""
    body = answer.read(HUB_ANSWER_LIMIT + 1)
    if len(body) > HUB_ANSWER_LIMIT:
        raise ValueError(f"the answer is larger than {HUB_ANSWER_LIMIT // (1024 * 1024)} MiB")
    return body.decode("utf-8")


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def fetched_config_path(repo: str, revision: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tuneops" / "hub-configs"
    return cache / repo.replace("/", "--") / f"{revision}.json"


# What this process fetched, by (endpoint, repository, revision, with a token): a plan asks once
# per BaseModel, and the daemon and the dashboard plan every few seconds. An answer is kept for
# FETCHED_KEPT_S, a failure (the Hub unreachable, as offline) for FAILURE_KEPT_S.
FETCHED_KEPT_S = 600.0
FAILURE_KEPT_S = 60.0
_fetched: dict[tuple[str, str, str | None, bool], tuple[float, dict | None]] = {}


def fetch_config(repo: str, revision: str | None) -> dict | None:
    """config.json of a Hub model at a revision; None when the Hub cannot be reached, refuses
    (a gated model without HF_TOKEN) or has no such file. Kept on disk only for a pinned commit,
    which cannot change; what the Hub answered is remembered in this process for a while."""
    import time

    from reconciler.specs.sources import is_pinned_hf_revision

    pinned = revision is not None and is_pinned_hf_revision(revision)
    cached = fetched_config_path(repo, revision) if pinned and revision else None
    if cached is not None and cached.is_file():
        try:
            return json.loads(cached.read_text())
        except (OSError, ValueError):
            pass
    key = (hub_endpoint(), repo, revision, bool(os.environ.get("HF_TOKEN")))
    remembered = _fetched.get(key)
    if remembered is not None:
        at, config = remembered
        if time.monotonic() - at < (FETCHED_KEPT_S if config is not None else FAILURE_KEPT_S):
            return config
    config = _fetch_from_hub(repo, revision, cached)
    _fetched[key] = (time.monotonic(), config)
    return config


def _fetch_from_hub(repo: str, revision: str | None, cached: Path | None) -> dict | None:
    import urllib.error
    import urllib.request
    from urllib.parse import quote

    from reconciler.fileio import write_text_atomic

    url = f"{hub_endpoint()}/{quote(repo)}/resolve/{quote(revision or 'main', safe='')}/config.json"
    headers = {"User-Agent": "tuneops"}
    if os.environ.get("HF_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['HF_TOKEN']}"
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=HUB_TIMEOUT_S) as answer:
            text = read_hub_answer(answer)
        config = json.loads(text)
    except (OSError, ValueError, urllib.error.URLError):
        return None
    if cached is not None:
        with contextlib.suppress(OSError):  # a read-only home: fetched again next time
            write_text_atomic(cached, text)
    return config if isinstance(config, dict) else None


def architecture_of(base: BaseModelResource, spec_folder: Path, roots: tuple[Path, ...], *,
                    fetch: bool = False) -> Architecture | None:
    block = base.spec.architecture
    if block is not None:
        return Architecture(
            hidden_size=block.hidden_size, num_layers=block.num_layers,
            num_attention_heads=block.num_attention_heads, intermediate_size=block.intermediate_size,
            vocab_size=block.vocab_size, num_key_value_heads=block.num_key_value_heads,
            tie_word_embeddings=block.tie_word_embeddings)
    path = config_path(base, spec_folder)
    if path is not None and parse_source(base.spec.source).scheme == "file" and not leads_inside(path, roots):
        path = None  # a folder outside the spec repository is not read (validation says so)
    config = None
    with contextlib.suppress(OSError, ValueError):  # not on disk yet
        config = json.loads(path.read_text()) if path else None
    source = parse_source(base.spec.source)
    if config is None and fetch and source.scheme == "hf":
        config = fetch_config(source.location, base.spec.revision)
    try:
        return Architecture.from_config(config) if config else None
    except (KeyError, TypeError, ValueError):
        return None  # not a decoder config we understand: no estimate


def architectures(specs: SpecSet, *, fetch: bool = False) -> dict[ResourceId, Architecture]:
    found = {}
    roots = FileRoots.of_project(specs.root, specs.settings.policy.allowed_file_roots).all
    for loaded in specs.of_kind("BaseModel"):
        assert isinstance(loaded.resource, BaseModelResource)
        architecture = architecture_of(loaded.resource, loaded.path.parent, roots, fetch=fetch)
        tokens = loaded.resource.spec.tokens
        if architecture is not None and tokens is not None and tokens.add:
            # what is trained: the vocabulary grown by the added tokens (at most: some may be
            # in it already, or fit spare embedding rows)
            architecture = replace(architecture, vocab_size=architecture.vocab_size + len(tokens.add))
        if architecture is not None:
            found[loaded.id] = architecture
    return found
