"""The independent reference for N-worker results: the same spec on ONE process, world size 1,
no Ray, no MPI (the same trainer code; only the all-reduce differs)."""

from __future__ import annotations

import numpy as np

from common.collective import LocalAllReduce
from common.data import Dataset, load_dataset
from common.records import StepRecord
from common.schemas import JobSpec
from worker.trainer import Trainer


def single_process_run(spec: JobSpec, data: Dataset | None = None
                       ) -> tuple[np.ndarray, list[StepRecord]]:
    """``(final flat parameters, step records)`` of ``spec`` with 1 worker, on ``data``
    (default: the dataset the spec names)."""
    single = spec.model_copy(update={"workers": 1, "allreduce": "local"})
    data = data or load_dataset(single.data, seed=single.seed, dtype=single.dtype)
    trainer = Trainer(single, data, LocalAllReduce())
    records = trainer.run(trainer.total_steps).records
    return trainer.net.params.copy(), records
