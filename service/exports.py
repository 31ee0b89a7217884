"""A job's curve as a CSV table (``GET /jobs/{id}/curve?format=csv``, MLflow's artifact)."""

from __future__ import annotations

import csv
import io

from common.records import StepRecord
from service.store import POINT_FIELDS


def curve_csv(points: list[StepRecord]) -> str:
    """A header of the point fields, then a row per point (empty cells for None)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(POINT_FIELDS)
    for p in points:
        writer.writerow(["" if v is None else v for v in (getattr(p, f) for f in POINT_FIELDS)])
    return text.getvalue()
