"""Ingest on its own: a file in, a training layout out, or a refusal naming the place.

Real files on disk, read by the real readers (pyarrow for CSV and Parquet); the layout is
read back through the same memory map the ranks use."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.dataset_files import StoredDataset, open_layout
from service.errors import QuotaExceededError
from service.ingest import IngestError, ingest, open_source
from service.ingest.columns import rows_per_batch
from tests.helpers import npz, npz_bomb


def ingested(tmp_path: Path, body: bytes | Path, fmt: str = "csv",
             task: str = "classification", label: str | None = None,
             budget: int = 1 << 30) -> StoredDataset:
    tmp_path.mkdir(parents=True, exist_ok=True)
    source_path = body if isinstance(body, Path) else tmp_path / f"source.{fmt}"
    if not isinstance(body, Path):
        source_path.write_bytes(body)
    source = open_source(source_path, fmt, task, label)  # type: ignore[arg-type]
    ingest(source, tmp_path / "layout", name="t", task=task,  # type: ignore[arg-type]
           x_dtype="float32", content_hash="h", source_info=None, byte_budget=budget)
    return open_layout(tmp_path / "layout")


def test_a_csv_becomes_a_memory_mapped_layout_with_names_and_sorted_classes(
        tmp_path: Path) -> None:
    data = ingested(tmp_path, b"height,weight,kind\n1.5,60,dog\n0.3,4,cat\n2,80,dog\n"
                    b"0.2,3,cat\n0.1,0.02,ant\n", label="kind")
    assert data.meta.feature_names == ["height", "weight"] and data.meta.label == "kind"
    assert data.meta.class_names == ["ant", "cat", "dog"]  # sorted, then 0..k-1
    np.testing.assert_array_equal(data.y, [2, 1, 2, 1, 0])
    np.testing.assert_array_equal(data.x[:, 1], np.float32([60, 4, 80, 3, 0.02]))
    assert isinstance(data.x, np.memmap) and data.x.dtype == np.float32
    assert data.x.flags.c_contiguous and data.meta.rows == 5


def test_without_a_header_columns_are_c0_to_cn_and_the_label_is_the_last(
        tmp_path: Path) -> None:
    data = ingested(tmp_path, b"1,2,10\n3,4,2\n5,6,10\n")
    assert data.meta.feature_names == ["c0", "c1"] and data.meta.label == "c2"
    assert data.meta.class_names == [2, 10]  # whole numbers sort as numbers
    regression = ingested(tmp_path / "r", b"1,2,0.5\n3,4,1.5\n", task="regression")
    np.testing.assert_array_equal(regression.y, np.float32([[0.5], [1.5]]))


def test_windows_and_old_mac_line_endings_read_like_unix(tmp_path: Path) -> None:
    unix = b"f1,f2,label\n0.5,1,0\n2,3,1\n"
    expected = ingested(tmp_path / "u", unix)
    for newline in (b"\r\n", b"\r"):
        other = ingested(tmp_path / repr(newline)[2:-1], unix.replace(b"\n", newline))
        np.testing.assert_array_equal(other.x, expected.x)
        np.testing.assert_array_equal(other.y, expected.y)


@pytest.mark.parametrize(("body", "field", "message"), [
    (b"a,b,label\n1,2,x\n3,abc,y\n", "file", "column 'b' is not numeric"),
    (b"a,b,label\n1,2,x\n3,4\n", "file", "a row has 2 values, expected 3 (ragged rows)"),
    (b"a,b,label\n1,2,x\n3,,y\n", "x", "missing value in row 2, column 'b'"),
    (b"a,b,label\n1,2,x\n3,nan,y\n", "x", "NaN, inf or a missing value in row 2, column 'b'"),
    (b"a,b,label\n1,2,x\n", "file", "needs at least 2 data rows, found 1"),
    (b"\xff\xfe\x00", "file", "not UTF-8 text"),
    (b"", "file", "no data rows"),
    (b"a\n1\n2\n", "file", "needs feature columns besides the label"),
    (b'1,2,0\n"3,4,1\n', "file", "(ragged rows): '\"3,4,1'"),  # an unclosed quote
])
def test_a_bad_csv_is_refused_naming_the_place(tmp_path: Path, body: bytes, field: str,
                                               message: str) -> None:
    with pytest.raises(IngestError, match=re.escape(message)) as refused:
        ingested(tmp_path, body)
    assert refused.value.field == field
    assert not (tmp_path / "layout").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["source.csv"]  # nothing half-done


def test_the_label_column_is_chosen_by_name_and_must_exist(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"label: no column 'kind'; the columns are 'a', 'b'"):
        ingested(tmp_path, b"a,b\n1,2\n3,4\n", label="kind")
    data = ingested(tmp_path / "ok", b"kind,a,b\n1,2,3\n0,4,5\n", label="kind")
    assert data.meta.feature_names == ["a", "b"]


def write_parquet(path: Path, **columns: Any) -> None:
    pq.write_table(pa.table(columns), path)


def test_a_parquet_directory_is_one_dataset_and_lists_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    write_parquet(folder / "a.parquet", x1=[1.0, 2.0], x2=[3, 4], species=["b", "a"])
    write_parquet(folder / "b.parquet", x1=[5.0], x2=[6], species=["c"])
    data = ingested(tmp_path, folder, "parquet", label="species")
    assert data.meta.rows == 3 and data.meta.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(data.y, [1, 0, 2])
    lists = tmp_path / "lists.parquet"
    write_parquet(lists, x1=[[1.0, 2.0], [3.0]], label=[0, 1])
    with pytest.raises(IngestError, match="column 'x1' holds lists"):
        ingested(tmp_path / "l", lists, "parquet")


def test_an_npz_is_checked_from_its_headers_before_it_is_read(tmp_path: Path) -> None:
    data = ingested(tmp_path, npz(x=np.ones((4, 3)), y=np.array([0, 1, 0, 1])), "npz")
    assert data.meta.rows == 4 and data.meta.class_names == [0, 1]
    bomb = npz_bomb(10**8, 10)  # 10**9 values declared
    assert len(bomb) < 20_000
    source = open_source(write(tmp_path / "bomb.npz", bomb), "npz", "classification", None)
    assert source.declared_rows == 10**8
    with pytest.raises(QuotaExceededError, match="100000000 rows take 4800000000 bytes"):
        ingest(source, tmp_path / "bomb", name="b", task="classification", x_dtype="float32",
               content_hash="", source_info=None, byte_budget=10 << 20)


def test_an_npz_of_many_batches_pairs_every_x_row_with_its_label(tmp_path: Path) -> None:
    """x and y are read in batches of rows; with 100 features x's batches are shorter than
    y's would be on their own, and the rows must still pair up."""
    rows = 3 * rows_per_batch(100) + 5
    x = np.random.default_rng(0).standard_normal((rows, 100)).astype(np.float32)
    y = np.arange(rows) % 7
    data = ingested(tmp_path, npz(x=x, y=y), "npz")
    assert data.meta.rows == rows
    np.testing.assert_array_equal(data.x, x)
    np.testing.assert_array_equal(data.y, y)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x": np.array([[1, None], [2, 3]], dtype=object), "y": np.array([0, 1])},
     "x: must be a C-order array of numbers, got object"),
    ({"x": np.ones((3, 2))}, "npz: needs arrays 'x' and 'y'; missing ['y']"),
    ({"x": np.ones((3, 2)), "y": np.array(["a", "b", "c"])}, "y: must be a C-order array"),
    ({"x": np.ones((3, 2)), "y": np.array([0, 1])}, "y: has 2 rows, x has 3"),
    ({"x": np.float64(3.0), "y": np.array([0])}, "x: expected shape (rows, features), got ()"),
])
def test_a_bad_npz_is_refused_naming_the_array(tmp_path: Path, arrays: dict[str, Any],
                                               message: str) -> None:
    with pytest.raises(IngestError, match=re.escape(message)):  # what an attacker sends
        ingested(tmp_path, npz(**arrays), "npz")


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
