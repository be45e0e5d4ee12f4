"""Where jobs and model servers run: the protocol (base), this machine (local).

Kept light on purpose: the supervisor (`python -m reconciler.backends.supervise`) imports this package
before every job starts, so only the standard-library protocol is imported here.
"""

from reconciler.backends.base import (
    Backend,
    BackendError,
    BackendState,
    JobObservation,
    JobPhase,
    ServerObservation,
    ServerPhase,
)

__all__ = ["Backend", "BackendError", "BackendState", "JobObservation", "JobPhase", "ServerObservation",
           "ServerPhase"]
