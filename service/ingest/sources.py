"""Readers of the files users bring: CSV and Parquet through pyarrow, .npz and .npy.

Each source is opened (which checks its schema at once: the label column, numeric
features, no lists), then yields batches of rows in bounded memory: ``x`` (n, features)
float64 and ``y`` (n,) labels (any hashable) or (n, outputs) float64 targets. Every
refusal is an :class:`IngestError` naming the column, row or array at fault.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.dataset as pads

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
class _Columns:
    """A table's columns split into features and the label, by name."""

    names: list[str]
    label: str
    features: list[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.label not in self.names:
            raise IngestError("label", f"no column {self.label!r}; the columns are "
                              f"{_listing(self.names)}")
        self.features = [n for n in self.names if n != self.label]
        if not self.features:
            raise IngestError("file", "needs feature columns besides the label")


def _listing(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:20])
    return shown + (f" and {len(names) - 20} more" if len(names) > 20 else "")


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


def _labels(column: Any, task: Task, name: str) -> Array:
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


def _features(batch: Any, columns: list[str]) -> Array:
    """The batch's feature columns as one row-major array, in one pass (Arrow's tensor
    conversion: floats stay floats, missing values become NaN for the finiteness check)."""
    selected = batch.select(columns)
    if any(pa.types.is_boolean(f.type) for f in selected.schema):
        selected = pa.RecordBatch.from_arrays(
            [pc.cast(c, pa.float32()) if pa.types.is_boolean(c.type) else c
             for c in selected.columns], names=columns)
    features: Array = np.asarray(selected.to_tensor(null_to_nan=True, row_major=True))
    return features


class CsvSource:
    """A CSV file; a first row that is not all numbers is the header, else the columns are
    ``c0..cN``. The label defaults to the last column."""

    def __init__(self, path: Path, task: Task, label: str | None, header: bool | None):
        self.path, self.task = path, task
        first = _first_row(path)
        has_header = header if header is not None else not all(map(_is_number, first))
        names = first if has_header else [f"c{i}" for i in range(len(first))]
        if len(set(names)) != len(names):
            raise IngestError("file", "the header names a column twice")
        self.columns = _Columns(names, label if label is not None else names[-1])
        self.has_header, self.feature_names = has_header, self.columns.features
        self.label: str | None = self.columns.label
        self.outputs = 1
        self.declared_rows: int | None = None
        self._text_labels: bool | None = None

    def batches(self) -> Iterator[tuple[Array, Array]]:
        ragged: list[str] = []

        def refuse_ragged(row: Any) -> str:
            ragged.append(f"a row has {row.actual_columns} values, expected "
                          f"{row.expected_columns} (ragged rows): {row.text[:60]!r}")
            return "error"

        read = pcsv.ReadOptions(column_names=self.columns.names)
        parse = pcsv.ParseOptions(invalid_row_handler=refuse_ragged)
        for chunk in _line_chunks(self.path, skip_first=self.has_header):
            # Labels as text until the first chunk shows they are numbers: then as numbers,
            # which parses faster (a later text label is refused as mixing the two).
            numbers = self.task == "regression" or self._text_labels is False
            types = {n: pa.float64() for n in self.columns.features}
            types[self.columns.label] = pa.float64() if numbers else pa.string()
            convert = pcsv.ConvertOptions(column_types=types, strings_can_be_null=False)
            try:
                table = pcsv.read_csv(pa.py_buffer(chunk), read_options=read,
                                      parse_options=parse, convert_options=convert)
            except pa.ArrowInvalid as exc:
                raise IngestError(*(("file", ragged[0]) if ragged else self._explain(exc))) \
                    from None
            for batch in table.to_batches():
                yield _features(batch, self.columns.features), self._consistent(batch)

    def _consistent(self, batch: Any) -> Array:
        """The batch's labels, of the same kind (numbers or text) as the first batch's:
        ``"1"`` must not be class 1 in one batch and class ``'1'`` in another."""
        labels = _labels(batch.column(self.columns.label), self.task, self.columns.label)
        kind = labels.dtype.kind == "U"
        if self._text_labels is None:
            self._text_labels = kind
        elif kind != self._text_labels:
            raise IngestError("label", f"column {self.columns.label!r} mixes whole numbers "
                              "and text")
        return labels

    def _explain(self, exc: Exception) -> tuple[str, str]:
        """``(field, message)`` for a conversion error pyarrow raised."""
        text = str(exc)
        if "CSV column #" in text:
            name = self.columns.names[int(text.split("CSV column #", 1)[1].split(":", 1)[0])]
            reason = text.rsplit(":", 1)[-1].strip()
            if name == self.columns.label and self.task == "classification":
                return "label", f"column {name!r} mixes whole numbers and text ({reason})"
            return "file", f"column {name!r} is not numeric ({reason})"
        return "file", f"not valid CSV ({text})"


