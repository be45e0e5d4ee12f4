"""Where models and data come from: `hf://org/name`, `s3://bucket/prefix`, `file://path`.

Parsed once here so every consumer (validation, fingerprints, the runtime) agrees on what a
source means. Relative `file://` paths are relative to the spec file that names them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Strict

from reconciler.specs.base import SpecValueError

Scheme = Literal["hf", "s3", "file"]
SCHEMES: tuple[str, ...] = ("hf", "s3", "file")

# Matched whole: `$` also matches before a final newline.
_HF_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_HF_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True, slots=True)
class Source:
    scheme: str
    location: str  # hf: "org/name"; s3: "bucket/prefix"; file: the path as written

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.location}"

    def local_path(self, relative_to: Path) -> Path:
        """For `file://` sources: the path on disk, resolving relative paths against the spec's folder."""
        path = Path(self.location)
        return path if path.is_absolute() else relative_to / path


def parse_source(value: str) -> Source:
    scheme, sep, location = value.partition("://")
    if not sep:
        hint = None
        if "/" in value or "." in value:
            hint = f"did you mean 'file://{value}' or 'hf://{value}'?"
        raise SpecValueError("must be a URI: hf://org/name, s3://bucket/prefix or file://path", hint)
    if scheme not in SCHEMES:
        raise SpecValueError(
            f"unsupported scheme '{scheme}://': use hf://, s3:// or file://",
            "for other object stores, mount them and use file://" if scheme in ("gs", "az", "abfs") else None,
        )
    if scheme == "hf":
        if location.startswith("datasets/") and location.count("/") == 2:
            raise SpecValueError("hf:// takes the repository id only",
                                 f"did you mean 'hf://{location.removeprefix('datasets/')}'?")
        if len(location) > 96 or not _HF_REPO.fullmatch(location):
            raise SpecValueError("must name a Hugging Face repository: hf://org/name")
    elif scheme == "s3":
        bucket = location.split("/", 1)[0]
        if not _S3_BUCKET.fullmatch(bucket):
            raise SpecValueError("must name an S3 bucket: s3://bucket/prefix")
    elif not location:
        raise SpecValueError("file:// needs a path, e.g. file://data/train.jsonl")
    return Source(scheme, location)


def check_source(value: str) -> str:
    parse_source(value)
    return value


def is_pinned_hf_revision(revision: str | None) -> bool:
    """A Hub revision is reproducible only as a full commit sha; branches and tags move."""
    return bool(revision) and bool(_HF_COMMIT.fullmatch(revision or ""))


SourceURI = Annotated[str, Strict(), AfterValidator(check_source)]
