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

# Everything after /i/ (or its url-encoded form) up to a space or a quote is the token,
# whatever its shape: with its dot removed or encoded, truncated, split by extra slashes,
# followed by a query. Only a known route suffix is kept, so a log still says what was asked.
LINK_PATH_RE = re.compile(r"(/|%2F)(i)(/|%2F)[^\s\"'<>]*", re.IGNORECASE)
ROUTE_SUFFIX_RE = re.compile(r"/(accept|refund|decline|status|reports\.csv)$")
# The codec endpoint's token, when it travels in the path (/codec/<token>/decode).
CODEC_PATH_RE = re.compile(r"(/codec/)(?!(?:en|de)code\b)[^\s\"'<>/]+", re.IGNORECASE)
# The admin console's one-time sign-in links (/signin/<token>, admin/sessions.py).
SIGNIN_PATH_RE = re.compile(r"(/|%2F)(signin)(/|%2F)[^\s\"'<>]*", re.IGNORECASE)
# A token outside a path: base64url JSON starts with "eyJ"; dot or no dot.
BARE_TOKEN_RE = re.compile(r"eyJ[A-Za-z0-9_\-.%]{20,}")


def _mask_link_path(match: re.Match[str]) -> str:
    suffix = ROUTE_SUFFIX_RE.search(match.group(0))
    return f"{match.group(1)}{match.group(2)}{match.group(3)}<token>" + (
        suffix.group(0) if suffix else "")


class RedactFilter(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted((s for s in secrets if s), key=len, reverse=True)

    def redact(self, text: str) -> str:
        text = LINK_PATH_RE.sub(_mask_link_path, text)
        text = CODEC_PATH_RE.sub(r"\1<token>", text)
        text = SIGNIN_PATH_RE.sub(r"\1\2\3<token>", text)
        text = BARE_TOKEN_RE.sub("<token>", text)
        for secret in self.secrets:
            text = text.replace(secret, "<secret>")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:  # a traceback may quote a URL too
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
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
            data["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ids = _ids(record)
        suffix = " ".join(f"{k}={v}" for k, v in ids.items() if k != "run_id")
        base = (f"{self.formatTime(record)} {record.levelname:<7} {record.name}: "
                f"{record.getMessage()}")
        out = f"{base}  [{suffix}]" if suffix else base
        if record.exc_info:
            out += "\n" + (record.exc_text or self.formatException(record.exc_info))
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
