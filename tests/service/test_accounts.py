"""Accounts in the service's SQLite file: a user's fair share, set by the operator's
CLI, and a database from before shares existed, opened without losing a user."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from common.errors import FieldError
from service.accounts import Accounts
from tests.service.test_cli_engine import SYNCSGD

#: The users table as the first version of accounts wrote it.
OLD_USERS = """CREATE TABLE users (
    name TEXT PRIMARY KEY, admin INTEGER NOT NULL DEFAULT 0, token_id TEXT UNIQUE NOT NULL,
    token_hash TEXT NOT NULL, created_at TEXT NOT NULL, max_cpus REAL,
    max_queued_jobs INTEGER, max_dataset_bytes INTEGER,
    may_use_high INTEGER NOT NULL DEFAULT 0);
INSERT INTO users VALUES ('old', 0, '0123456789ab', 'hash', '2026-11-01T00:00:00', NULL, NULL,
                          NULL, 1);"""


def test_a_database_from_before_shares_keeps_its_users_at_a_share_of_one(
        tmp_path: Path) -> None:
    path = tmp_path / "syncsgd.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_USERS)
    accounts = Accounts(path)
    try:
        (old,) = accounts.list()
        assert (old.name, old.may_use_high, old.share) == ("old", True, 1.0)
        accounts.add("heavy", share=3)
        assert accounts.shares() == {"old": 1.0, "heavy": 3.0}
        with pytest.raises(FieldError, match="share") as refused:
            accounts.add("nothing", share=0)
        assert refused.value.field == "share"
    finally:
        accounts.close()


def test_the_operator_sets_a_share_with_the_cli(tmp_path: Path) -> None:
    def users(*args: str) -> str:
        done = subprocess.run([SYNCSGD, "users", *args, "--data-dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert users("add", "team-a", "--share", "2.5").startswith("sgd_")
    rows = [line for line in users("list").splitlines() if "team-a" in line]
    assert len(rows) == 1 and "2.5" in rows[0].split()
