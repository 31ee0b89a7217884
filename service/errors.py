"""The service's domain errors. Each maps to ONE status, in one place
(:mod:`service.api.errors`): not found 404, state conflict 409, over a quota 413, a
refused field 422 (:class:`common.errors.FieldError`, raised by every layer)."""

from __future__ import annotations

from common.errors import FieldError

__all__ = ["DatasetNotFoundError", "FieldError", "JobNotFoundError", "NotFoundError",
           "QuotaExceededError", "ResumeError", "StateConflictError", "SubmissionError",
           "UserQuotaError"]


class NotFoundError(LookupError):
    """No such resource; the message names it (``Job job_x not found``)."""

    kind = "Resource"

    def __init__(self, resource_id: str):
        self.resource_id = resource_id
        super().__init__(f"{self.kind} {resource_id} not found")

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0])


class JobNotFoundError(NotFoundError):
    kind = "Job"


class DatasetNotFoundError(NotFoundError):
    kind = "Dataset"


class StateConflictError(RuntimeError):
    """The request does not fit the current state (deleting a running job, CPUs taken)."""


class QuotaExceededError(RuntimeError):
    """Storing this would pass a byte quota; the message names the setting (413)."""


class UserQuotaError(RuntimeError):
    """A user's request over one of its quotas; the message names it and the figures
    (429)."""


class SubmissionError(FieldError):
    """A job the service will not take (over a limit); ``field`` names what to change."""


class ResumeError(RuntimeError):
    """An interrupted job cannot continue (its checkpoints are unreadable)."""
