"""Readers of the files users bring: CSV and Parquet through pyarrow (:mod:`.tables`),
.npz and .npy (:mod:`.arrays`).

Each source is opened (which checks its schema at once: the label column, numeric
features, no lists; an array's shape from its header), then yields batches of rows in
bounded memory: ``x`` (n, features) and ``y`` (n,) labels (any hashable) or (n, outputs)
targets. Every refusal is an :class:`IngestError` naming the column, row or array.
"""

from __future__ import annotations

from pathlib import Path

from service.ingest.arrays import NpySource, NpzSource
from service.ingest.columns import Format, IngestError, Source, Task
from service.ingest.tables import CsvSource, ParquetSource

__all__ = ["Format", "IngestError", "Source", "Task", "open_source"]


def open_source(path: Path, fmt: Format, task: Task, label: str | None,
                header: bool | None = None) -> Source:
    """The reader for ``path`` (a file, or a directory of Parquet or .npy files)."""
    if fmt == "csv":
        return CsvSource(path, task, label, header)
    if fmt == "parquet":
        return ParquetSource(path, task, label)
    if fmt == "npz":
        return NpzSource(path, task)
    return NpySource(path, task)
