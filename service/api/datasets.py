"""``/datasets``: upload a file or register one by path, watch it ingest, list, delete.

A job spec names a dataset by its id in ``data.dataset`` once it is ``ready``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status

from common.schemas import DatasetPublic, DatasetRegistration, DTypeName
from service import quotas
from service.api.deps import (
    AccountsDep,
    AuditDep,
    CatalogDep,
    DatasetDep,
    Reader,
    StoreDep,
    Writer,
    require_read_token,
    require_token,
)
from service.datasets import IngestOptions

router = APIRouter(prefix="/datasets", tags=["datasets"],
                   dependencies=[Depends(require_read_token)])

WAIT = Query(description="answer when the ingest has ended: 201 and the ready dataset, or "
                         "the refusal (nothing stored); else 202 at once, and GET the "
                         "dataset to follow rows_done")
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"description": "accepted: ingesting (``wait`` false)"},
    413: {"description": "over SYNCSGD_DATASETS_QUOTA_BYTES"},
    429: {"description": "over the user's max_dataset_bytes"},
    422: {"description": "the file is refused; the message names the column, row or field"}}
UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def _answer(dataset: DatasetPublic, response: Response) -> DatasetPublic:
    response.status_code = (status.HTTP_201_CREATED if dataset.state == "ready"
                            else status.HTTP_202_ACCEPTED)
    response.headers["Location"] = f"/datasets/{dataset.id}"
    return dataset


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_token)],
             openapi_extra=UPLOAD_BODY, responses=ACCEPTED)
async def upload_dataset(
        request: Request, response: Response, catalog: CatalogDep, store: StoreDep,
        caller: Writer, accounts: AccountsDep, audit: AuditDep,
        name: Annotated[str, Query(min_length=1, max_length=100)],
        format: Annotated[Literal["csv", "parquet", "npz"],
                          Query(description="the body's format")] = "csv",
        task: Literal["classification", "regression"] = "classification",
        label: Annotated[str | None, Query(max_length=1000, description=(
            "the label column (CSV, Parquet); default: the last"))] = None,
        header: Annotated[bool | None, Query(description=(
            "CSV: is the first row a header? default: when it is not all numbers"))] = None,
        dtype: DTypeName = "float32",
        wait: Annotated[bool, WAIT] = False) -> DatasetPublic:
    """Upload a file as the request body, streamed to disk (never held in memory).

    CSV or Parquet: one column is the label (``label``, default the last), every other
    column a numeric feature. ``.npz``: arrays ``x`` (rows, features) and ``y`` (rows,)
    or (rows, outputs); no pickled or object arrays. Class labels may be whole numbers
    or text; they become classes 0..k-1 in sorted order, and predictions name them."""
    options = IngestOptions(name, format, task, label, header, dtype, caller.name)
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else None
    quotas.check_dataset(accounts.get(caller.name), store, size or 0)
    dataset = await catalog.upload(request.stream(), size, options, wait)
    audit.record(caller.name, "upload", dataset.id)
    return _answer(dataset, response)


@router.post("/register", status_code=status.HTTP_201_CREATED,
             dependencies=[Depends(require_token)], responses=ACCEPTED)
async def register_dataset(registration: DatasetRegistration, response: Response,
                           catalog: CatalogDep, store: StoreDep, caller: Writer,
                           accounts: AccountsDep, audit: AuditDep,
                           wait: Annotated[bool, WAIT] = False) -> DatasetPublic:
    """Ingest a file, or a directory of Parquet files, from under SYNCSGD_DATASETS_ROOT:
    storage every node can read. ``npy``: a directory holding ``x.npy`` and ``y.npy``.
    If the file changes after ingest, jobs on it fail rather than train on other data."""
    user = accounts.get(caller.name)
    if user is not None and user.max_dataset_bytes is not None:
        quotas.check_dataset(user, store, _size(catalog.resolve(registration.path)))
    dataset = await catalog.register(registration, wait, caller.name)
    audit.record(caller.name, "register", dataset.id)
    return _answer(dataset, response)


def _size(path: Path) -> int:
    """A file's bytes, or a directory's files' (a Parquet dataset)."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


@router.get("")
def list_datasets(store: StoreDep, caller: Reader) -> list[DatasetPublic]:
    """The datasets (a user's own; an admin's all), newest first, with their state."""
    return [d for d in store.list_datasets() if caller.sees(d.owner)]


@router.get("/{dataset_id}", responses={404: {"description": "no dataset with this id"}})
def read_dataset(dataset: DatasetDep) -> DatasetPublic:
    """One dataset: its state, ``rows_done`` while it ingests, the error if it failed."""
    return dataset


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[Depends(require_token)],
               responses={404: {"description": "no dataset with this id"},
                          409: {"description": "ingesting, or a queued or running job uses it"}})
def delete_dataset(dataset: DatasetDep, catalog: CatalogDep, caller: Writer,
                   audit: AuditDep) -> Response:
    """Forget a dataset and its files."""
    catalog.delete(dataset.id)
    audit.record(caller.name, "delete-dataset", dataset.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
