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
