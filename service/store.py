"""Jobs and their loss curves in SQLite (one file under the data dir, WAL mode).

``SqliteJobStore`` is the only code that speaks SQL. One connection, guarded by
a lock: FastAPI's worker threads, the scheduler and the curve writer share it;
every call is one short transaction. Curve points are keyed by ``(job, step)``
and written with upserts, so a step that is run again (after a restore) replaces
its point instead of adding a second one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy.typing as npt
from pydantic import BaseModel

from common.records import SPAN_COLUMNS, StepRecord
from common.schemas import (
    PRIORITY_RANK,
    DatasetPublic,
    JobPublic,
    JobSpec,
    JobState,
    MlflowStatus,
    PreemptionInfo,
    RankPlacement,
    ResizeInfo,
    RestartInfo,
    StragglerInfo,
    Timing,
)
from service.errors import DatasetNotFoundError, JobNotFoundError

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order
    id TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER,
    epoch INTEGER NOT NULL DEFAULT 0,
    loss REAL, val_loss REAL, val_accuracy REAL,
    timing TEXT, ranks TEXT, error TEXT,
    restarts INTEGER NOT NULL DEFAULT 0,
    restart_log TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
    crashes INTEGER NOT NULL DEFAULT 0,  -- service processes that died while it ran
    curve_stride INTEGER NOT NULL DEFAULT 1,
    stopped_early_at_epoch INTEGER, best_epoch INTEGER,
    startup TEXT,  -- seconds per phase from the pick to the first step (JSON)
    resize_log TEXT NOT NULL DEFAULT '[]',  -- an elastic job's world size changes (JSON)
    waiting TEXT,  -- why a queued job that already ran waits again
    stragglers TEXT NOT NULL DEFAULT '[]',  -- ranks that computed slower (JSON)
    mlflow TEXT,  -- the MLflow run's status (JSON)
    tensorboard_step INTEGER NOT NULL DEFAULT 0,  -- the curve is in its event files to here
    owner TEXT,  -- the user who submitted it
    preemptions TEXT NOT NULL DEFAULT '[]'  -- stops for jobs of higher priority (JSON)
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, seq);
CREATE TABLE IF NOT EXISTS points (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    loss REAL NOT NULL,
    compute REAL NOT NULL, allreduce REAL NOT NULL, wait REAL NOT NULL, "update" REAL NOT NULL,
    val_loss REAL, val_accuracy REAL,
    lr REAL, grad_norm REAL,
    PRIMARY KEY (job_id, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spans (  -- every rank's step timings (the timeline)
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    node TEXT NOT NULL,
    start REAL NOT NULL,  -- unix seconds
    compute REAL NOT NULL, wait REAL NOT NULL, allreduce REAL NOT NULL, "update" REAL NOT NULL,
    PRIMARY KEY (job_id, step, rank)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS datasets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL  -- the DatasetPublic, as JSON
);
"""
#: Datasets stored before ingest wrote layouts kept their rows in one .npz; their table
#: is set aside under this name (not listed, not deleted).
OLD_DATASETS = "datasets_v1"

#: Points deleted per transaction.
DELETE_BATCH = 5_000
POINT_FIELDS = ("step", "epoch", "loss", "compute", "allreduce", "wait", "update", "val_loss",
                "val_accuracy", "lr", "grad_norm")
#: Columns added since the first version: (table, column, type and default).
ADDED_COLUMNS = (("jobs", "crashes", "INTEGER NOT NULL DEFAULT 0"),
                 ("jobs", "curve_stride", "INTEGER NOT NULL DEFAULT 1"),
                 ("jobs", "stopped_early_at_epoch", "INTEGER"), ("jobs", "best_epoch", "INTEGER"),
                 ("jobs", "startup", "TEXT"),
                 ("jobs", "resize_log", "TEXT NOT NULL DEFAULT '[]'"), ("jobs", "waiting", "TEXT"),
                 ("points", "lr", "REAL"), ("points", "grad_norm", "REAL"),
                 ("jobs", "stragglers", "TEXT NOT NULL DEFAULT '[]'"), ("jobs", "mlflow", "TEXT"),
                 ("jobs", "tensorboard_step", "INTEGER NOT NULL DEFAULT 0"),
                 ("jobs", "owner", "TEXT"),
                 ("jobs", "preemptions", "TEXT NOT NULL DEFAULT '[]'"))