def _line_chunks(path: Path, skip_first: bool) -> Iterator[memoryview]:
    """The file in pieces of about :data:`BATCH_BYTES` that end at a line break (pyarrow's
    own streaming reader reads many blocks ahead, holding a good part of a large file in
    memory; whole lines in bounded pieces keep ingest's memory flat). Views of one buffer,
    valid until the next piece."""
    buffer = bytearray(BATCH_BYTES)
    view = memoryview(buffer)
    held, first = 0, skip_first  # bytes carried over from the last piece
    with open(path, "rb", buffering=0) as f:
        while True:
            if held == len(buffer):  # one line longer than a piece: make room
                buffer.extend(bytes(len(buffer)))
                view = memoryview(buffer)
            read = f.readinto(view[held:])
            end = held + (read or 0)
            if first:  # the header: up to its first line break of any kind
                ends = [i for i in (buffer.find(b"\n", 0, end), buffer.find(b"\r", 0, end))
                        if i >= 0]
                if not ends and read:
                    held = end
                    continue
                start = min(ends) + 1 if ends else end
                start += buffer.startswith(b"\n", start)  # the \n of a \r\n
                buffer[:end - start] = buffer[start:end]
                end, first = end - start, False
            cut = end if not read else max(buffer.rfind(b"\n", 0, end),
                                            buffer.rfind(b"\r", 0, end)) + 1
            if cut > 1024 or (cut > 0 and bytes(view[:cut]).strip()):  # not blank lines
                yield view[:cut]
            if not read:
                return
            held = end - cut
            buffer[:held] = buffer[cut:end]


def _first_row(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8", errors="strict") as f:
        try:
            for row in csv.reader(f):
                if row:
                    return row
        except UnicodeDecodeError as exc:
            raise IngestError("file", f"not UTF-8 text (byte {exc.start})") from None
        except csv.Error as exc:
            raise IngestError("file", f"not valid CSV ({exc})") from None
    raise IngestError("file", "no data rows")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


class ParquetSource:
    """A Parquet file, or a directory of them (one dataset, files in name order)."""

    def __init__(self, path: Path, task: Task, label: str | None):
        self.task = task
        try:
            self.dataset = pads.dataset(path, format="parquet")
        except (pa.ArrowInvalid, OSError) as exc:
            raise IngestError("file", f"not a Parquet file or directory ({exc})") from None
        schema = self.dataset.schema
        self.columns = _Columns(list(schema.names), label if label is not None
                                else schema.names[-1])
        for name in self.columns.features:
            kind = schema.field(name).type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                    or pa.types.is_boolean(kind)):
                what = "lists" if pa.types.is_list(kind) or pa.types.is_large_list(kind) else kind
                raise IngestError("file", f"column {name!r} holds {what}: features must be "
                                  "numbers, one per column")
        self.feature_names = self.columns.features
        self.label: str | None = self.columns.label
        self.outputs = 1
        self.declared_rows: int | None = int(self.dataset.count_rows())  # from the metadata

    def batches(self) -> Iterator[tuple[Array, Array]]:
        width = len(self.columns.names)
        for batch in self.dataset.to_batches(batch_size=rows_per_batch(width),
                                             batch_readahead=4, fragment_readahead=1):
            yield (_features(batch, self.columns.features),
                   _labels(batch.column(self.columns.label), self.task, self.columns.label))


