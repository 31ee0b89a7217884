"""The straggler watch on crafted chunk timings: who is reported, when, and how often."""

from __future__ import annotations

import numpy as np

from worker.stragglers import StragglerWatch

NODES = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def chunk(*compute_s: float, steps: int = 10, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """(ranks, steps, 5) spans with each rank's compute around ``compute_s[r]``."""
    rng = np.random.default_rng(seed)
    spans = np.zeros((len(compute_s), steps, 5))
    spans[:, :, 1] = np.asarray(compute_s)[:, None] * (1 + noise * rng.standard_normal(
        (len(compute_s), steps)))
    return spans


def test_a_rank_slow_for_three_chunks_is_reported_once_with_its_node() -> None:
    watch = StragglerWatch(factor=2.0, chunks=3)
    assert watch.observe(chunk(0.01, 0.01, 0.01), NODES, 10) == []
    assert watch.observe(chunk(0.01, 0.01, 0.03), NODES, 20) == []
    assert watch.observe(chunk(0.01, 0.01, 0.03), NODES, 30) == []
    (found,) = watch.observe(chunk(0.01, 0.01, 0.03), NODES, 40)
    assert (found.rank, found.node, found.step) == (2, "10.0.0.3", 40)
    assert found.factor == 3.0 and found.median_s == 0.01
    assert watch.observe(chunk(0.01, 0.01, 0.03), NODES, 50) == []  # once while slow
    # It keeps up, then falls behind again: a new report after three chunks.
    assert watch.observe(chunk(0.01, 0.01, 0.01), NODES, 60) == []
    for step in (70, 80):
        assert watch.observe(chunk(0.01, 0.01, 0.03), NODES, step) == []
    assert [s.rank for s in watch.observe(chunk(0.01, 0.01, 0.03), NODES, 90)] == [2]


def test_a_slow_chunk_between_fast_ones_and_noise_report_nothing() -> None:
    watch = StragglerWatch(factor=2.0, chunks=3)
    for i, slow in enumerate([0.03, 0.03, 0.01, 0.03, 0.03, 0.01] * 3):
        assert watch.observe(chunk(0.01, slow), NODES, 10 * i) == []
    # Noisy compute (30% jitter a step) on equal ranks; and a 2x gap of a tenth of a ms.
    for i in range(50):
        assert watch.observe(chunk(0.01, 0.01, 0.01, noise=0.3, seed=i), NODES, i) == []
        assert watch.observe(chunk(0.0001, 0.0002), NODES, i) == []


def test_of_two_ranks_the_faster_is_the_reference() -> None:
    watch = StragglerWatch(factor=2.0, chunks=1)
    (found,) = watch.observe(chunk(0.05, 0.01), NODES, 10)
    assert found.rank == 0 and found.median_s == 0.01
