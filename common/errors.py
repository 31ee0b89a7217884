"""The error every layer raises for input it refuses because of one field."""

from __future__ import annotations


class FieldError(ValueError):
    """Refused because of ``field``, the dotted path of the offending part of a request
    (``model.layers[-1].units``, ``workers``, ``file``); ``message`` says why, and the
    limit where there is one. The service answers it with a 422 naming the field."""

    def __init__(self, field: str, message: str, location: str = "body"):
        self.field, self.message, self.location = field, message, location  # body, query
        super().__init__(f"{field}: {message}")

    def within(self, prefix: str) -> FieldError:
        """The same error for a request that holds this one's under ``prefix``."""
        return FieldError(f"{prefix}.{self.field}", self.message)
