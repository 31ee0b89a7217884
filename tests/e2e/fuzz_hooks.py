"""Schemathesis hooks for the fuzzing test: generators for the upload bodies, which a
JSON schema cannot describe (a CSV table, an ``.npz`` archive). Loaded by the
``schemathesis`` CLI through ``SCHEMATHESIS_HOOKS``; negative cases still send anything."""

from __future__ import annotations

import io

import numpy as np
import schemathesis
from hypothesis import strategies as st


@st.composite
def _tables(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """(rows, features) numbers and (rows,) class labels 0..classes-1, every class twice."""
    rows = draw(st.integers(4, 40))
    features = draw(st.integers(1, 6))
    classes = draw(st.integers(2, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).round(3)
    y = np.arange(rows) % classes
    return x, y


def _csv(table: tuple[np.ndarray, np.ndarray]) -> bytes:
    x, y = table
    lines = [",".join([*(f"f{i}" for i in range(x.shape[1])), "label"])]
    lines += [",".join([*map(str, row), str(label)]) for row, label in zip(x, y, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def _npz(table: tuple[np.ndarray, np.ndarray]) -> bytes:
    x, y = table
    out = io.BytesIO()
    np.savez(out, x=x, y=y)
    return out.getvalue()


schemathesis.openapi.media_type("text/csv", _tables().map(_csv))
schemathesis.openapi.media_type("application/octet-stream", _tables().map(_npz))
