"""``/datasets``: upload a file or register one by path, watch it ingest, list, delete.

A job spec names a dataset by its id in ``data.dataset`` once it is ``ready``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status

from common.schemas import DatasetPublic, DatasetRegistration, DTypeName
from service.api.deps import CatalogDep, StoreDep, require_read_token, require_token
from service.datasets import IngestOptions

router = APIRouter(prefix="/datasets", tags=["datasets"],
                   dependencies=[Depends(require_read_token)])

WAIT = Query(description="answer when the ingest has ended: 201 and the ready dataset, or "
                         "the refusal (nothing stored); else 202 at once, and GET the "
                         "dataset to follow rows_done")
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"description": "accepted: ingesting (``wait`` false)"},
    413: {"description": "over SYNCSGD_DATASETS_QUOTA_BYTES"},
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
        request: Request, response: Response, catalog: CatalogDep,
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
    options = IngestOptions(name, format, task, label, header, dtype)
    declared = request.headers.get("content-length", "")
    dataset = await catalog.upload(request.stream(), int(declared) if declared.isdigit()
                                   else None, options, wait)
    return _answer(dataset, response)


@router.post("/register", status_code=status.HTTP_201_CREATED,
             dependencies=[Depends(require_token)], responses=ACCEPTED)
async def register_dataset(registration: DatasetRegistration, response: Response,
                           catalog: CatalogDep, wait: Annotated[bool, WAIT] = False
                           ) -> DatasetPublic:
    """Ingest a file, or a directory of Parquet files, from under SYNCSGD_DATASETS_ROOT:
    storage every node can read. ``npy``: a directory holding ``x.npy`` and ``y.npy``.
    If the file changes after ingest, jobs on it fail rather than train on other data."""
    return _answer(await catalog.register(registration, wait), response)


@router.get("")
def list_datasets(store: StoreDep) -> list[DatasetPublic]:
    """Every dataset, newest first, with its state."""
    return store.list_datasets()


@router.get("/{dataset_id}", responses={404: {"description": "no dataset with this id"}})
def read_dataset(dataset_id: str, store: StoreDep) -> DatasetPublic:
    """One dataset: its state, ``rows_done`` while it ingests, the error if it failed."""
    return store.get_dataset(dataset_id)


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[Depends(require_token)],
               responses={404: {"description": "no dataset with this id"},
                          409: {"description": "ingesting, or a queued or running job uses it"}})
def delete_dataset(dataset_id: str, catalog: CatalogDep) -> Response:
    """Forget a dataset and its files."""
    catalog.delete(dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
