"""The ONLY bridge from the service to :mod:`worker` (and, through it, to Ray).

Everything else in ``service/`` speaks in job specs and step records.
"""

from __future__ import annotations

from collections.abc import Callable

from common.collective import LocalAllReduce
from common.data import check_spec_matches_data, load_dataset
from common.records import StepRecord
from common.schemas import JobSpec
from worker.trainer import Trainer

#: Steps between progress callbacks when running in this process.
LOCAL_CHUNK_STEPS = 50


def run_in_process(spec: JobSpec, on_records: Callable[[list[StepRecord]], None]) -> Trainer:
    """Train ``spec`` in this process (world size 1); report records chunk by chunk.

    Returns the finished trainer (its ``net`` holds the final weights).
    """
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    check_spec_matches_data(spec, data)
    trainer = Trainer(spec, data, LocalAllReduce())
    while not trainer.done:
        on_records(trainer.run(LOCAL_CHUNK_STEPS).records)
    return trainer
