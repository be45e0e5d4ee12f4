"""`file://` paths stay inside the spec repository, or inside roots the project explicitly allows.

In a GitOps system the author of a pull request is not the operator of the machine that applies
it. A spec naming `file:///etc/passwd`, `file://../../home/ops/.ssh/id_rsa` or a committed
symlink `data/link.csv -> /etc/passwd` would otherwise have a job copy that file into a dataset
(or an error message) that the author can read back. So every path a spec names (a Dataset's
data, a BaseModel's folder and every file in it, a chat template) is resolved, symlinks
followed, and refused unless it lands inside the repository (its Git root, or the project
folder when it is not in Git) or inside `policy.allowedFileRoots` of tuneops.yaml.

The check runs twice. Validation refuses the spec with its file:line. The job checks again
just before it reads, because a symlink can change between plan and run and because a job file
is only data: the roots a job may read come from the process that started it (the environment
variable FILE_ROOTS_ENV, which the local backend and the rendered Kubernetes Jobs set from the
operator's checkout and settings), never from the job file. A job started without it reads no
`file://` path at all.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import PermanentError

FILE_ROOTS_ENV = "TUNEOPS_FILE_ROOTS"
"""os.pathsep-separated absolute folders a job may read `file://` paths from."""
SETTING = "policy.allowedFileRoots"
_MAX_WALKED = 100_000  # entries of a model folder looked at, at most: more is not a model folder


class OutsideRoots(PermanentError, ValueError):
    """A path resolves outside every folder it may be read from; the message says where it leads."""


def repository_root(folder: Path) -> Path:
    """The Git repository `folder` is in (as git finds it: the nearest `.git` up), else `folder`.
    A repository at the home folder or `/` (dotfiles kept in Git) is not taken: it would let specs
    read `~/.ssh`; the folder itself is the root then."""
    folder = folder.absolute()
    too_wide = {Path("/"), Path.home().absolute()}
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return folder if candidate in too_wide and candidate != folder else candidate
    return folder


@dataclass(frozen=True)
class FileRoots:
    """Where `file://` paths may lead: the spec repository, and the roots tuneops.yaml allows."""

    repository: Path
    allowed: tuple[Path, ...] = ()

    @classmethod
    def of_project(cls, project_root: Path, allowed: Iterable[str] = ()) -> FileRoots:
        return cls(_resolved(repository_root(project_root)), tuple(_resolved(Path(root)) for root in allowed))

    @property
    def all(self) -> tuple[Path, ...]:
        return (self.repository, *self.allowed)

    def environment_value(self, repository: str | None = None) -> str:
        """FILE_ROOTS_ENV for a job: `repository` replaces the repository where the job sees it
        elsewhere (a pod's checkout)."""
        return os.pathsep.join([repository or str(self.repository), *map(str, self.allowed)])

    def describe(self) -> str:
        where = f"outside the spec repository {self.repository}"
        if self.allowed:
            return f"{where} and {SETTING} ({', '.join(map(str, self.allowed))})"
        return where


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare as written
        return path.absolute()


def resolve_inside(path: Path, roots: Sequence[Path], outside: str) -> Path:
    """`path` with every symlink followed, when it (and, for a folder, everything in it) lies in
    one of `roots`; else OutsideRoots saying `outside` (what the roots are, in words)."""
    target = _resolve(path)
    if not _within(target, roots):
        raise OutsideRoots(_leads(path, target, outside))
    if target.is_dir():
        _check_folder(target, roots, outside)
    return target


def leads_inside(path: Path, roots: Sequence[Path]) -> bool:
    """Whether reading `path` stays inside `roots`, for readers that skip rather than report
    (the planner's estimates); validation reports the same paths with their file:line."""
    try:
        resolve_inside(path, roots, "")
    except OutsideRoots:
        return False
    return True


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except RuntimeError:  # Python < 3.13 reports a symlink loop this way
        raise OutsideRoots(f"{path} is a symlink loop") from None
    except OSError as error:
        raise OutsideRoots(f"{path} cannot be resolved ({error.strerror or error})") from None


def _within(target: Path, roots: Sequence[Path]) -> bool:
    return any(target == root or target.is_relative_to(root) for root in roots)


def _leads(path: Path, target: Path, outside: str) -> str:
    if target != path.absolute():
        return f"{path} resolves to {target}, {outside}"
    return f"{path} is {outside}"


def _check_folder(folder: Path, roots: Sequence[Path], outside: str) -> None:
    """Every symlink under `folder`, files and folders alike, hidden ones too (a loader reads
    whatever a folder holds), must stay inside `roots`; symlinked folders are walked as well."""
    pending, seen, walked = [folder], {folder}, 0
    while pending:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue  # unreadable: the reader says so when it gets there
        for entry in entries:
            walked += 1
            if walked > _MAX_WALKED:
                raise OutsideRoots(f"{folder} holds over {_MAX_WALKED} files and folders; "
                                   "is it the folder you meant?")
            entry_path = Path(entry.path)
            if entry.is_symlink():
                target = _resolve(entry_path)
                if not _within(target, roots):
                    raise OutsideRoots(_leads(entry_path, target, outside))
                if target.is_dir() and target not in seen and not _within(target, [folder]):
                    seen.add(target)
                    pending.append(target)
            elif entry.is_dir(follow_symlinks=False):
                pending.append(entry_path)


def job_roots(environ: dict[str, str] | os._Environ[str] | None = None) -> tuple[Path, ...]:
    """The folders a job may read `file://` paths from, as the process that started it said."""
    value = (os.environ if environ is None else environ).get(FILE_ROOTS_ENV, "")
    parts = [Path(part) for part in value.split(os.pathsep) if part]
    roots = tuple(_resolved(part) for part in parts if part.is_absolute())
    if not roots:
        raise OutsideRoots(f"this job was started without {FILE_ROOTS_ENV}, the folders it may read file:// "
                           "paths from (tuneops apply sets it to the spec repository and "
                           f"{SETTING}); to run a job by hand, set it, e.g. {FILE_ROOTS_ENV}=/path/to/repo")
    return roots


def resolve_for_job(path: Path) -> Path:
    """A `file://` path a job is about to read, resolved and checked against `job_roots()`."""
    roots = job_roots()
    allowed = os.pathsep.join(map(str, roots))
    return resolve_inside(path, roots, f"outside the folders this job may read ({FILE_ROOTS_ENV}={allowed})")
