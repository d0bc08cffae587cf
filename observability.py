"""Logs and metrics for every process.

Logs are structured: each record carries the invitation and workflow ids when it has them
(Temporal's workflow/activity loggers attach them), JSON lines when settings.log_json is on.
Link tokens and the link secret never reach a log line: a filter masks them.
Metrics go out through the Temporal runtime's Prometheus exporter (see worker.py); our own
counters are created from `workflow.metric_meter()` / `activity.metric_meter()`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

TOKEN_RE = re.compile(r"(/i/)[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")
BARE_TOKEN_RE = re.compile(r"\beyJ[A-Za-z0-9_\-]{20,}\.[A-Za-z0-9_\-]{20,}\b")


class RedactFilter(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        text = TOKEN_RE.sub(r"\1<token>", text)
        text = BARE_TOKEN_RE.sub("<token>", text)
        for secret in self.secrets:
            text = text.replace(secret, "<secret>")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        return True


def _ids(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    wf = getattr(record, "temporal_workflow", None)
    act = getattr(record, "temporal_activity", None)
    if isinstance(wf, dict):
        out["workflow_id"] = wf.get("workflow_id")
        out["run_id"] = wf.get("run_id")
    if isinstance(act, dict):
        out["workflow_id"] = act.get("workflow_id")
        out["activity"] = act.get("activity_type")
        out["attempt"] = act.get("attempt")
    inv = getattr(record, "invitation_id", None) or out.get("workflow_id")
    if inv:
        out["invitation_id"] = inv
    return {k: v for k, v in out.items() if v is not None}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_ids(record),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ids = _ids(record)
        suffix = " ".join(f"{k}={v}" for k, v in ids.items() if k != "run_id")
        base = (f"{self.formatTime(record)} {record.levelname:<7} {record.name}: "
                f"{record.getMessage()}")
        out = f"{base}  [{suffix}]" if suffix else base
        if record.exc_info:
            out += "\n" + self.formatException(record.exc_info)
        return out


def configure_logging(*, json_output: bool, secrets: list[str], level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_output else TextFormatter())
    handler.addFilter(RedactFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log prints request paths, which carry link tokens: route it through us.
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
