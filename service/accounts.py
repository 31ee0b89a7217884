"""Accounts: users with their own tokens, admins, and each user's quotas.

Users live in their own table of the service's SQLite file, so that an operator's
``syncsgd users`` commands and a running service see the same accounts at once (a
rotated token stops working with the next request). A token is ``sgd_<id>_<secret>``:
the id finds the user, and only the secret's sha256 is stored, compared in constant
time. The service's ``SYNCSGD_TOKEN``, when set, is an admin's token, as before accounts.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from common.errors import FieldError

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    admin INTEGER NOT NULL DEFAULT 0,
    token_id TEXT UNIQUE NOT NULL,
    token_hash TEXT NOT NULL,  -- sha256 of the token's secret part, hex
    created_at TEXT NOT NULL,
    max_cpus REAL,  -- CPUs its queued and running jobs may ask at once (NULL: no limit)
    max_queued_jobs INTEGER,
    max_dataset_bytes INTEGER,
    may_use_high INTEGER NOT NULL DEFAULT 0,
    share REAL NOT NULL DEFAULT 1  -- its weight in the queue's fair share
);
"""
#: Columns added since the first version: (column, type and default).
ADDED_COLUMNS = (("share", "REAL NOT NULL DEFAULT 1"),)
EXIST_TTL_S = 1.0
MAX_SHARE = 1_000_000.0
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
TOKEN = re.compile(r"^sgd_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class Principal:
    """Who a request is from."""

    name: str
    admin: bool

    def sees(self, owner: str | None) -> bool:
        """May it see and change what ``owner`` owns? (None: made before accounts, the
        admin's.)"""
        return self.admin or owner == self.name


#: ``SYNCSGD_TOKEN``'s holder, and everyone on a service without auth.
ADMIN = Principal("admin", True)


class User(BaseModel):
    name: str
    admin: bool = False
    created_at: datetime
    max_cpus: float | None = Field(default=None, description="CPUs its jobs ask at once")
    max_queued_jobs: int | None = None
    max_dataset_bytes: int | None = None
    may_use_high: bool = False
    share: float = Field(default=1.0, description="its weight in the queue's fair share: "
                         "among jobs of one priority, the next is the one of the user who "
                         "holds the fewest CPUs per unit of share")


class Accounts:
    """The users of the service whose database is ``path``."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(users)")}
        for column, kind in ADDED_COLUMNS:
            if column not in have:
                self._db.execute(f"ALTER TABLE users ADD COLUMN {column} {kind}")
        self._exist, self._exist_read_at = False, -float("inf")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def exist(self) -> bool:
        """Are there accounts? Asked by every request, so read at most once a second (a
        first user's token works a second after ``users add`` at the latest)."""
        now = time.monotonic()
        if now - self._exist_read_at > EXIST_TTL_S:
            with self._lock:
                self._exist = self._db.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None
            self._exist_read_at = now
        return self._exist

    def add(self, name: str, admin: bool = False, max_cpus: float | None = None,
            max_queued_jobs: int | None = None, max_dataset_bytes: int | None = None,
            may_use_high: bool = False, share: float = 1.0) -> str:
        """A new user; returns its token, which is shown once and never stored."""
        if not NAME.match(name):
            raise FieldError("name", f"{name!r}: 1 to 64 of a-z, 0-9, '_', '.', '-', "
                             "starting with a letter or digit")
        if not 0 < share <= MAX_SHARE:
            raise FieldError("share", f"{share}: over 0, at most {MAX_SHARE}")
        token, token_id, digest = _new_token()
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO users (name, admin, token_id, token_hash, created_at, "
                    "max_cpus, max_queued_jobs, max_dataset_bytes, may_use_high, share) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (name, int(admin), token_id, digest, datetime.now(UTC).isoformat(),
                     max_cpus, max_queued_jobs, max_dataset_bytes, int(may_use_high), share))
        except sqlite3.IntegrityError:
            raise FieldError("name", f"a user {name!r} exists already") from None
        return token

    def rotate(self, name: str) -> str:
        """A new token for ``name``; the old one stops working at once."""
        token, token_id, digest = _new_token()
        with self._lock:
            changed = self._db.execute("UPDATE users SET token_id = ?, token_hash = ? "
                                       "WHERE name = ?", (token_id, digest, name)).rowcount
        if not changed:
            raise LookupError(f"no user {name!r}")
        return token

    def remove(self, name: str) -> None:
        with self._lock:
            if not self._db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount:
                raise LookupError(f"no user {name!r}")

    def list(self) -> list[User]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM users ORDER BY name").fetchall()
        return [_user(r) for r in rows]

    def get(self, name: str) -> User | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        return _user(row) if row is not None else None

    def shares(self) -> dict[str, float]:
        """Each user's fair share (the queue asks once a pass, when owners compete)."""
        with self._lock:
            rows = self._db.execute("SELECT name, share FROM users").fetchall()
        return {r["name"]: float(r["share"]) for r in rows}

    def authenticate(self, token: str) -> Principal | None:
        """The user whose token this is, or None."""
        match = TOKEN.match(token)
        if match is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT name, admin, token_hash FROM users WHERE "
                                   "token_id = ?", (match.group(1),)).fetchone()
        if row is None or not hmac.compare_digest(_digest(match.group(2)), row["token_hash"]):
            return None
        return Principal(row["name"], bool(row["admin"]))


def _new_token() -> tuple[str, str, str]:
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    return f"sgd_{token_id}_{secret}", token_id, _digest(secret)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _user(row: sqlite3.Row) -> User:
    return User(name=row["name"], admin=bool(row["admin"]), created_at=row["created_at"],
                max_cpus=row["max_cpus"], max_queued_jobs=row["max_queued_jobs"],
                max_dataset_bytes=row["max_dataset_bytes"],
                may_use_high=bool(row["may_use_high"]), share=row["share"])
