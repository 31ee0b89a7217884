"""The end-to-end workload, one definition for the project and its references: the
784-1024-1024-10 relu MLP with softmax cross-entropy, SGD (lr 0.01, momentum 0.9), global
batch 512, 3 epochs of 60,000 x 784 synthetic samples (the project's seeded teacher data),
float32, 2 workers with one CPU and one BLAS thread each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.engine import model
from common.data import load_dataset
from common.schemas import JobSpec

SIZES = (784, 1024, 1024, 10)
SAMPLES, EPOCHS, BATCH, WORKERS, LR, MOMENTUM, SEED = 60_000, 3, 512, 2, 0.01, 0.9, 0


def job_spec() -> dict[str, Any]:
    """The project's job: every step in order over the same seeded data."""
    return {"name": "end-to-end", "seed": SEED, "batch_size": BATCH, "epochs": EPOCHS,
            "workers": WORKERS, "allreduce": "mpi", "cpus_per_worker": 1,
            "model": model(list(SIZES)).model_dump(),
            "optimizer": {"kind": "sgd", "lr": LR, "momentum": MOMENTUM},
            "data": {"dataset": "synthetic", "validation_fraction": 0.0,
                     "synthetic": {"samples": SAMPLES, "features": SIZES[0],
                                   "outputs": SIZES[-1]}}}


def save_arrays(directory: Path) -> tuple[Path, Path]:
    """The same training data for the references, as .npy files (memory-mapped by them)."""
    spec = JobSpec.model_validate(job_spec())
    data = load_dataset(spec.data, seed=spec.seed, dtype="float32")
    x_path, y_path = directory / "x.npy", directory / "y.npy"
    np.save(x_path, np.ascontiguousarray(data.x_train, dtype=np.float32))
    np.save(y_path, data.y_train.astype(np.int64))
    return x_path, y_path
