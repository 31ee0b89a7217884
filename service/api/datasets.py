"""``/datasets``: upload a dataset (CSV or .npz), list them; job specs name them by id."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.concurrency import run_in_threadpool

from common.schemas import DatasetPublic
from service.api.deps import SettingsDep, StoreDep, require_read_token, require_token
from service.datasets import parse_upload, store_upload

router = APIRouter(prefix="/datasets", tags=["datasets"],
                   dependencies=[Depends(require_read_token)])


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_token)],
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/csv": {"schema": {"type": "string"}},
                 "application/octet-stream": {"schema": {"type": "string",
                                                         "format": "binary"}}}}},
             responses={413: {"description": "over SYNCSGD_MAX_UPLOAD_BYTES"},
                        422: {"description": "the file is refused; the message says why"}})
async def upload_dataset(
        request: Request, store: StoreDep, settings: SettingsDep,
        name: Annotated[str, Query(min_length=1, max_length=100)],
        format: Annotated[Literal["csv", "npz"], Query(description="the body's format")] = "csv",
        task: Literal["classification", "regression"] = "classification") -> DatasetPublic:
    """Upload the file as the request body. CSV: numbers only, the last column is the
    label (classification: integers 0..classes-1) or the target; a header row is skipped.
    ``.npz``: arrays ``x`` (rows, features) and ``y``; no pickled or object arrays."""
    body = await request.body()
    parsed = await run_in_threadpool(parse_upload, body, format, task)
    dataset = await run_in_threadpool(store_upload, settings.datasets_dir, name, parsed)
    store.add_dataset(dataset)
    return dataset


@router.get("")
def list_datasets(store: StoreDep) -> list[DatasetPublic]:
    """Uploaded datasets, newest first."""
    return store.list_datasets()


@router.get("/{dataset_id}")
def read_dataset(dataset_id: str, store: StoreDep) -> DatasetPublic:
    """One uploaded dataset."""
    return store.get_dataset(dataset_id)
