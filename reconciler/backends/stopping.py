"""What `tuneops stop` stops: a project's live servers and running jobs, all of them or those of
some targets. Nothing is deleted; the next apply starts the servers again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler.backends.base import BackendError

if TYPE_CHECKING:
    from reconciler.specs.base import ResourceId


@dataclass(frozen=True)
class Stopping:
    """The live objects of a backend (as kind and name), and the targets asked for (None: all)."""

    backend: Any  # Backend
    live: frozenset[tuple[str, str]]
    wanted: frozenset[ResourceId] | None = None

    @classmethod
    def of(cls, backend: Any, wanted: frozenset[ResourceId] | None = None) -> Stopping:
        state = backend.observe()
        live = {("Deployment", s.name) for s in state.servers if s.is_live}
        live |= {(j.kind, j.name) for j in state.jobs if j.is_live}
        return cls(backend, frozenset(live), wanted)

    def chosen(self) -> list[tuple[str, str]]:
        """The live objects to stop, in order."""
        asked = None if self.wanted is None else {(t.kind, t.name) for t in self.wanted}
        return [(kind, name) for kind, name in sorted(self.live) if asked is None or (kind, name) in asked]

    def stop(self, kind: str, name: str) -> list[str]:
        """Stop one resource's objects; the handles stopped."""
        try:
            return list(self.backend.stop(kind, name))
        except BackendError as error:
            raise BackendError(f"{kind}/{name}: {error}") from None

    def not_running(self) -> list[ResourceId]:
        """Targets with nothing live: a typo, or already stopped."""
        return [target for target in sorted(self.wanted or ()) if (target.kind, target.name) not in self.live]
