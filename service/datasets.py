"""Uploaded datasets: parse CSV or .npz bytes into arrays, refuse anything doubtful.

Numbers only. No pickle (``allow_pickle=False``), no object arrays, no NaN or
inf, no ragged rows, labels in range. Every refusal names the problem. The
stored file is named by a generated id, never by anything the user sent.
"""

from __future__ import annotations

import csv
import io
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from common.data import save_uploaded
from common.errors import FieldError
from common.schemas import MAX_INPUT_DIM, MAX_UNITS, DatasetPublic
from service.store import utcnow

Array = npt.NDArray[Any]
Task = Literal["classification", "regression"]
MAX_CLASSES = MAX_UNITS


class UploadError(FieldError):
    """The upload is refused: ``field`` is ``file``, ``npz``, ``x`` or ``y``; the message
    says what is wrong, and where (row, column)."""


@dataclass(frozen=True)
class Parsed:
    x: Array  # (n, features) float32
    y: Array  # (n,) int64 labels, or (n, outputs) float32 targets
    classes: int | None


def parse_upload(body: bytes, fmt: Literal["csv", "npz"], task: Task) -> Parsed:
    """Arrays from an uploaded file: CSV (the last column is the label / target) or .npz
    (arrays ``x`` (n, features) and ``y`` (n,) or (n, outputs))."""
    x, y = _from_csv(body) if fmt == "csv" else _from_npz(body)
    return _checked(x, y, task)


def store_upload(datasets_dir: Path, name: str, parsed: Parsed) -> DatasetPublic:
    """Write it under a generated id, atomically; returns its catalog entry."""
    datasets_dir.mkdir(parents=True, exist_ok=True)
    dataset_id = f"ds_{uuid.uuid4().hex[:16]}"
    path = datasets_dir / f"{dataset_id}.npz"
    partial = datasets_dir / f".{dataset_id}.partial"
    save_uploaded(partial, parsed.x, parsed.y, name, parsed.classes)
    partial.replace(path)
    outputs = parsed.classes if parsed.classes is not None else int(parsed.y.shape[1])
    return DatasetPublic(id=dataset_id, name=name, rows=int(parsed.x.shape[0]),
                         features=int(parsed.x.shape[1]), outputs=outputs,
                         classes=parsed.classes, bytes=path.stat().st_size,
                         created_at=utcnow())


def _from_csv(body: bytes) -> tuple[Array, Array]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UploadError("file", f"not UTF-8 text (byte {exc.start})") from None
    # newline="": the csv module reads \r and \r\n itself; strict: a stray quote is an error
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [row for row in reader if row]
    except csv.Error as exc:  # a stray quote or carriage return, an over-long field
        raise UploadError("file", f"line {reader.line_num}: not valid CSV ({exc})") from None
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header
    if not rows:
        raise UploadError("file", "no data rows")
    width = len(rows[0])
    if width < 2:
        raise UploadError("file", "each row needs features and a label (2 columns at least)")
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows, start=1):
        if len(row) != width:
            raise UploadError("file", f"row {i}: has {len(row)} values, expected {width} "
                              "(ragged rows)")
        for j, cell in enumerate(row, start=1):
            try:
                values[i - 1, j - 1] = float(cell)
            except ValueError:
                raise UploadError("file", f"row {i}, column {j}: {cell[:40]!r} is not "
                                  "a number") from None
    return values[:, :-1], values[:, -1]


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def _from_npz(body: bytes) -> tuple[Array, Array]:
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise UploadError("npz", f"needs arrays 'x' and 'y'; missing {sorted(missing)}")
            return archive["x"], archive["y"]
    except UploadError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UploadError("npz", "object arrays (pickle) are not accepted") from None
        raise UploadError("npz", str(exc)) from None
    except (zipfile.BadZipFile, OSError, EOFError):
        raise UploadError("file", "not a valid .npz archive") from None


def _checked(x: Array, y: Array, task: Task) -> Parsed:
    for name, array in (("x", x), ("y", y)):
        if array.dtype.kind not in "iuf":
            raise UploadError(name, f"must be numbers, got dtype {array.dtype}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            row = int(np.argwhere(~np.isfinite(array))[0][0]) + 1
            raise UploadError(name, f"contains NaN or inf (first in row {row})")
    if x.ndim != 2 or x.shape[0] < 2 or not 1 <= x.shape[1] <= MAX_INPUT_DIM:
        raise UploadError("x", f"expected shape (rows >= 2, 1..{MAX_INPUT_DIM} features), "
                          f"got {x.shape}")
    if y.shape[0] != x.shape[0]:
        raise UploadError("y", f"has {y.shape[0]} rows, x has {x.shape[0]}")
    xs = np.ascontiguousarray(x, dtype=np.float32)
    if task == "regression":
        targets = y.reshape(-1, 1) if y.ndim == 1 else y
        if targets.ndim != 2:
            raise UploadError("y", f"expected (rows,) or (rows, outputs), got {y.shape}")
        return Parsed(xs, np.ascontiguousarray(targets, dtype=np.float32), None)
    if y.ndim != 1:
        raise UploadError("y", f"class labels must be one column, got shape {y.shape}")
    if not (np.mod(y, 1) == 0).all() or y.min() < 0 or y.max() >= MAX_CLASSES:
        bad = y[(np.mod(y, 1) != 0) | (y < 0) | (y >= MAX_CLASSES)][0]
        raise UploadError("y", f"class labels must be integers in [0, {MAX_CLASSES}), "
                          f"found {bad!r}")
    labels = y.astype(np.int64)
    return Parsed(xs, labels, int(labels.max()) + 1)
