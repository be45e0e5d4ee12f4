"""Which team a spec file belongs to: the one team in tuneops.yaml whose `paths` hold it.

A team's specs are known by team-qualified names (`nlp.support-sft`, specs/base.py
qualified_name), so two teams' `support-sft` are two resources everywhere downstream: graph,
fingerprints, state, MLflow tags and registered models, object names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from reconciler.config import TeamSettings

_GLOB_CHARACTERS = frozenset("*?[")


def path_matches(relative: str, pattern: str) -> bool:
    """`teams/nlp/**` and `teams/nlp/*.yaml` as globs (`*` crosses folders, as in `exclude`);
    a plain `teams/nlp` or `teams/nlp/` names the folder and everything below it."""
    if _GLOB_CHARACTERS & set(pattern):
        return fnmatch.fnmatchcase(relative, pattern)
    folder = pattern.rstrip("/")
    return relative == folder or relative.startswith(folder + "/")


def teams_of_file(relative: str | None, teams: Mapping[str, TeamSettings]) -> list[str]:
    """The teams whose paths hold a file given relative to the spec root (sorted); none for a
    file outside the spec root."""
    if relative is None:
        return []
    return sorted(team for team, settings in teams.items()
                  if any(path_matches(relative, pattern) for pattern in settings.paths))
