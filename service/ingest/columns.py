"""What every reader shares: the refusal, batch sizes, the label column, the features."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from common.errors import FieldError

Array = npt.NDArray[Any]
Format = Literal["csv", "parquet", "npz", "npy"]
Task = Literal["classification", "regression"]
#: About what one batch of rows takes as text or as float64: small enough that parsing,
#: converting and writing a batch keep ingest's memory flat (tens of MB) whatever the file.
BATCH_BYTES = 4 << 20


def rows_per_batch(width: int) -> int:
    """Rows of ``width`` float64 values in about :data:`BATCH_BYTES`."""
    return max(256, BATCH_BYTES // (8 * max(1, width)))


class IngestError(FieldError):
    """The file is refused; ``field`` is ``file``, ``label``, ``x`` or ``y``."""


class Source(Protocol):
    feature_names: list[str]
    label: str | None
    outputs: int  # regression targets per row (1 for class labels)
    declared_rows: int | None  # known before reading (Parquet metadata, .npy headers)

    def batches(self) -> Iterator[tuple[Array, Array]]: ...


@dataclass
class Columns:
    """A table's columns split into features and the label, by name."""

    names: list[str]
    label: str
    features: list[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.label not in self.names:
            raise IngestError("label", f"no column {self.label!r}; the columns are "
                              f"{listing(self.names)}")
        self.features = [n for n in self.names if n != self.label]
        if not self.features:
            raise IngestError("file", "needs feature columns besides the label")


def listing(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:20])
    return shown + (f" and {len(names) - 20} more" if len(names) > 20 else "")



def labels_of(column: Any, task: Task, name: str) -> Array:
    """A label column as numpy: class labels as int64 when they are whole numbers, else as
    strings; regression targets as float64 (n, 1)."""
    if column.null_count:
        raise IngestError("label", f"column {name!r} has missing values")
    if task == "regression":
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise IngestError("label", f"column {name!r} holds {column.type}: a regression "
                              "target must be numbers")
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)[:, None]
    if pa.types.is_floating(column.type):
        values: Array = np.asarray(column.to_numpy(zero_copy_only=False))
        if not np.all(np.mod(values, 1) == 0):
            raise IngestError("label", f"column {name!r}: class labels must be whole numbers "
                              "or text (for numbers, use task 'regression')")
        return values.astype(np.int64)
    if pa.types.is_integer(column.type):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:  # whole numbers written as text (CSV: "3", "3.0") are numbers
            numbers = np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False))
            if np.all(np.mod(numbers, 1) == 0):
                return numbers.astype(np.int64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        labels: Array = np.asarray(pc.cast(column, pa.string()).to_numpy(zero_copy_only=False),
                                   dtype=str)
        return labels
    raise IngestError("label", f"column {name!r} holds {column.type}: class labels must be "
                      "whole numbers or text")


def features_of(batch: Any, columns: list[str]) -> Array:
    """The batch's feature columns as one row-major array, in one pass (Arrow's tensor
    conversion: floats stay floats, missing values become NaN for the finiteness check)."""
    selected = batch.select(columns)
    if any(pa.types.is_boolean(f.type) for f in selected.schema):
        selected = pa.RecordBatch.from_arrays(
            [pc.cast(c, pa.float32()) if pa.types.is_boolean(c.type) else c
             for c in selected.columns], names=columns)
    features: Array = np.asarray(selected.to_tensor(null_to_nan=True, row_major=True))
    return features
