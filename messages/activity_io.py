"""Inputs and results of the activities (one model each), shared by the workflows, which
call each activity by reference to its method (`workflow.execute_activity_method(
PlatformActivities.link_member, ...)`, so the type checker follows a rename), and the
activity classes in activities/ that implement them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, StrictInt

from messages.payloads import (
    BlockingItem,
    Category,
    InvitationInput,
    InvitationStatus,
    Payment,  # noqa: F401  (pay_refund/reverse_refund return it; re-exported)
    RefundDestination,
    RefundQuote,
    SettingChange,
    UserType,
)

# ApplicationError types raised by activities (non-retryable business failures).
ERR_SEATS_EXHAUSTED = "SeatsExhausted"
ERR_CHECKSUM_MISMATCH = "ChecksumMismatch"
ERR_SOURCE_CHANGED = "SourceChanged"
ERR_INVITEE_UNAVAILABLE = "InviteeUnavailable"
ERR_TRANSFER_FAILED = "TransferFailed"
ERR_CLAIM_LOST = "ClaimLost"  # link_member without holding the person's join claim
# A newer attempt (or undo_transfer, or finalise) took the transfer: this attempt stops.
ERR_TRANSFER_SUPERSEDED = "TransferSuperseded"
# The transfer was undone for this round: it never runs (or goes live) again in that round.
ERR_TRANSFER_UNDONE = "TransferUndone"
# undo_transfer after finalise committed: past the point of no return, nothing is removed.
ERR_TRANSFER_LIVE = "TransferLive"
# release_source before finalise committed (a transfer still running or undone).
ERR_NOT_FINALISED = "NotFinalised"


class RegisterInvitation(BaseModel):
    invitation_id: str
    input: InvitationInput
    invited_at: datetime
    expires_at: datetime


class RegisteredInvitation(BaseModel):
    account_name: str
    invited_by_name: str


class AuditNote(BaseModel):
    """A state the workflow passed through without writing it down on its own (to save a
    round trip): written with the next status change, before it."""

    status: InvitationStatus
    at: datetime
    event: str
    detail: dict[str, Any] = {}


class StatusChange(BaseModel):
    invitation_id: str
    status: InvitationStatus
    at: datetime
    expires_at: datetime | None = None
    source_account_id: int | None = None
    event: str  # audit event kind, e.g. "accepted", "blocked", "refund_paid"
    detail: dict[str, Any] = {}
    earlier: list[AuditNote] = []  # oldest first


class AcceptanceCheck(BaseModel):
    invitation_id: str
    account_id: StrictInt
    email: str
    user_type: UserType
    group: str | None
    at: datetime  # acceptance time (workflow.now()): the refund quote is computed for it


class ClaimRefusal(BaseModel):
    """Why this invitation may not take the person's join right now (records.claims)."""

    kind: Literal["already_joining", "joined_elsewhere", "no_free_seat"]
    account_name: str  # the organisation they are joining / joined / that has no seat
    invitation_id: str | None = None  # the invitation holding the claim


class AcceptanceFacts(BaseModel):
    blocking: list[BlockingItem]
    quote: RefundQuote | None  # None: nothing to refund (free plan / no subscription)
    settings_changes: list[SettingChange]
    reports_left_behind: int
    user_id: int | None  # None: no account yet on the platform
    source_account_id: int | None
    # Set when the checks passed but the join is not this invitation's to make: another
    # company's invitation holds the person's join, or no licensed seat is free.
    refusal: ClaimRefusal | None = None


class LinkMember(BaseModel):
    invitation_id: str
    account_id: StrictInt
    email: str
    first_name: str = ""
    last_name: str = ""
    user_type: UserType
    group: str | None
    # The invitation's "transferring" status (the data phase starts with the link),
    # written in the link's own transaction.
    record: StatusChange | None = None


class Membership(BaseModel):
    """Who was linked, and what they were before (so that unlinking restores it)."""

    invitation_id: str
    user_id: int
    account_id: int
    source_account_id: int | None
    previous_role: str | None
    previous_user_type: str | None
    previous_group: str | None
    created_user: bool = False


