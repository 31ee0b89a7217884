"""Training checkpoints: enough to continue a run exactly as if nothing had happened.

A checkpoint holds the flat parameters, the optimizer's flat state arrays, the
training controls' state (the plateau schedule's and early stopping's counters, early
stopping's best parameters) and the step. The data order needs no saved RNG state: it
is a pure function of ``(seed, epoch)`` (:func:`common.data.epoch_order`), and the epoch
follows from the step. Files are .npz without pickle, written atomically (temporary file,
fsync, rename, fsync of the directory), named ``step-<step>.npz``; the newest
``keep`` are kept.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class TrainingState:
    """Rank 0's state after ``step`` steps (every replica holds the same)."""

    step: int
    params: Array
    optimizer: dict[str, Array] = field(default_factory=dict)
    controls: dict[str, Array] = field(default_factory=dict)  # "schedule.*", "early.*"

    def copy(self) -> TrainingState:
        """The same state in arrays of its own (not views of a buffer it came in)."""
        return TrainingState(self.step, self.params.copy(),
                             {k: v.copy() for k, v in self.optimizer.items()},
                             {k: v.copy() for k, v in self.controls.items()})


def save_checkpoint(directory: Path, state: TrainingState, keep: int = 3) -> Path:
    """Write ``state`` as ``directory/step-<step>.npz`` atomically; prune to the newest ``keep``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{state.step:010d}.npz"
    partial = directory / f".{path.name}.partial"
    arrays: dict[str, Any] = {"step": np.array(state.step), "params": state.params,
                              **{f"optimizer.{k}": v for k, v in state.optimizer.items()},
                              **{f"controls.{k}": v for k, v in state.controls.items()}}
    with open(partial, "wb") as f:
        np.savez(f, allow_pickle=False, **arrays)
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)
    fsync_directory(directory)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob("step-*.npz"))


def load_checkpoint(path: Path) -> TrainingState:
    with np.load(path, allow_pickle=False) as archive:
        return TrainingState(int(archive["step"]), archive["params"],
                             _prefixed(archive, "optimizer."), _prefixed(archive, "controls."))


def _prefixed(archive: Any, prefix: str) -> dict[str, Array]:
    return {k.removeprefix(prefix): archive[k] for k in archive.files if k.startswith(prefix)}


def latest_checkpoint(directory: Path) -> tuple[TrainingState, Path] | None:
    """The newest checkpoint that loads; an unreadable one is skipped for the one before."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return load_checkpoint(path), path
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            continue
    return None


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (the entry, not only the file's bytes)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
