"""Logging for every ltrr process: human-readable text (the default) or one JSON object per line
(`--log-format json`, what the k8s manifests use, for a log pipeline to index).

A JSON line holds ts (UTC, ISO 8601, ms), level, logger, msg, pid, and decision_id while the
broker handles a Search or Feedback: DECISION_ID is a context variable that the handler sets and
DecisionIdFilter copies onto every record logged within that request's task (asyncio tasks copy
the context they start from, so the fan-out's tasks carry it too). An exception adds `exc`.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

DECISION_ID: ContextVar[str] = ContextVar("ltrr_decision_id", default="")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


class DecisionIdFilter(logging.Filter):
    """Adds `decision_id` (DECISION_ID's value, "" outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.decision_id = DECISION_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (module docstring); non-ASCII text kept as is."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "msg": record.getMessage(), "pid": record.process}
        decision_id = getattr(record, "decision_id", "")
        if decision_id:
            out["decision_id"] = decision_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


class _Handler(logging.StreamHandler):
    """The handler `setup` installs (so that a second call replaces it, and only it)."""


def setup(level: str = "INFO", log_format: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Send records at `level` and above to `stream` (stderr) in `log_format` (text or json), on
    the root logger, in place of the handler an earlier call installed; returns the handler. A
    level below INFO applies to ltrr's own loggers only: other libraries' (numba's compiler, grpc)
    stay at INFO."""
    if log_format not in FORMATS:
        raise ValueError(f"`log_format` must be one of {', '.join(FORMATS)}, but got {log_format!r}")
    ours = logging.getLevelName(level.upper())
    if not isinstance(ours, int):
        raise ValueError(f"`level` must be a logging level (DEBUG, INFO, WARNING, ERROR), but got {level!r}")
    handler = _Handler(stream or sys.stderr)
    handler.addFilter(DecisionIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(ours, logging.INFO))
    logging.getLogger("ltrr").setLevel(ours)
    return handler