TIMING_FIELDS = ("compute", "allreduce", "wait", "update")


Array = npt.NDArray[Any]


class SpanRow(NamedTuple):
    """One rank's timings of one step."""

    step: int
    rank: int
    node: str
    start: float  # unix seconds
    compute: float
    wait: float
    allreduce: float
    update: float


class QueuedJob(NamedTuple):
    """A queued job as the queue orders it."""

    id: str
    owner: str | None  # None: submitted before accounts (the admin's)
    priority: int  # common.schemas.PRIORITY_RANK


def utcnow() -> datetime:
    return datetime.now(UTC)


class SqliteJobStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        self._db.executescript(SCHEMA)

    def _migrate(self) -> None:
        """Bring a database of an earlier version up to this schema, keeping its data."""
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(datasets)")}
        if columns and "record" not in columns:
            self._db.execute(f"ALTER TABLE datasets RENAME TO {OLD_DATASETS}")
        for table, column, declaration in ADDED_COLUMNS:
            columns = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if columns and column not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- jobs ----------------------------------------------------------------------------

    def create(self, job_id: str, spec: JobSpec, owner: str | None = None) -> JobPublic:
        mlflow = MlflowStatus().model_dump_json() if spec.tracking.mlflow else None
        with self._transaction() as db:
            db.execute("INSERT INTO jobs (id, name, spec, state, created_at, mlflow, owner) "
                       "VALUES (?,?,?,?,?,?,?)", (job_id, spec.name, spec.model_dump_json(),
                                                  JobState.queued.value,
                                                  utcnow().isoformat(), mlflow, owner))
        return self.get(job_id)

    # ---- what the trackers have sent -------------------------------------------------------

    def behind_tensorboard(self, limit: int) -> list[str]:
        """Jobs whose curve is ahead of their TensorBoard files."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE tensorboard_step < step "
                                    "ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [r[0] for r in rows]

    def set_tensorboard_step(self, job_id: str, step: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET tensorboard_step = ? WHERE id = ?", (step, job_id))

    def tensorboard_step(self, job_id: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT tensorboard_step FROM jobs WHERE id = ?",
                                   (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(job_id)
        return int(row[0])

    def unfinished_mlflow_runs(self, limit: int) -> list[str]:
        """Jobs with MLflow tracking whose run is not complete yet."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE mlflow IS NOT NULL AND "
                "json_extract(mlflow, '$.finished') = 0 ORDER BY seq LIMIT ?",
                (limit,)).fetchall()
        return [r[0] for r in rows]

    def get(self, job_id: str) -> JobPublic:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(job_id)
        return _job(row)

    def list_jobs(self, state: JobState | None = None, limit: int = 50,
                  offset: int = 0, owner: str | None = None) -> tuple[list[JobPublic], int]:
        """Newest first; ``(page, total matching)``; ``owner``: only that user's."""
        conditions: list[str] = []
        args: list[object] = []
        if state:
            conditions.append("state = ?")
            args.append(state.value)
        if owner is not None:
            conditions.append("owner = ?")
            args.append(owner)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT * FROM jobs {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                [*args, limit, offset]).fetchall()
        return [_job(r) for r in rows], int(total)

    def ids_in_state(self, state: JobState) -> list[str]:
        """Ids of the jobs in ``state``, in submission order."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE state = ? ORDER BY seq",
                                    (state.value,)).fetchall()
        return [r["id"] for r in rows]

    def queue(self) -> list[QueuedJob]:
        """The queued jobs, in submission order, with what orders them."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, owner, COALESCE(json_extract(spec, '$.priority'), 'normal') AS "
                "priority FROM jobs WHERE state = ? ORDER BY seq",
                (JobState.queued.value,)).fetchall()
        return [QueuedJob(r["id"], r["owner"], PRIORITY_RANK.get(r["priority"], 1))
                for r in rows]

    def count_preemptions(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(SUM(json_array_length(preemptions)), 0) "
                                   "FROM jobs").fetchone()
        return int(row[0])

    def count_by_state(self, owner: str | None = None) -> dict[str, int]:
        """Jobs by state (``owner``: that user's)."""
        where, args = ("WHERE owner = ?", (owner,)) if owner is not None else ("", ())
        with self._lock:
            rows = self._db.execute(f"SELECT state, COUNT(*) AS n FROM jobs {where} "
                                    "GROUP BY state", args)
            counts = {r["state"]: r["n"] for r in rows}
        return {s.value: counts.get(s.value, 0) for s in JobState}

    def mark_running(self, job_id: str, total_steps: int, ranks: list[RankPlacement],
                     curve_stride: int = 1) -> None:
        with self._transaction() as db:
            # ``waiting`` stays until ranks are up: a job picked again may wait for them.
            db.execute("UPDATE jobs SET state = ?, total_steps = ?, ranks = ?, "
                       "waiting = CASE WHEN ? THEN NULL ELSE waiting END, "
                       "curve_stride = ?, started_at = COALESCE(started_at, ?) WHERE id = ?",
                       (JobState.running.value, total_steps,
                        json.dumps([r.model_dump() for r in ranks]), bool(ranks), curve_stride,
                        utcnow().isoformat(), job_id))

    def count_crash(self, job_id: str) -> int:
        """One more service process died while ``job_id`` ran; the count so far."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET crashes = crashes + 1 WHERE id = ?", (job_id,))
            row = db.execute("SELECT crashes FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return int(row["crashes"])

    def add_restart(self, job_id: str, restart: RestartInfo) -> None:
        with self._transaction() as db:
            count = _append(db, job_id, "restart_log", restart)
            db.execute("UPDATE jobs SET restarts = ? WHERE id = ?", (count, job_id))

    def add_straggler(self, job_id: str, straggler: StragglerInfo) -> None:
        with self._transaction() as db:
            _append(db, job_id, "stragglers", straggler)

    def set_mlflow(self, job_id: str, status: MlflowStatus) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET mlflow = ? WHERE id = ?",
                       (status.model_dump_json(), job_id))

    def add_resize(self, job_id: str, resize: ResizeInfo) -> None:
        with self._transaction() as db:
            _append(db, job_id, "resize_log", resize)

    def add_preemption(self, job_id: str, preemption: PreemptionInfo) -> None:
        with self._transaction() as db:
            _append(db, job_id, "preemptions", preemption)

    def requeue(self, job_id: str, waiting: str | None = None) -> None:
        """Put an interrupted job back in the queue, in its old place (it resumes);
        ``waiting`` says why, on the job, until it runs again."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = ?, waiting = ? WHERE id = ?",
                       (JobState.queued.value, waiting, job_id))

    def set_startup(self, job_id: str, split: dict[str, float]) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET startup = ? WHERE id = ?", (json.dumps(split), job_id))

    def set_early_stopping(self, job_id: str, stopped_at_epoch: int | None,
                           best_epoch: int | None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET stopped_early_at_epoch = ?, best_epoch = ? WHERE id = ?",
                       (stopped_at_epoch, best_epoch, job_id))

    def finish(self, job_id: str, state: JobState, error: str | None = None) -> None:
        assert state.terminal
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = ?, error = ?, finished_at = ? WHERE id = ?",
                       (state.value, error, utcnow().isoformat(), job_id))

    def delete(self, job_id: str) -> None:
        """The job's points and timings go first, a batch per transaction, so that a long
        curve does not hold the store (and every request) for the whole delete; then its
        record."""
        self.get(job_id)  # 404 before any work
        for table in ("points", "spans"):
            while True:
                with self._transaction() as db:
                    gone = db.execute(
                        f"DELETE FROM {table} WHERE job_id = ? AND step IN (SELECT step FROM "
                        f"{table} WHERE job_id = ? ORDER BY step LIMIT ?)",
                        (job_id, job_id, DELETE_BATCH)).rowcount
                if gone < DELETE_BATCH:
                    break
                time.sleep(0)  # let the requests waiting for the store in
        with self._transaction() as db:
            if db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 0:
                raise JobNotFoundError(job_id)

    # ---- datasets --------------------------------------------------------------------------

    def put_dataset(self, dataset: DatasetPublic) -> None:
        """Insert or replace the dataset's record."""
        with self._transaction() as db:
            db.execute("INSERT INTO datasets (id, state, record) VALUES (?, ?, ?) "
                       "ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
                       "record = excluded.record",
                       (dataset.id, dataset.state.value, dataset.model_dump_json()))

    def list_datasets(self) -> list[DatasetPublic]:
        """Newest first."""
        with self._lock:
            rows = self._db.execute("SELECT record FROM datasets ORDER BY seq DESC").fetchall()
        return [DatasetPublic.model_validate_json(r["record"]) for r in rows]

    def get_dataset(self, dataset_id: str) -> DatasetPublic:
        with self._lock:
            row = self._db.execute("SELECT record FROM datasets WHERE id = ?",
                                   (dataset_id,)).fetchone()
        if row is None:
            raise DatasetNotFoundError(dataset_id)
        return DatasetPublic.model_validate_json(row["record"])

    def delete_dataset(self, dataset_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,))

    def jobs_using(self, dataset_id: str) -> list[str]:
        """Ids of the queued and running jobs whose spec names ``dataset_id``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE state IN (?, ?) AND "
                "json_extract(spec, '$.data.dataset') = ? ORDER BY seq",
                (JobState.queued.value, JobState.running.value, dataset_id)).fetchall()
        return [r["id"] for r in rows]

    # ---- the curve -----------------------------------------------------------------------

    def add_points(self, job_id: str, records: Iterable[StepRecord],
                   keep: Callable[[StepRecord], bool] | None = None) -> None:
        """One transaction per chunk of records: the points ``keep`` keeps (default all);
        the progress fields follow the last record, kept or not."""
        records = list(records)
        if not records:
            return
        every = [{"job_id": job_id, **r.to_dict()} for r in records]
        rows = [row for row, r in zip(every, records, strict=True) if keep is None or keep(r)]
        last = every[-1]
        timing = {name: sum(row[name] for row in every) / len(every) for name in TIMING_FIELDS}
        validated = [row for row in every if row["val_loss"] is not None]
        with self._transaction() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO points (job_id, {', '.join(map(_quote, POINT_FIELDS))}) "
                f"VALUES (:job_id, {', '.join(':' + f for f in POINT_FIELDS)})", rows)
            db.execute("UPDATE jobs SET step = ?, epoch = ?, loss = ?, timing = ? WHERE id = ?",
                       (last["step"], last["epoch"], last["loss"], json.dumps(timing), job_id))
            if validated:
                db.execute("UPDATE jobs SET val_loss = ?, val_accuracy = ? WHERE id = ?",
                           (validated[-1]["val_loss"], validated[-1]["val_accuracy"], job_id))

    def add_spans(self, job_id: str, nodes: list[str], spans: Array, first_step: int,
                  keep_steps: int) -> None:
        """A chunk's timings: ``spans`` (ranks, steps, 5) in ``SPAN_COLUMNS`` order, its
        first step ``first_step``; rank r ran on ``nodes[r]``. Steps more than
        ``keep_steps`` before the chunk's last are dropped."""
        ranks, steps, _ = spans.shape
        rows = [(job_id, first_step + i, r, nodes[r], *map(float, spans[r, i]))
                for r in range(ranks) for i in range(steps)]
        with self._transaction() as db:
            db.executemany(f"INSERT OR REPLACE INTO spans (job_id, step, rank, node, "
                           f"{', '.join(map(_quote, SPAN_COLUMNS))}) VALUES "
                           f"(?, ?, ?, ?, {', '.join('?' * len(SPAN_COLUMNS))})", rows)
            db.execute("DELETE FROM spans WHERE job_id = ? AND step <= ?",
                       (job_id, first_step + steps - 1 - keep_steps))

    def spans(self, job_id: str, from_step: int, to_step: int) -> list[SpanRow]:
        """The timings of steps ``from_step..to_step``, in step and rank order."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT step, rank, node, {', '.join(map(_quote, SPAN_COLUMNS))} FROM spans "
                "WHERE job_id = ? AND step BETWEEN ? AND ? ORDER BY step, rank",
                (job_id, from_step, to_step)).fetchall()
        return [SpanRow(*r) for r in rows]

    def rank_compute(self, job_id: str, steps: int) -> dict[int, float]:
        """Each rank's mean compute seconds over the job's last ``steps`` timed steps."""
        with self._lock:
            rows = self._db.execute(
                "SELECT rank, AVG(compute) FROM spans WHERE job_id = ? AND step > "
                "(SELECT MAX(step) FROM spans WHERE job_id = ?) - ? GROUP BY rank ORDER BY rank",
                (job_id, job_id, steps)).fetchall()
        return {r[0]: r[1] for r in rows}

    def span_steps(self, job_id: str) -> tuple[int, int] | None:
        """The first and last step with timings kept, if any."""
        with self._lock:
            row = self._db.execute("SELECT MIN(step), MAX(step) FROM spans WHERE job_id = ?",
                                   (job_id,)).fetchone()
        return None if row[0] is None else (row[0], row[1])

    def curve(self, job_id: str, since: int = 0, limit: int | None = None) -> list[StepRecord]:
        """Points with ``step > since``, in step order."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(map(_quote, POINT_FIELDS))} FROM points "
                "WHERE job_id = ? AND step > ? ORDER BY step LIMIT ?",
                (job_id, since, -1 if limit is None else limit)).fetchall()
        return [StepRecord(**dict(r)) for r in rows]


