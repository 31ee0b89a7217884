""".npz uploads and .npy directories: sizes from the headers, rows streamed."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from service.ingest.columns import Array, IngestError, Task, rows_per_batch


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


def _rows_of(stream: IO[bytes], shape: tuple[int, ...], dtype: np.dtype[Any], step: int
             ) -> Iterator[Array]:
    """The array in ``stream`` (its header read), ``step`` rows at a time."""
    width = int(np.prod(shape[1:])) if len(shape) > 1 else 1
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
            # both in x's batches: x and y rows are paired batch by batch
            step = rows_per_batch(self.x_shape[1])
            yield from self._pairs(_rows_of(xs, self.x_shape, self.x_dtype, step),
                                   _rows_of(ys, self.y_shape, self.y_dtype, step))


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
