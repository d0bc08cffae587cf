"""Timeouts and retry policies of every activity the invitation runs, in one place.

Transient faults (a dropped connection, a locked database, a worker restart) are retried
with capped exponential backoff. Business failures arrive as non-retryable
ApplicationErrors (messages.activity_io.ERR_*) and are never retried: the saga compensates.

Recovery after a worker dies: bookkeeping, the acceptance check, the link, the refund and
the quick first tries of transfers, finalise, release and mail are local activities, run
inside the workflow task, which another worker picks up once the task's 10 s timeout
passes; transfers, release and undo steps, as activities, heartbeat every few seconds
against a 10 s heartbeat timeout; mail attempts are bounded to 15 s. So any step resumes
on another worker within ~20 s.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType


def _backoff(*, attempts: int = 0, cap: timedelta = timedelta(seconds=30)) -> RetryPolicy:
    """`attempts=0`: retry until it works (for steps that must not give up)."""
    return RetryPolicy(initial_interval=timedelta(milliseconds=500), backoff_coefficient=2.0,
                       maximum_interval=cap, maximum_attempts=attempts)


# Bookkeeping: the Invitation row (status, audit, the join claim's release). Never given up.
RECORD: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=10), "retry_policy": _backoff(),
}

# The acceptance check answers a waiting person: a few tries, then "try again".
CHECK: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=10), "retry_policy": _backoff(attempts=5),
}

# Link and refund: short transactions, retried through transient faults.
SAGA_STEP: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=10), "retry_policy": _backoff(attempts=10),
}
# The same, for invitations since the quick-join patch: a cancel waits until the step
# stopped writing (the activity answers once its transaction is over), so that its undo
# never runs beside it.
SAGA_STEP_WAIT: dict[str, Any] = {
    **SAGA_STEP, "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
}

# One category of data. Cancelling waits until the activity stopped writing, so that its
# undo never races it (the transfer is also fenced in the database: activities/transfers).
TRANSFER: dict[str, Any] = {
    "start_to_close_timeout": timedelta(hours=2),
    "heartbeat_timeout": timedelta(seconds=10),
    "retry_policy": _backoff(attempts=10),
    "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
}

# The quick first try of a transfer or a release: a local activity inside the workflow
# task (no history events of its own, one billed action for all of them), that stops
# after QUICK_BUDGET_SECONDS and leaves the rest (a big source) to the activity above,
# which resumes from the committed checkpoint. A failure of the quick try is not the
# step's failure: the activity runs next with its own retries.
QUICK_BUDGET_SECONDS = 2.0
QUICK: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=15),
    "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=200),
                                maximum_attempts=2),
    "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
}

# The join's quick try (link, refund, then each category's quick transfer, in one local
# activity: workflows/moving.py `_join_quickly`). Each transfer in it has its own
# QUICK_BUDGET_SECONDS of copying; no transfer starts after QUICK_JOIN_SECONDS (time spent
# waiting for the database counts: under a burst the rest then runs as steps of their
# own). Its timeout leaves room for both; it is not tried twice: a step stalled past it
# (the workflow task waits meanwhile: updates and queries too) runs alone instead.
QUICK_JOIN_SECONDS = 6.0
QUICK_JOIN: dict[str, Any] = {
    **QUICK, "start_to_close_timeout": timedelta(seconds=15),
    "retry_policy": RetryPolicy(maximum_attempts=1),
}

# Finalise, the point of no return: a quick try (QUICK: one short transaction), then a
# first round of attempts as an activity, then (after the alert is raised) retried
# forever with a longer cap.
FINALISE_FIRST: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30), "retry_policy": _backoff(attempts=5),
}
FINALISE_AGAIN: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": _backoff(cap=timedelta(minutes=5)),
}

# After completion: make the copies live row by row and remove the source (heartbeats).
RELEASE: dict[str, Any] = {
    "start_to_close_timeout": timedelta(hours=2), "heartbeat_timeout": timedelta(seconds=10),
    "retry_policy": _backoff(cap=timedelta(minutes=5)),
}

# Undo steps retry transient faults without limit; a non-retryable failure needs an
# operator (needs_attention, then the retry_compensation update).
UNDO: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=2), "heartbeat_timeout": timedelta(seconds=10),
    "retry_policy": _backoff(cap=timedelta(minutes=1)),
}

# Mail: a quick first try (a local activity: a few seconds at most), then, with the
# problem shown, retries as an activity with a capped backoff for a day. The message key
# (hence the Message-ID) never changes.
MAIL_FIRST: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=10),
    "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=500),
                                maximum_attempts=3),
}
MAIL_DURABLE: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=15),
    "schedule_to_close_timeout": timedelta(hours=26),
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=10), backoff_coefficient=2.0,
                                maximum_interval=timedelta(minutes=10)),
}
