"""The service's log: one line per event, with the job id (and rank) it concerns.

``SYNCSGD_LOG_FORMAT=json`` writes JSON lines, for log shippers; the default is
text for people. Events pass ``extra={"job": ..., "rank": ...}``.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Literal

LogFormat = Literal["text", "json"]


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                "logger": record.name, "message": record.getMessage()}
        for key in ("job", "rank", "event"):
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        tags = " ".join(f"{k}={getattr(record, k)}" for k in ("event", "job", "rank")
                        if hasattr(record, k))
        text = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {tags} "
        text += record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(fmt: LogFormat) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLinesFormatter() if fmt == "json" else TextFormatter())
    logger = logging.getLogger("syncsgd")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
