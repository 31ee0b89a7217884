"""Each user's quotas (:class:`service.accounts.User`): the CPUs its queued and running jobs
ask at once, its queued jobs, and its datasets' bytes. Over one, a request gets a 429
that names the quota and the figures. The admin has none."""

from __future__ import annotations

from common.schemas import DatasetPublic, DatasetState, JobPublic, JobSpec, JobState
from service.accounts import User
from service.errors import UserQuotaError


def cpus_of(spec: JobSpec) -> float:
    return float(spec.max_workers * spec.cpus_per_worker)


def check_job(user: User | None, active: list[JobPublic], spec: JobSpec) -> None:
    """May ``user``, whose queued and running jobs are ``active``, queue ``spec``?"""
    if user is None:
        return
    queued = sum(1 for j in active if j.state == JobState.queued)
    if user.max_queued_jobs is not None and queued >= user.max_queued_jobs:
        raise UserQuotaError(f"quota max_queued_jobs of user {user.name}: {queued} queued "
                                 f"of {user.max_queued_jobs}")
    held, need = sum(cpus_of(j.spec) for j in active), cpus_of(spec)
    if user.max_cpus is not None and held + need > user.max_cpus:
        raise UserQuotaError(f"quota max_cpus of user {user.name}: this job asks {need:g} "
                                 f"CPUs and the queued and running ones {held:g}, over "
                                 f"{user.max_cpus:g}")


def dataset_bytes_left(user: User | None, datasets: list[DatasetPublic]) -> int | None:
    """What ``user`` may still add, in bytes (None: no quota)."""
    if user is None or user.max_dataset_bytes is None:
        return None
    used = sum(d.bytes for d in datasets if d.owner == user.name
               and d.state != DatasetState.failed)
    return user.max_dataset_bytes - used


def check_dataset(user: User | None, datasets: list[DatasetPublic], more: int) -> None:
    left = dataset_bytes_left(user, datasets)
    if user is not None and left is not None and more > left:
        raise UserQuotaError(f"quota max_dataset_bytes of user {user.name}: {more} more "
                                 f"bytes, {left} left of {user.max_dataset_bytes}")