def read_npy_header(stream: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype of the .npy in ``stream``, from its header alone (nothing else read):
    so a size is checked before anything is decompressed or allocated."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"version {version} is not supported")
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(stream)
    except ValueError as exc:
        raise IngestError(name, f"not a .npy array ({exc})") from None
    if dtype.hasobject or dtype.kind not in "biuf" or fortran:
        raise IngestError(name, f"must be a C-order array of numbers, got {dtype}"
                          f"{' in Fortran order' if fortran else ''}")
    return tuple(shape), dtype


def _rows_of(stream: IO[bytes], shape: tuple[int, ...], dtype: np.dtype[Any]
             ) -> Iterator[Array]:
    width = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    step = rows_per_batch(width)
    for lo in range(0, shape[0], step):
        n = min(step, shape[0] - lo)
        data = stream.read(n * width * dtype.itemsize)
        if len(data) != n * width * dtype.itemsize:
            raise IngestError("file", "an array ends before its declared shape")
        yield np.frombuffer(data, dtype=dtype).reshape(n, *shape[1:])


class _ArrayPair:
    """``x`` (rows, features) and ``y`` (rows,) or (rows, outputs), streamed in rows."""

    task: Task
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]

    def _check(self) -> None:
        if len(self.x_shape) != 2 or self.x_shape[1] < 1:
            raise IngestError("x", f"expected shape (rows, features), got {self.x_shape}")
        if self.y_shape[:1] != self.x_shape[:1]:
            raise IngestError("y", f"has {self.y_shape[0] if self.y_shape else 0} rows, x has "
                              f"{self.x_shape[0]}")
        if self.task == "classification" and len(self.y_shape) != 1:
            raise IngestError("y", f"class labels must be one column, got shape {self.y_shape}")
        if len(self.y_shape) > 2:
            raise IngestError("y", f"expected (rows,) or (rows, outputs), got {self.y_shape}")
        self.feature_names = [f"x{i}" for i in range(self.x_shape[1])]
        self.label: str | None = None
        self.outputs = 1 if len(self.y_shape) == 1 else self.y_shape[1]
        self.declared_rows: int | None = self.x_shape[0]

    def _pairs(self, x_rows: Iterator[Array], y_rows: Iterator[Array]
               ) -> Iterator[tuple[Array, Array]]:
        for x, y in zip(x_rows, y_rows, strict=True):
            if self.task == "classification":
                if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
                    raise IngestError("y", "class labels must be whole numbers")
                yield x.astype(np.float64), y.astype(np.int64)
            else:
                yield x.astype(np.float64), y.reshape(len(y), -1).astype(np.float64)


class NpzSource(_ArrayPair):
    """An .npz with arrays ``x`` and ``y`` (compressed or not), read member by member."""

    def __init__(self, path: Path, task: Task):
        self.path, self.task = path, task
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError):
            raise IngestError("file", "not a valid .npz archive") from None
        names = {n.removesuffix(".npy") for n in self.zip.namelist()}
        missing = {"x", "y"} - names
        if missing:
            raise IngestError("npz", f"needs arrays 'x' and 'y'; missing {sorted(missing)}")
        self.x_shape, self.x_dtype = self._header("x")
        self.y_shape, self.y_dtype = self._header("y")
        self._check()

    def _header(self, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
        try:
            with self.zip.open(f"{name}.npy") as stream:
                return read_npy_header(stream, name)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
            raise IngestError("npz", f"member {name!r} cannot be read ({exc})") from None

    def batches(self) -> Iterator[tuple[Array, Array]]:
        with self.zip.open("x.npy") as xs, self.zip.open("y.npy") as ys:
            read_npy_header(xs, "x")
            read_npy_header(ys, "y")
            yield from self._pairs(_rows_of(xs, self.x_shape, self.x_dtype),
                                   _rows_of(ys, self.y_shape, self.y_dtype))


class NpySource(_ArrayPair):
    """A directory holding ``x.npy`` and ``y.npy``, memory-mapped."""

    def __init__(self, path: Path, task: Task):
        self.task = task
        if not path.is_dir():
            raise IngestError("path", "format 'npy' is a directory holding x.npy and y.npy")
        self.x_path, self.y_path = path / "x.npy", path / "y.npy"
        shapes = []
        for name, file in (("x", self.x_path), ("y", self.y_path)):
            if not file.is_file():
                raise IngestError("path", f"the directory has no {name}.npy")
            with open(file, "rb") as stream:
                shapes.append(read_npy_header(stream, name))
        (self.x_shape, _), (self.y_shape, _) = shapes
        self._check()

    def batches(self) -> Iterator[tuple[Array, Array]]:
        x = np.load(self.x_path, mmap_mode="r", allow_pickle=False)
        y = np.load(self.y_path, mmap_mode="r", allow_pickle=False)
        step = rows_per_batch(self.x_shape[1])
        yield from self._pairs((x[lo:lo + step] for lo in range(0, len(x), step)),
                               (y[lo:lo + step] for lo in range(0, len(y), step)))
