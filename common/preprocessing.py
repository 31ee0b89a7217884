"""Preprocessing fitted on a job's training split and saved with its model.

Features are standardized, ``(x - mean) * inv_scale``; regression targets too, and
outputs are mapped back with ``out / y_inv_scale + y_mean`` (identity where a job turned
either off). The statistics are float64; they are applied in the job's dtype, the same
operations in training, in :meth:`common.nn.Network.predict` and in the ONNX export, so
all three see the same numbers for the same raw row.

:func:`fit_standardization` makes ONE pass over the training rows in a fixed order and
fixed chunks (Chan's pairwise merge of chunk means and squared deviations), so the
statistics do not depend on the number of workers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
ClassName = str | int
FIT_CHUNK = 65_536


@dataclass(frozen=True)
class Preprocessing:
    """``x_mean``, ``x_inv_scale``: (features,); ``y_mean``, ``y_inv_scale``: (outputs,) or
    None; ``class_names[i]`` is the name of class i (None for regression)."""

    x_mean: Array | None = None
    x_inv_scale: Array | None = None
    y_mean: Array | None = None
    y_inv_scale: Array | None = None
    class_names: list[ClassName] | None = None

    def transform_x(self, x: Array, out: Array) -> Array:
        """Standardized ``x`` (n, features) into ``out`` (its dtype); returns ``out``."""
        if self.x_mean is None or self.x_inv_scale is None:
            np.copyto(out, x, casting="unsafe")
            return out
        np.copyto(out, x, casting="unsafe")  # cast first: training reads the stored dtype
        out -= self.x_mean.astype(out.dtype)
        out *= self.x_inv_scale.astype(out.dtype)
        return out

    def transform_y(self, y: Array, out: Array) -> Array:
        """Standardized regression targets (n, outputs) into ``out``."""
        np.copyto(out, y, casting="unsafe")
        if self.y_mean is not None and self.y_inv_scale is not None:
            out -= self.y_mean.astype(out.dtype)
            out *= self.y_inv_scale.astype(out.dtype)
        return out

    def inverse_y(self, outputs: Array) -> Array:
        """Network outputs (n, outputs) back in the targets' units, in place."""
        if self.y_mean is not None and self.y_inv_scale is not None:
            outputs /= self.y_inv_scale.astype(outputs.dtype)
            outputs += self.y_mean.astype(outputs.dtype)
        return outputs

    def to_arrays(self) -> dict[str, Array]:
        """For an .npz (no pickle): the statistics, and the class names as JSON."""
        arrays = {name: value for name in ("x_mean", "x_inv_scale", "y_mean", "y_inv_scale")
                  if (value := getattr(self, name)) is not None}
        arrays["class_names"] = np.array(json.dumps(self.class_names))
        return {f"preprocessing.{k}": v for k, v in arrays.items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Array]) -> Preprocessing:
        fields = {k.removeprefix("preprocessing."): v for k, v in arrays.items()
                  if k.startswith("preprocessing.")}
        names = json.loads(str(fields.pop("class_names", np.array("null"))))
        return cls(**{k: np.asarray(v, dtype=np.float64) for k, v in fields.items()},
                   class_names=names)


def fit_standardization(rows: Callable[[int, int], Array], n: int, width: int
                        ) -> tuple[Array, Array]:
    """``(mean, inv_scale)`` of the ``n`` rows ``rows(lo, hi)`` returns, in float64.

    A column that does not vary (or has no rows) keeps its values: inv_scale 1.
    """
    count, mean, m2 = 0, np.zeros(width), np.zeros(width)
    for lo in range(0, n, FIT_CHUNK):
        chunk = np.asarray(rows(lo, min(n, lo + FIT_CHUNK)), dtype=np.float64)
        k = chunk.shape[0]
        chunk_mean = chunk.mean(axis=0)
        chunk_m2 = ((chunk - chunk_mean) ** 2).sum(axis=0)
        delta = chunk_mean - mean
        total = count + k
        mean = mean + delta * (k / total)
        m2 = m2 + chunk_m2 + delta**2 * (count * k / total)
        count = total
    std = np.sqrt(m2 / count) if count else np.ones(width)
    return mean, 1.0 / np.where(std > 0, std, 1.0)
