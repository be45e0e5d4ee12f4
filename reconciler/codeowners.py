"""CODEOWNERS from tuneops.yaml's teams: each team's folders owned by its `owners`, so a pull
request that changes a team's specs asks that team for review. Written as one marked block, so
`tuneops codeowners --write` updates it in place and keeps every other line of the file."""

from __future__ import annotations

from pathlib import PurePosixPath

from reconciler.config import PROJECT_FILE, ProjectSettings

BEGIN = "# BEGIN tuneops teams (written by `tuneops codeowners --write`; edit teams in tuneops.yaml)"
END = "# END tuneops teams"
LOCATIONS = (".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS")
"""Where GitHub looks, in its order; a new file goes to the first."""


def owner_pattern(path: str, prefix: str) -> str:
    """A team path as a CODEOWNERS pattern, anchored at the repository root: `teams/nlp/**`
    stays a glob; a plain folder `teams/nlp` owns everything below it (`/teams/nlp/`)."""
    anchored = str(PurePosixPath("/", prefix, path)) if prefix else "/" + path
    anchored = anchored.replace(" ", "\\ ")  # a spec root in a folder with a space
    if not any(character in path for character in "*?"):
        return anchored.rstrip("/") + "/"
    return anchored


def block(settings: ProjectSettings, prefix: str = "") -> list[str]:
    """The block's lines: a comment per team and one line per path with owners. A team with no
    owners gets a comment saying so (nobody is asked). Later lines win in CODEOWNERS: the block
    is meant to come after any catch-all rule."""
    lines = [BEGIN]
    for team, found in settings.teams.items():
        if not found.owners:
            lines.append(f"# team {team}: no owners in {PROJECT_FILE}")
            continue
        lines.append(f"# team {team}")
        lines += [f"{owner_pattern(path, prefix)} {' '.join(found.owners)}" for path in found.paths]
    return [*lines, END]


class MarkersBroken(ValueError):
    """A CODEOWNERS file whose tuneops block is not one BEGIN line followed by one END line:
    which lines are ours is unknown, so none is touched."""


def merged(existing: str, lines: list[str]) -> str:
    """`existing` with its tuneops block replaced by `lines` (appended when it has none)."""
    current = existing.splitlines()
    begins = [index for index, line in enumerate(current) if line.strip().startswith("# BEGIN tuneops teams")]
    ends = [index for index, line in enumerate(current) if line.strip() == END]
    if not begins and not ends:
        current += ([""] if current and current[-1].strip() else []) + lines
    elif len(begins) == 1 and len(ends) == 1 and begins[0] < ends[0]:
        current[begins[0]:ends[0] + 1] = lines
    else:
        raise MarkersBroken(f"{len(begins)} BEGIN and {len(ends)} END line(s) of the tuneops block, where "
                            "one of each, in that order, belongs: fix the file by hand")
    return "\n".join(current) + "\n"
