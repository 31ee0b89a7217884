"""What to do when a worker group fails: decided as a value, testable without Ray.

A dead or hung worker (``GroupError.recoverable``, which includes the errors
its peers raise when their collective with it breaks) is worth a fresh group
restored from the last chunk's state, up to ``max_restarts`` times. A rank that
raised on its own (bad data, divergence) would raise again in any group, so it
ends the job at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from worker.errors import GroupError


class FailureDecision(Enum):
    RESTART = "restart"  # a fresh group, restored from the latest state
    RAISE = "raise"  # the failure ends the job, as it is
    EXHAUSTED = "exhausted"  # recoverable, but the restarts ran out


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int

    def decide(self, error: GroupError, restarts_so_far: int) -> FailureDecision:
        """What to do about ``error`` after ``restarts_so_far`` restarts of this job."""
        if not error.recoverable or self.max_restarts == 0:
            return FailureDecision.RAISE
        if restarts_so_far >= self.max_restarts:
            return FailureDecision.EXHAUSTED
        return FailureDecision.RESTART
