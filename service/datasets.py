"""The datasets of a service: uploads streamed to disk, files registered by path, ingest
in the background, the disk quota, and what jobs may name.

An upload never sits in memory: its body goes to a file chunk by chunk, counted against
``SYNCSGD_DATASETS_QUOTA_BYTES``. A registered path must resolve inside
``SYNCSGD_DATASETS_ROOT`` (symlinks followed). Both are checked at once (the schema:
the label column, numeric features) and then ingested by one background thread, which
updates ``rows_done`` as it goes; with ``wait`` the request waits and a refusal is its
4xx, leaving nothing stored. Files are named by generated ids, never by what users send.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import threading
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common.dataset_files import SourceInfo
from common.errors import FieldError
from common.schemas import DatasetPublic, DatasetRegistration, DatasetState, DTypeName
from service.config import Settings
from service.errors import QuotaExceededError, StateConflictError
from service.ingest import (
    Format,
    Source,
    Task,
    check_declared_size,
    file_digest,
    ingest,
    open_source,
)
from service.store import SqliteJobStore, utcnow

log = logging.getLogger("syncsgd.datasets")


@dataclass(frozen=True)
class IngestOptions:
    """What the user asked of an ingest, besides the file."""

    name: str
    format: Format
    task: Task
    label: str | None = None
    header: bool | None = None
    dtype: DTypeName = "float32"
    owner: str | None = None  # the user who adds it


class DatasetCatalog:
    def __init__(self, store: SqliteJobStore, settings: Settings):
        self.store, self.settings = store, settings
        self.directory = settings.datasets_path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")
        self._lock = threading.Lock()
        self._reserved = 0  # bytes of uploads still streaming

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    # ---- the quota --------------------------------------------------------------------------

    def used_bytes(self) -> int:
        stored = sum(d.bytes for d in self.store.list_datasets() if d.state != DatasetState.failed)
        return stored + self._reserved

    def _check_quota(self, more: int) -> None:
        quota = self.settings.datasets_quota_bytes
        if self.used_bytes() + more > quota:
            raise QuotaExceededError(
                f"{more} more bytes would pass SYNCSGD_DATASETS_QUOTA_BYTES ({quota} bytes, "
                f"{self.used_bytes()} used)")

    # ---- uploads ----------------------------------------------------------------------------

    async def upload(self, chunks: AsyncIterator[bytes], declared: int | None,
                     options: IngestOptions, wait: bool) -> DatasetPublic:
        """Stream an upload to disk, check it, and ingest it."""
        if declared is not None:
            self._check_quota(declared)
        dataset_id = new_id()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f".upload-{dataset_id}"
        try:
            digest = await self._receive(chunks, path)
            source = await asyncio.to_thread(open_source, path, options.format, options.task,
                                             options.label, options.header)
            self._check_declared(source, options)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return await self._start(dataset_id, source, options, "upload", digest, None, path,
                                  wait)

    async def _receive(self, chunks: AsyncIterator[bytes], path: Path) -> str:
        digest, size = hashlib.sha256(), 0
        try:
            with open(path, "wb") as f:
                async for chunk in chunks:
                    self._reserve(len(chunk))
                    size += len(chunk)
                    digest.update(chunk)
                    f.write(chunk)
        finally:
            self._reserve(-size)
        return digest.hexdigest()

    def _check_declared(self, source: Source, options: IngestOptions) -> None:
        """A 413 at once for a source whose declared size (a compressed .npz's headers)
        would not fit what is left of the quota."""
        check_declared_size(source, options.dtype,
                            self.settings.datasets_quota_bytes - self.used_bytes())

    def _reserve(self, size: int) -> None:
        with self._lock:
            if size > 0:
                self._check_quota(size)
            self._reserved += size

    # ---- registration -----------------------------------------------------------------------

    async def register(self, registration: DatasetRegistration, wait: bool,
                       owner: str | None = None) -> DatasetPublic:
        """Ingest a file (or a directory of Parquet files) under the datasets root, as
        ``owner``'s."""
        path = self.resolve(registration.path)
        options = IngestOptions(registration.name, registration.format, registration.task,
                                registration.label, None, registration.dtype, owner)
        source = await asyncio.to_thread(open_source, path, options.format, options.task,
                                         options.label)
        self._check_declared(source, options)
        return await self._start(new_id(), source, options, registration.path, None, path,
                                 None, wait)

    def resolve(self, relative: str) -> Path:
        """``relative`` under the datasets root, symlinks followed; a FieldError naming
        ``path`` when it is absolute, leaves the root, or does not exist."""
        root = self.settings.datasets_root
        if root is None:
            raise FieldError("path", "registration is off: the service has no "
                             "SYNCSGD_DATASETS_ROOT")
        if Path(relative).is_absolute():
            raise FieldError("path", f"{relative!r} is absolute; give a path relative to the "
                             "datasets root")
        base = root.resolve()
        try:
            target = (base / relative).resolve()
            if not target.is_relative_to(base) or any(
                    not p.resolve().is_relative_to(base) for p in _files(target)):
                raise FieldError("path", f"{relative!r} leads outside the datasets root")
            if not target.exists():
                raise FieldError("path", f"{relative!r} does not exist under the datasets root")
        except OSError as exc:  # a name too long, a loop of links, no permission
            raise FieldError("path", f"{relative[:200]!r}: {exc.strerror}") from exc
        return target

    # ---- ingest -----------------------------------------------------------------------------

    async def _start(self, dataset_id: str, source: Source, options: IngestOptions,
                     origin: str, digest: str | None, registered: Path | None,
                     upload: Path | None, wait: bool) -> DatasetPublic:
        record = DatasetPublic(id=dataset_id, name=options.name, owner=options.owner,
                               state=DatasetState.ingesting,
                               task=options.task, format=options.format, source=origin,
                               features=len(source.feature_names),
                               feature_names=source.feature_names, label=source.label,
                               bytes=0, created_at=utcnow())
        self.store.put_dataset(record)
        future = self._executor.submit(self._ingest, record, source, options, digest,
                                       registered, upload)
        if not wait:
            return record
        try:
            return await asyncio.wrap_future(future)
        except (FieldError, QuotaExceededError):
            self.store.delete_dataset(dataset_id)  # with wait, a refusal leaves nothing
            raise

    def _ingest(self, record: DatasetPublic, source: Source, options: IngestOptions,
                digest: str | None, registered: Path | None, upload: Path | None
                ) -> DatasetPublic:
        try:
            info = source_info(registered, self.settings.datasets_root) if registered else None
            budget = self.settings.datasets_quota_bytes - self.used_bytes()
            meta = ingest(source, self.directory / record.id, name=options.name,
                          task=options.task, x_dtype=options.dtype,
                          content_hash=digest or (info.sha256 if info else ""),
                          source_info=info, byte_budget=budget,
                          progress=lambda rows: self._progress(record, rows))
        except Exception as exc:
            reason = str(exc) if isinstance(exc, FieldError | QuotaExceededError) else (
                f"{type(exc).__name__}: {exc}")
            self.store.put_dataset(record.model_copy(update={
                "state": DatasetState.failed, "error": reason}))
            log.warning("ingest failed: %s", reason, extra={"event": "ingest-failed"})
            raise
        finally:
            if upload is not None:
                upload.unlink(missing_ok=True)
        ready = record.model_copy(update={
            "state": DatasetState.ready, "rows": meta.rows, "rows_done": meta.rows,
            "outputs": meta.outputs, "class_names": meta.class_names,
            "classes": len(meta.class_names) if meta.class_names is not None else None,
            "bytes": _size(self.directory / record.id), "content_hash": meta.content_hash})
        self.store.put_dataset(ready)
        return ready

    def _progress(self, record: DatasetPublic, rows: int) -> None:
        self.store.put_dataset(record.model_copy(update={"rows_done": rows}))

    # ---- use --------------------------------------------------------------------------------

    def delete(self, dataset_id: str) -> None:
        """Forget a dataset and its files; 409 while it ingests or a job needs it."""
        dataset = self.store.get_dataset(dataset_id)
        if dataset.state == DatasetState.ingesting:
            raise StateConflictError(f"dataset {dataset_id} is ingesting; delete it once it "
                                     "is ready or failed")
        users = self.store.jobs_using(dataset_id)
        if users:
            raise StateConflictError(f"dataset {dataset_id} is used by queued or running "
                                     f"job(s) {', '.join(users)}; cancel them first")
        self.store.delete_dataset(dataset_id)
        shutil.rmtree(self.directory / dataset_id, ignore_errors=True)

    def check_usable(self, dataset_id: str, owner: str | None = None) -> None:
        """A FieldError naming ``data.dataset`` unless jobs (of ``owner``, when not None:
        another user's dataset is as one that does not exist) can train on it now."""
        if not dataset_id.startswith("ds_"):
            return
        try:
            dataset = self.store.get_dataset(dataset_id)
            if owner is not None and dataset.owner != owner:
                raise LookupError(dataset_id)
        except LookupError:
            raise FieldError("data.dataset", f"no dataset {dataset_id!r} has been uploaded "
                             "or registered") from None
        if dataset.state != DatasetState.ready:
            raise FieldError("data.dataset", f"dataset {dataset_id} is {dataset.state.value}"
                             + (f": {dataset.error}" if dataset.error else ""))


def new_id() -> str:
    return f"ds_{uuid.uuid4().hex[:16]}"


def _files(target: Path) -> list[Path]:
    """The files a registration reads: the file, or the files in the directory."""
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.is_file() or p.is_symlink())
    return [target]


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def source_info(path: Path, root: Path | None) -> SourceInfo:
    """Size, newest mtime and sha256 of a registered file or directory: to notice later
    that it changed after ingest."""
    files = _files(path)
    stats = [f.stat() for f in files]
    relative = path.relative_to(root.resolve()) if root is not None else path
    return SourceInfo(path=str(relative), size=sum(s.st_size for s in stats),
                      mtime_ns=max((s.st_mtime_ns for s in stats), default=0),
                      sha256=file_digest(files))


def check_unchanged(info: SourceInfo, root: Path | None) -> None:
    """A FieldError naming ``data.dataset`` when the registered source changed since ingest
    (size, or content where the modification time moved)."""
    if root is None:
        raise FieldError("data.dataset", "registered from a datasets root this service "
                         "no longer has (SYNCSGD_DATASETS_ROOT)")
    path = root.resolve() / info.path
    files = _files(path) if path.exists() else []
    size = sum(f.stat().st_size for f in files)
    if not files or size != info.size:
        raise FieldError("data.dataset", f"the registered file {info.path!r} changed after "
                         f"ingest (size {info.size} -> {size} bytes); register it again")
    mtime = max(f.stat().st_mtime_ns for f in files)
    if mtime != info.mtime_ns and file_digest(files) != info.sha256:
        raise FieldError("data.dataset", f"the registered file {info.path!r} changed after "
                         "ingest (its sha256 differs); register it again")

