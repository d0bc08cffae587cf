"""Frozen with workflows/v1/invitation.py (see there).

Timeouts and retry policies of every activity the invitation runs, in one place.

Transient faults (a dropped connection, a locked database, a worker restart) are retried
with exponential backoff. Business failures arrive as non-retryable ApplicationErrors
(messages.activity_io.ERR_*) and are never retried: the saga compensates instead.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

with_backoff = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30), maximum_attempts=10,
)

# Bookkeeping (the DB Invitation row, audit events) and the acceptance check.
PLATFORM: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=60), "retry_policy": with_backoff,
}

# The money and membership steps of the saga.
SAGA_STEP: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=2), "retry_policy": with_backoff,
}

# One category of data. Heartbeats carry the checkpoint, so a retry (or another worker,
# after this one stopped) resumes after the last committed batch. Cancelling waits until
# the activity has stopped writing, so that its undo never races it.
TRANSFER: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=30),
    "heartbeat_timeout": timedelta(seconds=15),
    "retry_policy": with_backoff,
    "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
}

# Undo steps try hard (a compensation that gives up leaves data half-moved) but not forever.
UNDO: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=5),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=1), maximum_attempts=30,
    ),
}

# Mail is best effort: a few attempts, then the invitation carries on without it.
MAIL: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=10), maximum_attempts=5,
    ),
}
