"""The audit log: one JSON line per change, with who made it (``<data dir>/audit.log``).

    {"time": "2026-11-30T16:00:00+00:00", "user": "alice", "action": "submit",
     "target": "job_0123456789abcdef"}

Actions: submit, cancel, delete (jobs), upload, register, delete-dataset, and the
operator's user-add, user-remove, token-rotate.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class AuditLog:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def record(self, user: str, action: str, target: str, **detail: Any) -> None:
        line = json.dumps({"time": datetime.now(UTC).isoformat(), "user": user,
                           "action": action, "target": target, **detail})
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as out:
                out.write(line + "\n")
