"""Unit tier: the pure parts of the workflow (wake-up schedule, operator summary, failure
descriptions), no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from messages.payloads import (
    BlockingItem,
    Category,
    CategoryProgress,
    InvitationStatus,
    Progress,
    UserType,
)
from workflows.details import blocked_message, current_details, describe_failure
from workflows.schedule import wake_ups

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def test_default_schedule_reminds_after_7_days_and_3_days_before_expiry() -> None:
    due = wake_ups(T0, T0 + 30 * DAY, [7 * DAY], [3 * DAY])
    assert [(d.at - T0, d.kind) for d in due] == [
        (7 * DAY, "reminder"), (27 * DAY, "expiring_soon"), (30 * DAY, "expiry")]
    assert len({d.key for d in due}) == 3
    assert due[0].summary == "Reminder 7 days after the invitation"


def test_offsets_outside_the_invitation_window_are_dropped() -> None:
    due = wake_ups(T0, T0 + 5 * DAY, [7 * DAY, DAY], [10 * DAY, 5 * DAY, timedelta(hours=12)])
    assert [(d.at - T0, d.kind) for d in due] == [
        (DAY, "reminder"), (4 * DAY + 12 * timedelta(hours=1), "expiring_soon"),
        (5 * DAY, "expiry")]


def test_resend_schedule_counts_from_the_new_issue_time_and_expiry() -> None:
    resent = T0 + 10 * DAY
    due = wake_ups(resent, resent + 30 * DAY, [7 * DAY], [3 * DAY])
    assert [d.at - T0 for d in due] == [17 * DAY, 37 * DAY, 40 * DAY]


def test_blocked_message_names_every_blocker_and_what_to_do() -> None:
    items = [BlockingItem(kind="other_user", name="olga@example.com", action="Remove Olga."),
             BlockingItem(kind="room", name="Boardroom", action="Delete the room.")]
    text = blocked_message("Acme", items)
    assert text.startswith("Error 1009") and "Acme" in text
    assert "olga@example.com: Remove Olga." in text and "Boardroom: Delete the room." in text


def test_failure_description_is_the_typed_root_cause() -> None:
    cause = ApplicationError("checksum differs", type="ChecksumMismatch", non_retryable=True)
    err = ActivityError("activity failed", scheduled_event_id=1, started_event_id=2,
                        identity="w", activity_type="transfer_recordings", activity_id="9",
                        retry_state=RetryState.NON_RETRYABLE_FAILURE)
    err.__cause__ = cause
    assert describe_failure(err) == "checksum differs (ChecksumMismatch)"


def test_current_details_show_state_blockers_and_category_table() -> None:
    p = Progress(invitation_id="i", status=InvitationStatus.TRANSFERRING, account_id=1,
                 account_name="Acme", invited_by="admin@acme.test", email="p@example.com",
                 user_type=UserType.BASIC, invited_at=T0, expires_at=T0 + 30 * DAY,
                 step="Transferring data",
                 categories={Category.CHAT: CategoryProgress(category=Category.CHAT,
                                                             state="running", total=10)})
    text = current_details(p)
    assert "Status: `transferring`" in text and "Acme" in text
    assert "| Chat history | running | 0 | 10 | 0 |" in text
