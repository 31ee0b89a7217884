"""TensorBoard event files of every job, under ``<data dir>/tensorboard/<job id>``.

The scalars are the curve's points (so a long job's files are bounded as its curve is):
per step ``loss``, ``lr`` and ``grad_norm``; at each epoch's last step ``val/loss`` and
``val/accuracy``. Written by ``tensorboardX``; the store keeps the last step written, so
a job run again from a checkpoint does not write its steps twice.
"""

from __future__ import annotations

import io
import tarfile

from tensorboardX import SummaryWriter

from common.records import StepRecord
from service.config import Settings
from service.store import SqliteJobStore

#: Points read from the store per batch.
BATCH = 5_000
SCALARS = {"loss": "loss", "lr": "lr", "grad_norm": "grad_norm", "val_loss": "val/loss",
           "val_accuracy": "val/accuracy"}


class TensorBoardSink:
    name = "tensorboard"

    def __init__(self, store: SqliteJobStore, settings: Settings):
        self.store, self.settings = store, settings
        self._writers: dict[str, SummaryWriter] = {}

    def pending(self, limit: int) -> list[str]:
        return self.store.behind_tensorboard(limit)

    def sync(self, job_id: str) -> None:
        written = self.store.tensorboard_step(job_id)
        while points := self.store.curve(job_id, since=written, limit=BATCH):
            writer = self._writer(job_id)
            for point in points:
                write_point(writer, point)
            writer.flush()  # on disk before the store says so
            written = points[-1].step
            self.store.set_tensorboard_step(job_id, written)
        job = self.store.get(job_id)
        if job.state.terminal:
            self.store.set_tensorboard_step(job_id, max(written, job.step))
            if (writer := self._writers.pop(job_id, None)) is not None:
                writer.close()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def tar(self, job_id: str) -> bytes:
        """The job's event files as a gzipped tar, under ``<job id>/``."""
        out = io.BytesIO()
        directory = self.settings.tensorboard_dir(job_id)
        with tarfile.open(fileobj=out, mode="w:gz") as archive:
            if directory.is_dir():
                archive.add(directory, arcname=job_id)
        return out.getvalue()

    def _writer(self, job_id: str) -> SummaryWriter:
        if job_id not in self._writers:
            self._writers[job_id] = SummaryWriter(str(self.settings.tensorboard_dir(job_id)),
                                                  flush_secs=3600)
        return self._writers[job_id]


def write_point(writer: SummaryWriter, point: StepRecord) -> None:
    for field, tag in SCALARS.items():
        value = getattr(point, field)
        if value is not None:
            writer.add_scalar(tag, value, point.step)
