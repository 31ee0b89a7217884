"""Why a job's worker group failed, said so a person can act on it.

Errors from N identical ranks are grouped into one line ("ranks 0, 1:
DivergedError: ..."), and every failure names rank, node and process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.checkpoint import TrainingState


@dataclass(frozen=True)
class RankFailure:
    rank: int
    node: str
    pid: int
    cause: str  # "ValueError: ..." or "worker process died ..."
    died: bool = False  # the process is gone (vs. it raised)


class GroupError(RuntimeError):
    """The worker group of a job could not go on; the message names what and where."""

    #: Would a fresh group, restored from the last checkpoint, get past it? A dead or
    #: hung worker: yes. A rank that raised (bad data, divergence) would raise again.
    recoverable = False


class RankFailedError(GroupError):
    def __init__(self, failures: list[RankFailure], during: str):
        self.failures = sorted(failures, key=lambda f: f.rank)
        # A dead rank breaks its peers' collectives (across nodes MPI reports the lost
        # connection as an error): with any death in the group, the others' errors are
        # its doing, and a fresh group is worth it. A rank that raised on its own would
        # raise again, and use up the restarts.
        self.recoverable = any(f.died for f in self.failures)
        super().__init__(f"{during}: {describe_failures(self.failures)}")


class GroupTimeoutError(GroupError):
    """A collective step or chunk did not finish in time: a hang, not an error."""

    recoverable = True


class RestartsExhaustedError(GroupError):
    """Workers kept dying: ``max_restarts`` fresh groups did not get the job through."""


class ReplicaMismatchError(GroupError):
    """Replicas that must be identical hold different parameters."""


class PlacementError(GroupError):
    """The cluster cannot give the job the CPUs its workers need."""


class JobCancelledError(Exception):
    """The job was cancelled between chunks."""


class BelowMinimumError(Exception):
    """An elastic job cannot place even its ``min`` ranks: it goes back to the queue, to
    wait as a queued job does, and resumes from ``state`` (its last chunk's end)."""

    def __init__(self, message: str, state: TrainingState | None):
        super().__init__(message)
        self.state = state


def describe_failures(failures: list[RankFailure]) -> str:
    """``rank 1 (node 10.0.0.2, pid 812): ValueError: ...``; identical causes grouped."""
    by_cause: dict[str, list[RankFailure]] = {}
    for failure in failures:
        by_cause.setdefault(failure.cause, []).append(failure)
    parts = []
    for cause, group in by_cause.items():
        where = "; ".join(f"node {f.node}, pid {f.pid}" for f in group)
        ranks = ", ".join(str(f.rank) for f in group)
        label = "rank" if len(group) == 1 else "ranks"
        parts.append(f"{label} {ranks} ({where}): {cause}")
    return " | ".join(parts)
