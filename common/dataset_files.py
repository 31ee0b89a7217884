"""A dataset's training layout on disk: written once by ingest, memory-mapped by every rank.

    <dir>/x.npy      (rows, features), float32 (or float64 on request), C order
    <dir>/y.npy      (rows,) int64 class indices 0..k-1, or (rows, outputs) float targets
    <dir>/meta.json  :class:`DatasetMeta`: the names, the classes, the row count, hashes

:class:`LayoutWriter` appends rows batch by batch, in bounded memory and without knowing
the row count in advance (each .npy gets a fixed-size header that is rewritten with the
final shape), then publishes the directory with one rename, so a reader never sees a
half-written dataset. :func:`open_layout` memory-maps it read-only: ranks on one node share
the page cache, and a rank's memory holds only the rows it gathers.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from common.checkpoint import fsync_directory

Array = npt.NDArray[Any]
Task = Literal["classification", "regression"]
ClassName = str | int
#: Every .npy here has a header of this size, rewritten in place once the shape is known.
HEADER_BYTES = 128


class SourceInfo(BaseModel):
    """The registered file (or directory) a dataset was ingested from, to notice changes."""

    path: str  # relative to the datasets root
    size: int  # bytes, all files
    mtime_ns: int  # the newest file's
    sha256: str


class DatasetMeta(BaseModel):
    """What a dataset is, without reading its rows."""

    model_config = ConfigDict(extra="forbid")

    name: str
    task: Task
    rows: int
    features: int
    outputs: int  # classes, or regression targets
    class_names: list[ClassName] | None  # index i is class i; None for regression
    feature_names: list[str]
    label: str | None  # the label column's name, where the source had columns
    x_dtype: Literal["float32", "float64"]
    content_hash: str  # sha256 of the source bytes
    source: SourceInfo | None = None  # registered datasets only
    #: Split each class in proportion; False where the sizes must be known without
    #: reading the labels (the generated synthetic data).
    stratify: bool = True


class StoredDataset:
    """An opened layout: ``x`` (rows, features) and ``y`` memory-mapped read-only."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.meta = DatasetMeta.model_validate_json((directory / "meta.json").read_text())
        self.x: Array = np.load(directory / "x.npy", mmap_mode="r", allow_pickle=False)
        self.y: Array = np.load(directory / "y.npy", mmap_mode="r", allow_pickle=False)
        if self.x.shape != (self.meta.rows, self.meta.features) or len(self.y) != self.meta.rows:
            raise ValueError(f"{directory}: files do not match meta.json "
                             f"(x {self.x.shape}, y {self.y.shape}, {self.meta.rows} rows)")

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())


def open_layout(directory: Path) -> StoredDataset:
    """The dataset at ``directory`` (an OSError or ValueError says why it cannot be read)."""
    return StoredDataset(directory)


def layout_exists(directory: Path) -> bool:
    return (directory / "meta.json").is_file()


