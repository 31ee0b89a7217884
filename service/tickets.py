"""Short-lived signed tickets for the event streams.

A browser's ``EventSource`` cannot send an ``Authorization`` header, so where reads need
the token the dashboard first asks ``POST /jobs/{id}/events/ticket`` (with the token) and
opens ``GET /jobs/{id}/events?ticket=...``. A ticket names one job and expires after
``ttl_s``; it is signed with a key this process drew at start, so no ticket outlives the
service, and none is stored.
"""

from __future__ import annotations

import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer


class Tickets:
    def __init__(self, ttl_s: int = 60):
        self.ttl_s = ttl_s
        self._signer = URLSafeTimedSerializer(secrets.token_bytes(32), salt="job-events")

    def issue(self, job_id: str) -> str:
        return self._signer.dumps(job_id)

    def admits(self, ticket: str, job_id: str) -> bool:
        """Is ``ticket`` one of ours, for ``job_id``, and not expired?"""
        try:
            return bool(self._signer.loads(ticket, max_age=self.ttl_s) == job_id)
        except BadSignature:  # SignatureExpired is one
            return False
