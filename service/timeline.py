"""A job's per-rank timeline as Chrome Trace Event JSON (Perfetto, ``chrome://tracing``).

One process per node and one thread per rank, so that each rank is a track under its
node; each step is four complete (``"X"``) events on its rank's track, in the order
the step runs them: compute (the shard's forward and backward), wait (for the slowest
rank's compute, inside the all-reduce), allreduce (the transfer) and update.
"""

from __future__ import annotations

from typing import Any

from common.records import SPAN_PHASES
from service.store import SpanRow

US = 1e6  # the format's times are microseconds


def chrome_trace(rows: list[SpanRow], job_id: str) -> dict[str, Any]:
    """The trace of ``rows`` (in step and rank order): metadata events naming every node
    and rank, then each step's phases as complete events."""
    nodes: dict[str, int] = {}
    ranks: dict[tuple[int, int], None] = {}
    events: list[dict[str, Any]] = []
    for row in rows:
        pid = nodes.setdefault(row.node, len(nodes) + 1)
        ranks[(pid, row.rank)] = None
        ts = row.start * US
        for phase in SPAN_PHASES:
            dur = getattr(row, phase) * US
            events.append({"name": phase, "cat": "step", "ph": "X", "ts": ts, "dur": dur,
                           "pid": pid, "tid": row.rank, "args": {"step": row.step}})
            ts += dur
    meta = [{"name": "process_name", "ph": "M", "ts": 0, "pid": pid, "tid": 0,
             "args": {"name": f"node {node}"}} for node, pid in nodes.items()]
    meta += [{"name": "thread_name", "ph": "M", "ts": 0, "pid": pid, "tid": rank,
              "args": {"name": f"rank {rank}"}} for pid, rank in ranks]
    steps = [rows[0].step, rows[-1].step] if rows else None
    return {"traceEvents": meta + events, "displayTimeUnit": "ms",
            "otherData": {"job": job_id, "steps": steps}}