def _startup(row: sqlite3.Row) -> dict[str, float] | None:
    """The start's split, the wait in the queue first (submission to the pick)."""
    if not row["startup"] or not row["started_at"]:
        return None
    queued = (datetime.fromisoformat(row["started_at"])
              - datetime.fromisoformat(row["created_at"])).total_seconds()
    return {"queue": queued, **json.loads(row["startup"])}


def _append(db: sqlite3.Connection, job_id: str, column: str, entry: BaseModel) -> int:
    """Add ``entry`` to the job's JSON list in ``column`` (a log on the job record);
    returns the list's new length."""
    row = db.execute(f"SELECT {column} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    log = [*json.loads(row[column]), entry.model_dump(mode="json")]
    db.execute(f"UPDATE jobs SET {column} = ? WHERE id = ?", (json.dumps(log), job_id))
    return len(log)


def _quote(name: str) -> str:
    return f'"{name}"'


def _job(row: sqlite3.Row) -> JobPublic:
    return JobPublic(
        id=row["id"], name=row["name"], owner=row["owner"], state=JobState(row["state"]),
        spec=JobSpec.model_validate_json(row["spec"]), step=row["step"],
        total_steps=row["total_steps"], epoch=row["epoch"], loss=row["loss"],
        val_loss=row["val_loss"], val_accuracy=row["val_accuracy"],
        timing=Timing(**json.loads(row["timing"])) if row["timing"] else None,
        ranks=(ranks := [RankPlacement(**r) for r in json.loads(row["ranks"] or "[]")]),
        world_size=len(ranks) or None,
        resize_log=[ResizeInfo(**r) for r in json.loads(row["resize_log"])],
        waiting=row["waiting"],
        error=row["error"], restarts=row["restarts"],
        restart_log=[RestartInfo(**r) for r in json.loads(row["restart_log"])],
        stragglers=[StragglerInfo(**r) for r in json.loads(row["stragglers"])],
        preemptions=[PreemptionInfo(**r) for r in json.loads(row["preemptions"])],
        mlflow=MlflowStatus.model_validate_json(row["mlflow"]) if row["mlflow"] else None,
        created_at=row["created_at"], curve_stride=row["curve_stride"],
        stopped_early_at_epoch=row["stopped_early_at_epoch"], best_epoch=row["best_epoch"],
        startup=_startup(row),
        started_at=row["started_at"], finished_at=row["finished_at"])
