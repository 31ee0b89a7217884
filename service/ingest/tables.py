"""CSV and Parquet, read through pyarrow in bounded pieces."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as pads

from service.ingest.columns import (
    BATCH_BYTES,
    Array,
    Columns,
    IngestError,
    Task,
    features_of,
    labels_of,
    rows_per_batch,
)


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
        self.columns = Columns(names, label if label is not None else names[-1])
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
                yield features_of(batch, self.columns.features), self._consistent(batch)

    def _consistent(self, batch: Any) -> Array:
        """The batch's labels, of the same kind (numbers or text) as the first batch's:
        ``"1"`` must not be class 1 in one batch and class ``'1'`` in another."""
        labels = labels_of(batch.column(self.columns.label), self.task, self.columns.label)
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
        self.columns = Columns(list(schema.names), label if label is not None
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
            yield (features_of(batch, self.columns.features),
                   labels_of(batch.column(self.columns.label), self.task, self.columns.label))
