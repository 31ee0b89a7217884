"""What a benchmark ran on, and a median timer (these machines are shared and noisy)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info

from common.dataset_files import LayoutWriter
from common.records import StepRecord
from worker.driver import Recorder


def machine_info() -> dict[str, Any]:
    blas = [{"api": p.get("internal_api"), "version": p.get("version"),
             "architecture": p.get("architecture"), "threads": p.get("num_threads")}
            for p in threadpool_info() if p.get("user_api") == "blas"]
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "numpy": np.__version__, "blas": blas,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}


def cpu_model() -> str:
    """The CPU's model name, as the kernel reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_of(pid: int) -> dict[str, int]:
    """Bytes of process ``pid``'s memory as the kernel counts it: ``VmRSS`` (resident),
    ``VmHWM`` (its peak), ``RssAnon`` (resident and not a mapped file), ``RssFile``."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


class RankMemory(Recorder):
    """Hooks that record every step and, after each chunk, the peak ``RssAnon`` of every
    rank of the running group (same machine): ``peaks[rank]`` in bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.peaks: dict[int, int] = {}

    def records(self, records: list[StepRecord]) -> None:
        super().records(records)
        for rank in self.groups[-1]:
            anon = memory_of(rank.pid)["RssAnon"]
            self.peaks[rank.rank] = max(self.peaks.get(rank.rank, 0), anon)


def median_seconds(fn: Callable[[], object], *, repeat: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_layout(directory: Path, rows: int, features: int, chunk: int = 10_000) -> None:
    """A classification layout of standard-normal float32 features (the label: is the first
    feature positive?), written a chunk at a time: as large as the disk allows."""
    writer = LayoutWriter(directory, features, labels=True)
    rng = np.random.default_rng(0)
    for lo in range(0, rows, chunk):
        x = rng.standard_normal((min(chunk, rows - lo), features), dtype=np.float32)
        writer.add(x, (x[:, 0] > 0).astype(np.int64))
    writer.finish({"name": directory.name, "content_hash": "", "label": None,
                   "feature_names": [f"x{i}" for i in range(features)]})
