"""The job store on a real SQLite file: ordering, paging, upserted curve points, reopening."""

from pathlib import Path

import pytest

from common.records import StepRecord
from common.schemas import JobSpec, JobState, RankPlacement
from service.errors import JobNotFoundError
from service.store import SqliteJobStore


def record(step: int, loss: float, val: float | None = None) -> StepRecord:
    return StepRecord(step, 0, loss, 0.01, 0.002, 0.001, 0.003, val, 0.5 if val else None)


def test_jobs_page_newest_first_and_filter_by_state(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "db.sqlite3")
    for i in range(5):
        store.create(f"job_{i}", JobSpec(name=f"n{i}"))
    store.finish("job_1", JobState.cancelled, "by test")
    page, total = store.list_jobs(limit=2, offset=1)
    assert total == 5 and [j.id for j in page] == ["job_3", "job_2"]
    cancelled, n = store.list_jobs(JobState.cancelled)
    assert n == 1 and cancelled[0].error == "by test" and cancelled[0].finished_at is not None
    assert store.ids_in_state(JobState.queued) == ["job_0", "job_2", "job_3", "job_4"]
    assert store.count_by_state()["queued"] == 4
    with pytest.raises(JobNotFoundError):
        store.get("job_9")


def test_points_are_one_per_step_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = SqliteJobStore(path)
    store.create("job_a", JobSpec())
    store.mark_running("job_a", 4, [RankPlacement(rank=0, node="10.0.0.1", pid=7)])
    store.add_points("job_a", [record(1, 2.0), record(2, 1.5), record(3, 1.2, val=1.3)])
    store.add_points("job_a", [record(3, 1.1, val=1.25), record(4, 1.0)])  # step 3 replayed
    store.finish("job_a", JobState.succeeded)
    store.close()

    reopened = SqliteJobStore(path)
    curve = reopened.curve("job_a")
    assert [p.step for p in curve] == [1, 2, 3, 4]
    assert curve[2].loss == 1.1 and curve[2].val_loss == 1.25
    assert [p.step for p in reopened.curve("job_a", since=2)] == [3, 4]
    job = reopened.get("job_a")
    assert (job.state, job.step, job.total_steps, job.loss) == (JobState.succeeded, 4, 4, 1.0)
    assert job.val_loss == 1.25 and job.ranks[0].node == "10.0.0.1"
    assert job.timing is not None and job.timing.compute == pytest.approx(0.01)
    reopened.delete("job_a")
    assert reopened.curve("job_a") == []  # the points went with the job


def test_timings_keep_the_latest_steps_replace_a_step_run_again_and_go_with_the_job(
        tmp_path: Path) -> None:
    import numpy as np

    store = SqliteJobStore(tmp_path / "db.sqlite3")
    store.create("job_t", JobSpec())
    nodes = ["10.0.0.1", "10.0.0.2"]
    for first in range(1, 301, 10):  # 30 chunks of 10 steps on 2 ranks, keeping 100 steps
        spans = np.full((2, 10, 5), float(first))
        spans[1, :, 1] = 2.0 * first  # rank 1 computes twice as long
        store.add_spans("job_t", nodes, spans, first, keep_steps=100)
    assert store.span_steps("job_t") == (201, 300)
    rows = store.spans("job_t", 1, 1000)
    assert len(rows) == 200 and (rows[0].step, rows[0].rank, rows[1].rank) == (201, 0, 1)
    assert rows[1].node == "10.0.0.2" and rows[1].compute == 2 * 201.0
    assert store.rank_compute("job_t", 10) == {0: 291.0, 1: 582.0}
    store.add_spans("job_t", nodes, np.zeros((2, 10, 5)), 291, keep_steps=100)  # run again
    assert [r.compute for r in store.spans("job_t", 291, 291)] == [0.0, 0.0]
    assert len(store.spans("job_t", 1, 1000)) == 200
    store.finish("job_t", JobState.cancelled, "by test")
    store.delete("job_t")
    assert store.spans("job_t", 1, 1000) == [] and store.span_steps("job_t") is None
