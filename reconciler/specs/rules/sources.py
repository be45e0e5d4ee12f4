"""Rules on where models and data come from: pinned remote sources, and local files that
exist, can be read and stay inside the spec repository.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reconciler.specs.basemodel import BaseModelResource
from reconciler.specs.confinement import SETTING, FileRoots, OutsideRoots, resolve_inside
from reconciler.specs.dataset import DatasetResource
from reconciler.specs.problems import Problem
from reconciler.specs.rules.registry import ERROR, WARNING, RuleContext, problem, rule
from reconciler.specs.sources import is_pinned_hf_revision, parse_source


@rule
def sources_are_pinned(ctx: RuleContext) -> Iterator[Problem]:
    """Which schemes are allowed (policy.allowedSources) and whether remote code may run
    (policy.trustRemoteCode) are built-in Policies: specs/builtin_policies.py."""
    for spec in ctx.specs:
        resource = spec.resource
        if not isinstance(resource, BaseModelResource | DatasetResource):
            continue
        source = parse_source(resource.spec.source)
        if source.scheme == "hf":
            revision = resource.spec.revision
            if revision is None:
                yield problem(spec, WARNING, "unpinned-revision",
                              "hf:// source without a revision: the Hub copy can change under you",
                              ("spec", "source"), hint="pin revision to a 40-character commit sha")
            elif not is_pinned_hf_revision(revision):
                yield problem(spec, WARNING, "unpinned-revision",
                              "revision is not a commit sha, so it can move",
                              ("spec", "revision"), value=revision,
                              hint="pin revision to a 40-character commit sha")


@rule
def local_files_exist(ctx: RuleContext) -> Iterator[Problem]:
    """Local data is part of what a spec means, so it must be there, and inside the spec
    repository (or policy.allowedFileRoots): see specs/confinement.py. A local *model* folder
    may not exist yet (a first step can build it), so only where it leads is checked."""
    roots = FileRoots.of_project(ctx.specs.root, ctx.settings.policy.allowed_file_roots)
    for spec in ctx.specs:
        resource = spec.resource
        checks: list[tuple[str, tuple[Any, ...], str]] = []
        if isinstance(resource, DatasetResource):
            checks.append((resource.spec.source, ("spec", "source"), "dataset file"))
        elif isinstance(resource, BaseModelResource):
            checks.append((resource.spec.source, ("spec", "source"), "model folder"))
            if resource.spec.chat_template.startswith("file://"):
                checks.append((resource.spec.chat_template, ("spec", "chatTemplate"), "chat template"))
        for uri, path, what in checks:
            source = parse_source(uri)
            if source.scheme != "file":
                continue
            local = source.local_path(spec.path.parent)
            try:
                found = local.exists()
                resolve_inside(local, roots.all, roots.describe())  # not built yet: where it would be
            except OutsideRoots as error:
                yield problem(spec, ERROR, "outside-repository", f"{what} {error}", path, value=uri,
                              hint=f"keep {what}s in the spec repository, or list the folder in "
                                   f"{SETTING} of tuneops.yaml")
                continue
            except (OSError, ValueError) as error:  # a name too long, a NUL byte
                yield problem(spec, ERROR, "missing-file", f"{what} path is not usable: "
                              f"{getattr(error, 'strerror', None) or error}", path, value=uri)
                continue
            if what == "model folder":
                continue
            if not found:
                yield problem(spec, ERROR, "missing-file",
                              f"{what} not found: {local}", path, value=uri,
                              hint="paths in file:// are relative to the spec file's folder")
                continue
            unreadable = _unreadable(local)
            if unreadable:
                yield problem(spec, ERROR, "missing-file", f"{what} cannot be read: {unreadable}: {local}",
                              path, value=uri)


def _unreadable(path: Path) -> str | None:
    """Why a file or folder that exists cannot be read, or None. Opened without blocking (a
    FIFO would wait for a writer) and closed at once: what a job reads, tried now."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as error:
        return error.strerror or str(error)
    return None
