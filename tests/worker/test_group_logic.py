"""The worker group's pure logic, without actors: error messages and chunk sizing."""

import pytest

from worker.driver import FIRST_CHUNK_STEPS, ChunkSizer
from worker.errors import RankFailedError, RankFailure, describe_failures


def test_identical_errors_from_many_ranks_are_grouped() -> None:
    failures = [RankFailure(2, "10.0.0.3", 30, "DivergedError: diverged at step 4 (loss=nan)"),
                RankFailure(0, "10.0.0.1", 10, "DivergedError: diverged at step 4 (loss=nan)"),
                RankFailure(1, "10.0.0.2", 20, "worker process died")]
    error = RankFailedError(failures, "steps 1..10")
    text = str(error)
    assert text.startswith("steps 1..10: ranks 0, 2 (node 10.0.0.1, pid 10; node 10.0.0.3, "
                           "pid 30): DivergedError: diverged at step 4 (loss=nan)")
    assert text.endswith("rank 1 (node 10.0.0.2, pid 20): worker process died")
    assert describe_failures([]) == ""


def test_chunks_aim_at_a_second_and_timeouts_scale_with_them() -> None:
    sizer = ChunkSizer()
    assert sizer.next_steps() == FIRST_CHUNK_STEPS
    assert sizer.timeout(FIRST_CHUNK_STEPS, floor_s=60) == 60  # nothing measured yet
    sizer.observe(5, 0.05)  # 10 ms a step
    assert sizer.next_steps() == 100
    sizer.observe(100, 200.0)  # 2 s a step: one step per chunk, never zero
    assert sizer.next_steps() == 1
    assert sizer.timeout(3, floor_s=60) == pytest.approx(60.0)
    assert sizer.timeout(10, floor_s=60) == pytest.approx(200.0)
    assert ChunkSizer(fixed=7).next_steps() == 7
