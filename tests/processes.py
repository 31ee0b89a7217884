"""Process helpers the tests share: is a pid alive, which processes descend from a service."""

from __future__ import annotations

import os
from pathlib import Path


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def processes_with_env(prefix: str) -> list[int]:
    """Live processes with an environment entry starting with ``prefix``. Descendants
    inherit the environment, and Ray's agents rename themselves, so this finds what
    command lines do not."""
    marker = prefix.encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(entry.startswith(marker) for entry in environ):
            pids.append(int(proc.name))
    return pids
