"""Injected faults, for operators' drills and tests: which rank fails, when, and how.

One :class:`FaultPlan` per job holds the faults armed for it. The driver takes
what is armed between chunks and hands each fault to its rank, which strikes
just before the fault's step. Only ever used when the service's settings allow
fault injection.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

FaultAction = Literal["raise", "kill", "hang", "perturb", "slow"]


@dataclass(frozen=True)
class Fault:
    """Rank ``rank`` does ``action`` just before its step ``step``.

    ``raise``: the rank raises (a bad-data bug). ``kill``: SIGKILL of its process
    (a real crash). ``hang``: it stops answering while its peers wait in a
    collective. ``perturb``: its replica's weights drift (a silent corruption the
    fingerprint check must catch). ``slow``: from that step on, each of its steps computes
    ``seconds`` longer (a straggler).
    """

    rank: int
    step: int
    action: FaultAction = "raise"
    seconds: float = 0.0


class InjectedFaultError(RuntimeError):
    """The error an injected ``raise`` fault produces."""


class FaultPlan:
    """The faults armed for one job and not yet handed to a rank (thread-safe)."""

    def __init__(self, *faults: Fault):
        self._lock = threading.Lock()
        self._armed: list[Fault] = list(faults)

    def arm(self, fault: Fault) -> None:
        with self._lock:
            self._armed.append(fault)

    def take(self) -> list[Fault]:
        """Every armed fault, once: each strikes in one worker group only."""
        with self._lock:
            taken, self._armed = self._armed, []
        return taken
