"""Trained models of finished jobs, loaded once and shared by predict requests.

A ``Network`` reuses its buffers between calls, so each cached one has a lock.
"""

from __future__ import annotations

import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy.typing as npt

from common.nn import Network
from common.schemas import JobPublic, JobState
from service.errors import JobNotFoundError
from service.onnx_export import to_onnx

Array = npt.NDArray[Any]


class ModelCache:
    def __init__(self, model_path: Callable[[str], Path], size: int = 8):
        self.model_path, self.size = model_path, size
        self._lock = threading.Lock()
        self._nets: OrderedDict[str, tuple[Network, threading.Lock]] = OrderedDict()

    def predict(self, job_id: str, x: Any) -> tuple[Array, Network]:
        """Outputs of job ``job_id``'s model for ``x``; ValueError names a bad shape."""
        net, lock = self._get(job_id)
        with lock:
            return net.predict(x), net

    def onnx(self, job_id: str, name: str) -> bytes:
        """Job ``job_id``'s model as ONNX (see :mod:`service.onnx_export`)."""
        net, lock = self._get(job_id)
        with lock:
            return to_onnx(net, name)

    def export(self, job: JobPublic, directory: Path) -> list[Path]:
        """A succeeded job's model files written into ``directory``: the .npz and the .onnx
        (none for a job that did not succeed)."""
        source = self.model_path(job.id)
        if job.state != JobState.succeeded or not source.exists():
            return []
        npz, onnx = directory / f"{job.name}.npz", directory / f"{job.name}.onnx"
        shutil.copyfile(source, npz)
        onnx.write_bytes(self.onnx(job.id, job.name))
        return [npz, onnx]

    def _get(self, job_id: str) -> tuple[Network, threading.Lock]:
        with self._lock:
            if job_id in self._nets:
                self._nets.move_to_end(job_id)
                return self._nets[job_id]
            try:
                entry = (Network.load(self.model_path(job_id)), threading.Lock())
            except FileNotFoundError:  # deleted between the request's check and now
                raise JobNotFoundError(job_id) from None
            self._nets[job_id] = entry
            if len(self._nets) > self.size:
                self._nets.popitem(last=False)
            return entry

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._nets.pop(job_id, None)
