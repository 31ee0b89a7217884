"""Ingest: a user's file, read once in bounded memory, written as a training layout.

:func:`ingest` drives a :mod:`~service.ingest.sources` reader into a
:class:`common.dataset_files.LayoutWriter`, refusing NaN and missing values by row and
column, and staying within a byte budget (the datasets quota). On any refusal nothing
is left behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from common.dataset_files import DatasetMeta, LayoutWriter, SourceInfo
from service.errors import QuotaExceededError
from service.ingest.sources import Format, IngestError, Source, Task, open_source

__all__ = ["Format", "IngestError", "Source", "Task", "check_declared_size", "file_digest",
           "ingest", "open_source"]

HASH_CHUNK = 8 << 20


def ingest(source: Source, destination: Path, *, name: str, task: Task,
           x_dtype: Literal["float32", "float64"], content_hash: str,
           source_info: SourceInfo | None, byte_budget: int,
           progress: Callable[[int], None] = lambda rows: None) -> DatasetMeta:
    """Write ``source`` as the layout ``destination``; ``progress(rows so far)`` after each
    batch. Raises :class:`IngestError` or :class:`QuotaExceededError`, leaving nothing."""
    row_bytes = layout_row_bytes(source, x_dtype)
    check_declared_size(source, x_dtype, byte_budget)
    writer = LayoutWriter(destination, len(source.feature_names),
                          labels=task == "classification", outputs=source.outputs,
                          x_dtype=x_dtype)
    try:
        for x, y in source.batches():
            _check_finite(x, writer.rows, source.feature_names, "x")
            if task == "regression":
                _check_finite(y, writer.rows, [f"target {i}" for i in range(y.shape[1])], "y")
            if (writer.rows + len(x)) * row_bytes > byte_budget:
                raise QuotaExceededError(
                    f"the dataset grows past the {byte_budget} bytes left of "
                    "SYNCSGD_DATASETS_QUOTA_BYTES")
            try:
                writer.add(x, y)
            except ValueError as exc:  # too many distinct labels
                raise IngestError("label", str(exc)) from None
            progress(writer.rows)
        if writer.rows < 2:
            raise IngestError("file", f"needs at least 2 data rows, found {writer.rows}")
        return writer.finish({"name": name, "feature_names": source.feature_names,
                              "label": source.label, "content_hash": content_hash,
                              "source": source_info})
    except BaseException:
        writer.abort()
        raise


def layout_row_bytes(source: Source, x_dtype: str) -> int:
    """What one row takes in the layout: its features, and its label or targets."""
    return int(np.dtype(x_dtype).itemsize) * len(source.feature_names) + 8 * source.outputs


def check_declared_size(source: Source, x_dtype: str, byte_budget: int) -> None:
    """Refuse, before reading a byte of data, a source whose declared rows (an .npz's
    headers: a decompression bomb says its size there) would not fit ``byte_budget``."""
    if source.declared_rows is None:
        return
    size = source.declared_rows * layout_row_bytes(source, x_dtype)
    if size > byte_budget:
        raise QuotaExceededError(f"{source.declared_rows} rows take {size} bytes, over the "
                                 f"{byte_budget} bytes left of SYNCSGD_DATASETS_QUOTA_BYTES")


def _check_finite(values: Any, rows_before: int, columns: list[str], field: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise IngestError(field, f"NaN, inf or a missing value in row {rows_before + row + 1}, "
                          f"column {columns[column]!r}")


def file_digest(paths: list[Path]) -> str:
    """sha256 over the bytes of ``paths``, in order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
