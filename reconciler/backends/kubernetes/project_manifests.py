"""A project's Kubernetes manifests, rendered and checked against the cluster version's schemas:
what `tuneops render` prints and what `plan --base --offline` (the CI dry-run) validates."""

from __future__ import annotations

from typing import Any

from reconciler.errors import PermanentError


class ManifestsInvalid(PermanentError):
    """Rendered objects that the Kubernetes schemas refuse: each problem on an `error:` line of
    its own, then their count."""

    def __init__(self, problems: list[str], version: str):
        summary = f"{len(problems)} rendered object(s) do not validate against Kubernetes {version}"
        lines = [*problems, summary]
        super().__init__("\nerror: ".join(lines))
        self.problems = problems


def project_manifests(project: Any, wanted: frozenset | None = None, *, validate: bool = True,
                      error_prefix: str = "") -> list[dict]:
    """The rendered objects of `project` (a `Project`; or of `wanted`), checked against the
    Kubernetes schemas unless told not to. The whole project's begin with its teams' objects
    (backends/kubernetes/teams.py)."""
    from reconciler.backends.kubernetes.manifests import cluster_context, render_project
    from reconciler.backends.kubernetes.render import RenderError
    from reconciler.backends.kubernetes.teams import team_objects
    from reconciler.backends.kubernetes.validate import validate_manifests
    from reconciler.git.info import git_origin, repo_root

    try:
        where = cluster_context(project.specs, git_origin(project.root), repo_root(project.root))
        rendered = render_project(project.specs, project.inputs, where, wanted)
    except RenderError as error:
        raise RenderError(f"{error_prefix}{error}") from None
    objects = [obj for item in rendered for obj in item.objects]
    if wanted is None:  # the whole project: each team's namespace, access and queues come first
        objects = [*team_objects(project.settings), *objects]
    if not validate:
        return objects
    version = project.settings.kubernetes.version
    try:
        problems = validate_manifests(objects, version)
    except ImportError:
        raise PermanentError("checking manifests needs kubernetes-validate: pip install 'tuneops[kubernetes]'"
                             + ("" if error_prefix else " (or pass --no-validate)")) from None
    if problems:
        raise ManifestsInvalid([str(problem) for problem in problems], version)
    return objects