class LayoutWriter:
    """Writes a layout into ``final.with_name('.' + name + '.partial')``, then renames it.

    ``labels=True``: ``add`` takes class labels of any hashable kind (strings, integers)
    and they become indices 0..k-1 in sorted order at :meth:`finish`; ``known_classes``
    fixes the classes (and their order) in advance instead.
    """

    def __init__(self, final: Path, features: int, *, labels: bool, outputs: int = 1,
                 x_dtype: Literal["float32", "float64"] = "float32", max_classes: int = 65_536,
                 known_classes: list[ClassName] | None = None):
        self.final, self.features, self.labels = final, features, labels
        self.outputs, self.x_dtype, self.max_classes = outputs, np.dtype(x_dtype), max_classes
        self.y_dtype = np.dtype(np.int64) if labels else self.x_dtype
        # Its own partial directory: two processes may write the same dataset at once.
        self.partial = final.with_name(f".{final.name}.{os.getpid()}-{id(self):x}.partial")
        self.partial.mkdir(parents=True)
        self.rows = 0
        # label -> code: in first-seen order, or the known classes' order
        self._known = known_classes is not None
        self._codes: dict[ClassName, int] = {c: i for i, c in enumerate(known_classes or [])}
        self._x = open(self.partial / "x.npy", "wb")  # noqa: SIM115 (closed in finish/abort)
        self._y = open(self.partial / "y.npy", "wb")  # noqa: SIM115
        for f in (self._x, self._y):
            f.write(b"\0" * HEADER_BYTES)

    def add(self, x: Array, y: Array) -> None:
        """Append rows: ``x`` (n, features) numbers; ``y`` (n,) labels or (n, outputs)."""
        self._x.write(np.ascontiguousarray(x, dtype=self.x_dtype).data)
        if self.labels:
            # A batch has few distinct labels: one dict lookup per distinct value.
            distinct, inverse = _distinct(np.asarray(y))
            codes = np.fromiter((self._code(v) for v in distinct.tolist()), np.int64,
                                len(distinct))
            self._y.write(codes[inverse].data)
        else:
            self._y.write(np.ascontiguousarray(y, dtype=self.y_dtype).data)
        self.rows += len(x)

    def _code(self, label: ClassName) -> int:
        code = self._codes.get(label)
        if code is None:
            if self._known:
                raise ValueError(f"label {label!r} is not one of the {len(self._codes)} classes")
            if len(self._codes) >= self.max_classes:
                raise ValueError(f"more than {self.max_classes} distinct labels: is this "
                                 "column a class label? (a regression target is task "
                                 "'regression')")
            code = self._codes[label] = len(self._codes)
        return code

    def finish(self, meta: dict[str, Any]) -> DatasetMeta:
        """Write the shapes and ``meta.json`` (``meta``: the :class:`DatasetMeta` fields the
        writer does not know), fsync, publish; returns the final metadata."""
        class_names = None
        if self.labels:
            class_names = list(self._codes) if self._known else self._sorted_classes()
        y_shape = (self.rows,) if self.labels else (self.rows, self.outputs)
        for f, dtype, shape in ((self._x, self.x_dtype, (self.rows, self.features)),
                                (self._y, self.y_dtype, y_shape)):
            f.seek(0)
            f.write(npy_header(dtype, shape))
            f.flush()
            os.fsync(f.fileno())
            f.close()
        outputs = len(class_names) if class_names is not None else self.outputs
        full = DatasetMeta(rows=self.rows, features=self.features, outputs=outputs,
                           class_names=class_names, x_dtype=self.x_dtype.name,
                           task="classification" if self.labels else "regression", **meta)
        (self.partial / "meta.json").write_text(full.model_dump_json())
        fsync_directory(self.partial)
        try:
            self.partial.rename(self.final)
        except OSError:
            if not layout_exists(self.final):
                raise
            shutil.rmtree(self.partial, ignore_errors=True)  # another writer finished first
        fsync_directory(self.final.parent)
        return full

    def _sorted_classes(self) -> list[ClassName]:
        """Class names in sorted order; ``y.npy`` rewritten from first-seen codes to them."""
        names = list(self._codes)
        order = sorted(range(len(names)), key=lambda i: _sort_key(names[i]))
        remap = np.empty(len(names), dtype=np.int64)
        remap[order] = np.arange(len(names))
        if (remap == np.arange(len(names))).all():  # first seen in sorted order already
            return names
        self._y.flush()
        y = np.memmap(self._y.name, dtype=np.int64, mode="r+", offset=HEADER_BYTES,
                      shape=(self.rows,))
        for start in range(0, self.rows, 1 << 20):
            y[start:start + (1 << 20)] = remap[y[start:start + (1 << 20)]]
        y.flush()
        del y
        return [names[i] for i in order]

    def abort(self) -> None:
        """Drop everything written: nothing half-done stays."""
        for f in (self._x, self._y):
            f.close()
        shutil.rmtree(self.partial, ignore_errors=True)


def _distinct(labels: Array) -> tuple[Array, Array]:
    """``(distinct values, index of each label's value)``; in one counting pass for whole
    numbers in a small range (the usual class labels), else by sorting."""
    if labels.dtype.kind in "iu" and len(labels):
        low, high = int(labels.min()), int(labels.max())
        if high - low < 1 << 16:
            shifted = labels - low
            present = np.flatnonzero(np.bincount(shifted, minlength=high - low + 1))
            lookup = np.empty(high - low + 1, dtype=np.int64)
            lookup[present] = np.arange(len(present))
            return present + low, lookup[shifted]
    distinct, inverse = np.unique(labels, return_inverse=True)
    return distinct, inverse.reshape(-1)


def _sort_key(name: ClassName) -> tuple[int, Any]:
    # Numbers sort as numbers (2 before 10), and before strings if a column mixes both.
    return (0, name) if isinstance(name, int | float) else (1, str(name))


def npy_header(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bytes:
    """An .npy (version 1.0) header of exactly :data:`HEADER_BYTES` bytes."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": tuple(shape)}).encode("latin1")
    pad = HEADER_BYTES - 10 - len(text) - 1
    if pad < 0:
        raise ValueError(f"shape {shape}: too large for the .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", HEADER_BYTES - 10) + text + b" " * pad + b"\n"


def write_layout(final: Path, x: Array, y: Array, meta: dict[str, Any], *, labels: bool,
                 known_classes: list[ClassName] | None = None) -> DatasetMeta:
    """Write in-memory arrays as a layout (built-in datasets, tests)."""
    outputs = 1 if labels or y.ndim == 1 else int(y.shape[1])
    writer = LayoutWriter(final, int(x.shape[1]), labels=labels, outputs=outputs,
                          known_classes=known_classes)
    try:
        writer.add(x, y if labels or y.ndim == 2 else y.reshape(-1, 1))
        return writer.finish(meta)
    except BaseException:
        writer.abort()
        raise
