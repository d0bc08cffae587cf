"""Unit tier: log records are structured, carry the invitation id, never a link token."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime

import pytest

from observability import JsonFormatter, RedactFilter, TextFormatter, configure_logging
from rules.links import acceptance_url, sign


@pytest.fixture
def captured() -> logging.StreamHandler:  # type: ignore[type-arg]
    configure_logging(json_output=True, secrets=["the-link-secret"])
    root = logging.getLogger()
    handler = root.handlers[0]
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    yield handler  # type: ignore[misc]
    root.handlers[:] = []


def test_json_logs_carry_ids_and_mask_tokens(captured: logging.StreamHandler) -> None:  # type: ignore[type-arg]
    token = sign("the-link-secret", "invitation-1-a@example.com", "a@example.com",
                 datetime(2026, 11, 25, tzinfo=UTC))
    url = acceptance_url("http://127.0.0.1:8000", token)
    log = logging.getLogger("activities.mail")
    log.info("sent invitation with %s using the-link-secret", url,
             extra={"temporal_activity": {"workflow_id": "invitation-1-a@example.com",
                                          "activity_type": "send_email", "attempt": 1}})
    log.info("bare token %s", token)
    lines = captured.stream.getvalue().splitlines()  # type: ignore[attr-defined]
    first, second = (json.loads(line) for line in lines)
    assert first["invitation_id"] == "invitation-1-a@example.com"
    assert first["activity"] == "send_email" and first["level"] == "info"
    assert token not in first["msg"] and "/i/<token>" in first["msg"]
    assert "the-link-secret" not in first["msg"] and "<secret>" in first["msg"]
    assert token not in second["msg"] and "<token>" in second["msg"]


def test_text_logs_name_the_workflow() -> None:
    record = logging.LogRecord("workflow", logging.INFO, __file__, 1, "accepted", None, None)
    record.temporal_workflow = {"workflow_id": "invitation-7-b@example.com", "run_id": "r1"}
    RedactFilter([]).filter(record)
    assert "invitation_id=invitation-7-b@example.com" in TextFormatter().format(record)
    assert json.loads(JsonFormatter().format(record))["run_id"] == "r1"
