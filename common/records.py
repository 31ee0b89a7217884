"""What a training run reports: one record per step, plus per-epoch validation.

Plain dataclasses (not pydantic models): the trainer makes one per step, and
at ~100 us per step on small nets construction cost is visible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.checkpoint import TrainingState

Array = npt.NDArray[Any]

#: The phases of a step a rank times, in their order within the step (a timeline's spans).
SPAN_PHASES = ("compute", "wait", "allreduce", "update")
#: The columns of a spans array: the step's start (unix seconds), then each phase's seconds.
SPAN_COLUMNS = ("start", *SPAN_PHASES)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One synchronized step, as every rank saw it.

    ``loss`` is the mean over the GLOBAL batch (reduced across ranks). Times
    are seconds on the reporting rank: ``compute`` = gathering the shard plus
    forward and backward; ``wait`` = how long this rank waited in the
    all-reduce for the slowest rank's compute; ``allreduce`` = the rest of the
    all-reduce call (the transfer); ``update`` = the optimizer step.
    ``val_loss``/``val_accuracy`` are set on the last step of each epoch. ``lr`` is the
    learning rate the step's update used; ``grad_norm`` the global L2 norm of the
    averaged gradient, before any clipping.
    """

    step: int  # 1-based count of steps done
    epoch: int  # 0-based epoch this step belongs to
    loss: float
    compute: float
    allreduce: float
    wait: float
    update: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    lr: float | None = None
    grad_norm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class EarlyStopReport:
    """Where early stopping stands: its best epoch so far, and the epoch it stopped after
    (None while training goes on). Epochs are 0-based."""

    best_epoch: int | None
    stopped_at_epoch: int | None


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """What one rank returns from ``run(steps=k)``."""

    rank: int
    records: list[StepRecord]
    step: int  # steps done after this chunk
    fingerprint: str | None  # sha256 of the parameters, when a check is due
    state: TrainingState | None = None  # rank 0's state at the chunk's end (others: None)
    total_steps: int = 0  # the job's steps: fewer than planned once early stopping stops it
    early_stopping: EarlyStopReport | None = None  # when the job stops early
    #: This rank's timings, (steps, 5) float64 in ``SPAN_COLUMNS`` order; the group's result
    #: carries every rank's, (ranks, steps, 5).
    spans: Array | None = None


def step_spans(records: list[StepRecord], starts: list[float]) -> Array:
    """(steps, 5) float64: each step's start time (unix s) and its phases' seconds."""
    spans = np.empty((len(records), len(SPAN_COLUMNS)))
    for row, (record, start) in enumerate(zip(records, starts, strict=True)):
        spans[row] = (start, record.compute, record.wait, record.allreduce, record.update)
    return spans


def curve_stride(total_steps: int, max_points: int) -> int:
    """Keep every ``stride``-th step's point so that a job of ``total_steps`` keeps at most
    about ``max_points`` (plus its epochs' last steps)."""
    return max(1, -(-total_steps // max_points))


def kept_on_curve(record: StepRecord, stride: int, total_steps: int) -> bool:
    """Is ``record`` one of the curve's points at ``stride``? Every stride-th step, every
    step with a validation (an epoch's last), the first and the final step."""
    return (record.step % stride == 0 or record.val_loss is not None
            or record.step in (1, total_steps))