class UnlinkInvitation(BaseModel):
    """Undo whatever link this invitation made (found by its "linked" audit event)."""

    invitation_id: str


class PayRefund(BaseModel):
    invitation_id: str
    source_account_id: int
    org_account_id: int
    destination: RefundDestination
    at: datetime


class ReverseRefund(BaseModel):
    invitation_id: str
    source_account_id: int
    org_account_id: int


class Transfer(BaseModel):
    invitation_id: str
    category: Category
    user_id: int
    source_account_id: int
    org_account_id: int
    group: str | None = None
    batch_size: int = 1000  # rows in the first batch; later batches are sized by time
    # A quick first try (a local activity, inside the workflow task): stop after about
    # this many seconds and answer finished=False; the activity that follows resumes
    # from the committed checkpoint.
    budget_seconds: float | None = None
    # The workflow's time (the server's clock) for a local activity, whose own scheduled
    # time is the worker's clock: rounds are told apart by it (activities.fencing).
    scheduled_at: datetime | None = None


class Transferred(BaseModel):
    category: Category
    total: int  # rows in the source
    copied: int  # rows copied for this invitation after this activity (all attempts)
    bytes: int = 0
    batches: int = 0  # batches written by the attempt that finished
    resumed_from: int | None = None  # checkpoint (last source id) the attempt started from
    attempt: int = 1
    settings_changed: list[SettingChange] = []
    reports_left_behind: int = 0
    epoch: int = 0  # the epoch this attempt held (see records.tables.TransferState)
    inserted: int = 0  # rows this attempt inserted (the rest were committed before it)
    finished: bool = True  # False: a quick try ran out of its budget (see Transfer)


class UndoTransfer(BaseModel):
    invitation_id: str
    category: Category


class UndoneTransfer(BaseModel):
    category: Category
    removed: int


class Finalise(BaseModel):
    invitation_id: str
    user_id: int
    source_account_id: int | None
    org_account_id: int
    # The invitation's "completed" status, written in finalise's own transaction: the
    # point of no return and the record of it commit together.
    completed: StatusChange | None = None


class Finalised(BaseModel):
    made_live: dict[str, int]  # rows per category that became live (copies of this invitation)
    source_account_closed: bool


class ReleaseSource(BaseModel):
    invitation_id: str
    user_id: int
    source_account_id: int
    org_account_id: int
    budget_seconds: float | None = None  # a quick first try, as in Transfer


class Released(BaseModel):
    """What release_source did in this run (a re-run after a full release reports zeros)."""

    made_final: dict[str, int]  # staged copies flipped to staged=False, per category
    source_rows_deleted: dict[str, int]  # source rows removed, per category
    files_deleted: int  # source recording files removed (destination re-verified first)
    batches: int
    finished: bool = True  # False: a quick try ran out of its budget (see ReleaseSource)


class QuickJoin(BaseModel):
    """The join's quick first try, one local activity (activities/quick_join.py): the
    link, then the refund (when `pay` is set), then a quick transfer of each category in
    turn (each with its own budget), none started after `start_transfers_within`. Each
    step is the same idempotent step the workflow would otherwise run alone, in its own
    transaction."""

    link: LinkMember
    pay: PayRefund | None = None
    categories: list[Category] = []  # moved from source_account_id for the linked user
    source_account_id: int | None = None
    scheduled_at: datetime  # the workflow's time (see Transfer.scheduled_at)
    budget_seconds: float  # each transfer's (see Transfer.budget_seconds)
    start_transfers_within: float  # seconds from the start: no transfer starts later


class QuickJoined(BaseModel):
    """How far the quick try got. A step missing here (not reached, failed, or out of
    budget) is run by the workflow as its own step, which is safe: every step is
    idempotent and its undo was registered before the try."""

    member: Membership | None = None  # linked
    payment: Payment | None = None  # paid (when asked)
    tried: list[Category] = []  # transfers started (finished or not)
    transferred: list[Transferred] = []  # transfers finished
    stopped: str | None = None  # why a step did not finish, for the log
