"""Dropout masks that depend on the sample, never on the rank that computes it.

The mask of hidden layer ``l`` for the sample at position ``i`` of step ``t``'s global
batch is drawn from numpy's counter-based ``Philox`` generator, keyed by ``(seed, l)``
with the counter starting at ``(i * blocks, t)``: a pure function of
``(seed, step, global sample index, layer)``. A rank computing rows ``[lo, hi)`` of a
global batch opens one generator at ``lo`` and draws them all, and gets the same
numbers, row for row, as one rank drawing the whole batch: each row's stream starts
on its own counter block (``blocks`` Philox blocks of 4 draws per row, the layer's
units rounded up to a multiple of 4). Nothing is kept between steps.

Inverted dropout: a kept unit is scaled by ``1 / (1 - rate)`` while training, so
evaluation and prediction use the outputs as they are, with no mask.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

#: 64-bit draws per Philox4x64 counter block.
DRAWS_PER_BLOCK = 4


def padded_units(units: int) -> int:
    """Draws per row: ``units`` rounded up to whole Philox blocks."""
    return -(-units // DRAWS_PER_BLOCK) * DRAWS_PER_BLOCK


@dataclass(frozen=True, slots=True)
class DropoutKey:
    """The masks of step ``step`` (0-based) of a job seeded ``seed``, for rows starting at
    position ``first`` of the step's global batch."""

    seed: int
    step: int
    first: int = 0

    def at(self, first: int) -> DropoutKey:
        """The same step's masks for rows starting at position ``first``."""
        return dataclasses.replace(self, first=first)

    def uniforms(self, layer: int, out: Array) -> None:
        """Fill ``out`` (n, padded_units(units)) float64 with row ``first + i``'s uniform
        draws in [0, 1) for hidden layer ``layer`` (0-based)."""
        blocks = out.shape[1] // DRAWS_PER_BLOCK
        bits = np.random.Philox(key=np.array([self.seed, layer], dtype=np.uint64),
                                counter=np.array([self.first * blocks, self.step, 0, 0],
                                                 dtype=np.uint64))
        np.random.Generator(bits).random(out=out)
