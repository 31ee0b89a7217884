"""The upload parser on its own: every malformed file is refused with the place named."""

from __future__ import annotations

import re

import numpy as np
import pytest

from service.datasets import UploadError, parse_upload


@pytest.mark.parametrize(("body", "message"), [
    (b"\r0", "2 columns at least"),  # a lone carriage return ends a row: no csv.Error
    (b"1,2\r\n3,4\r\n5,\"6\n", "line 3: not valid CSV (unexpected end of data)"),
    (b"1,\"2\"x\n3,4\n", "line 1: not valid CSV (',' expected after '\"')"),
    (b"1," + b"9" * 200_000 + b"\n", "line 1: not valid CSV (field larger than field limit"),
    (b"\xff\xfe", "not UTF-8"),
    (b"a,b\n", "no data rows"),
    (b"1,2\n3\n", "row 2: has 1 values, expected 2"),
    (b"1,2\n3,x\n", "row 2, column 2: 'x' is not a number"),
])
def test_malformed_csv_is_refused_with_its_place(body: bytes, message: str) -> None:
    with pytest.raises(UploadError, match=re.escape(message)):
        parse_upload(body, "csv", "classification")


def test_windows_and_old_mac_line_endings_parse_like_unix() -> None:
    unix = parse_upload(b"f1,f2,label\n0.5,1,0\n2,3,1\n", "csv", "classification")
    for newline in (b"\r\n", b"\r"):
        other = parse_upload(b"f1,f2,label\n0.5,1,0\n2,3,1\n".replace(b"\n", newline),
                             "csv", "classification")
        np.testing.assert_array_equal(other.x, unix.x)
        np.testing.assert_array_equal(other.y, unix.y)
    assert unix.classes == 2 and unix.x.shape == (2, 2)
