"""Plain pydantic payloads that cross the workflow boundary (inputs, results, messages).
They never import the table classes: workflows must stay free of database code."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictInt, field_validator

from records.ids import normalise_email


class UserType(StrEnum):
    BASIC = "basic"
    LICENSED = "licensed"


class InvitationStatus(StrEnum):
    PENDING = "pending"  # waiting for the invitee
    BLOCKED = "blocked"  # tried to accept, error 1009; still open
    AWAITING_REFUND_CHOICE = "awaiting_refund_choice"
    ACCEPTED = "accepted"  # linked, paying refund
    TRANSFERRING = "transferring"
    COMPLETED = "completed"
    DECLINED = "declined"
    EXPIRED = "expired"
    REVOKED = "revoked"
    FAILED_COMPENSATED = "failed_compensated"  # failed for good, everything done undone
    JOINED_ELSEWHERE = "joined_elsewhere"  # the person joined another account meanwhile
    CANCELLED = "cancelled"  # cancelled by an operator before anything moved
    NEEDS_ATTENTION = "needs_attention"  # an undo step failed for good: an operator must act

    @property
    def awaiting_acceptance(self) -> bool:
        return self in (InvitationStatus.PENDING, InvitationStatus.BLOCKED)

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def data_moving(self) -> bool:
        """Past this point an invitation can no longer be revoked."""
        return self in (
            InvitationStatus.ACCEPTED, InvitationStatus.TRANSFERRING, InvitationStatus.COMPLETED,
            InvitationStatus.FAILED_COMPENSATED, InvitationStatus.NEEDS_ATTENTION,
        )


FINAL_STATUSES = frozenset(
    {
        InvitationStatus.COMPLETED, InvitationStatus.DECLINED, InvitationStatus.EXPIRED,
        InvitationStatus.REVOKED, InvitationStatus.FAILED_COMPENSATED,
        InvitationStatus.JOINED_ELSEWHERE, InvitationStatus.CANCELLED,
    }
)
# The same, as the strings stored in Invitation.status (for SQL filters and row checks).
FINAL_STATUS_VALUES = frozenset(s.value for s in FINAL_STATUSES)


class Category(StrEnum):
    PROFILE = "profile"
    MEETINGS = "meetings"  # scheduled meetings and webinars
    RECORDINGS = "recordings"
    CHAT = "chat"
    CONTACTS = "contacts"
    SETTINGS = "settings"


class RefundDestination(StrEnum):
    ORIGINAL_PAYMENT_METHOD = "original_payment_method"
    ACCOUNT_CREDIT = "account_credit"  # credit moved to the joining (organisation) account


DEFAULT_REMINDERS_AFTER = [timedelta(days=7)]
DEFAULT_REMINDERS_BEFORE_EXPIRY = [timedelta(days=3)]


class InvitationInput(BaseModel):
    account_id: StrictInt
    invited_by: str  # email of the inviting owner/admin
    email: str
    first_name: str = ""
    last_name: str = ""
    user_type: UserType = UserType.BASIC
    group: str | None = None
    message: str | None = Field(default=None, max_length=2000)
    expires_in_days: int = Field(default=30, ge=1, le=365)
    # Reminder offsets: after the invitation, and before expiry (admin "expiring soon" too).
    remind_after: list[timedelta] = Field(default_factory=lambda: list(DEFAULT_REMINDERS_AFTER))
    remind_before_expiry: list[timedelta] = Field(
        default_factory=lambda: list(DEFAULT_REMINDERS_BEFORE_EXPIRY)
    )

    # Continue-as-new: the waiting state a run hands to the next one (None on the first
    # run), and the history length past which a waiting run continues as new.
    carried: Carried | None = None
    history_limit: int = Field(default=9000, ge=50)

    @field_validator("email", "invited_by")
    @classmethod
    def _normalise(cls, v: str) -> str:
        return normalise_email(v)


class BlockingItem(BaseModel):
    kind: Literal["other_user", "room", "other_business_account", "account_closed"]
    name: str  # the other user's email, the room's name, the other account's name
    action: str  # what the invitee must do, in plain words


class RefundQuote(BaseModel):
    amount_minor: StrictInt
    currency: str
    price_minor: StrictInt
    plan: str
    period_start: datetime
    period_end: datetime
    at: datetime  # the acceptance time the quote was computed for
    seconds_left: int
    period_seconds: int
    formula: str
    payment_method: str


# AcceptOutcome.error_code of "already_joining": the person is joining another account.
ALREADY_JOINING_ANOTHER_ACCOUNT = "already_joining_another_account"


class AcceptOutcome(BaseModel):
    """The answer to an acceptance. Only "accepted" means the join goes ahead."""

    outcome: Literal["blocked", "refund_choice_needed", "accepted", "already_joining",
                     "no_free_seat", "joined_elsewhere"]
    # 1009 when blocked; a string code when the join cannot be this invitation's:
    # "already_joining_another_account", "no_free_licensed_seat", "joined_another_account".
    error_code: int | str | None = None
    blocking: list[BlockingItem] = []
    quote: RefundQuote | None = None
    message: str
    joining_account_name: str | None = None  # the account their join belongs to instead
    # The invitation as the accept left it (set by the `accept` update; None from the
    # signal and from invitations of the first version): the link handler answers from it.
    progress: Progress | None = None


class AcceptRequest(BaseModel):
    """Optional: a client that already knows where the refund goes can say so at once.

    The link handler also passes what the signed link says (its issue time and email): the
    update's validator refuses a superseded, expired or mismatched link without a word in
    the history, so a click needs one round trip, not a look first."""

    refund_destination: RefundDestination | None = None
    link_issued_at: datetime | None = None
    link_email: str | None = None


class RefundChoice(BaseModel):
    destination: RefundDestination


class DeclineRequest(BaseModel):
    reason: str | None = None


class ResendRequest(BaseModel):
    expires_in_days: int | None = Field(default=None, ge=1, le=365)


class RevokeRequest(BaseModel):
    by: str | None = None
    reason: str | None = None


class RetryCompensation(BaseModel):
    """Operators: the cause of a failed undo step is fixed; run what is left."""

    by: str | None = None


class Payment(BaseModel):
    idempotency_key: str
    amount_minor: StrictInt
    currency: str
    destination: RefundDestination
    status: Literal["paid", "reversed", "none"]


class CategoryProgress(BaseModel):
    category: Category
    state: Literal["pending", "running", "staged", "live", "failed", "compensated"] = "pending"
    total: int = 0
    copied: int = 0
    bytes_copied: int = 0
    attempts: int = 0
    error: str | None = None


class SettingChange(BaseModel):
    key: str
    old: Any
    new: Any
    why: str  # e.g. "locked by account Acme" / "locked by group Sales"


class Progress(BaseModel):
    """Everything a script, the link handler or an operator needs to know."""

    invitation_id: str
    status: InvitationStatus
    account_id: int
    account_name: str = ""
    invited_by: str = ""
    email: str
    first_name: str = ""
    last_name: str = ""
    user_type: UserType
    group: str | None = None
    message: str | None = None
    invited_at: datetime
    expires_at: datetime
    accepted_at: datetime | None = None
    finished_at: datetime | None = None
    blocking: list[BlockingItem] = []
    quote: RefundQuote | None = None
    payment: Payment | None = None
    categories: dict[Category, CategoryProgress] = {}
    settings_changed: list[SettingChange] = []
    reports_left_behind: int = 0
    reminders_sent: int = 0
    failure_reason: str | None = None
    step: str = ""  # human-readable current step
    # Issue time of the link in the latest invitation mail: the only link that works (the
    # link handler compares it, to the second, with the time signed into the token).
    link_issued_at: datetime | None = None
    mail_problem: str | None = None  # why the latest invitation email is not delivered yet
    # What an operator should look at now: "finalising_stuck", "needs_attention",
    # "mail_undelivered" (also the InvitationAlert search attribute), and what is left undone.
    alert: str | None = None
    undo_left: list[str] = []


class InvitationResult(BaseModel):
    """What the workflow returns when it ends, whatever the ending."""

    status: InvitationStatus
    progress: Progress


class EmailKind(StrEnum):
    # to the invitee
    INVITATION = "invitation"
    REMINDER = "reminder"
    REFUND_RECEIPT = "refund_receipt"
    COMPLETION = "completion"
    EXPIRED = "expired"
    FAILED = "failed"  # the join did not go through; says what was undone
    REVOKED = "revoked"  # the invitation was withdrawn
    DECLINED = "declined"  # confirms the invitee's own decline
    # to the inviting admin
    ADMIN_ACCEPTED = "admin_accepted"
    ADMIN_BLOCKED = "admin_blocked"
    ADMIN_COMPLETED = "admin_completed"
    ADMIN_EXPIRING_SOON = "admin_expiring_soon"
    ADMIN_EXPIRED = "admin_expired"
    ADMIN_FAILED = "admin_failed"
    ADMIN_REVOKED = "admin_revoked"
    ADMIN_DECLINED = "admin_declined"
    ADMIN_JOINED_ELSEWHERE = "admin_joined_elsewhere"  # the invitee joined another account
    ADMIN_MAIL_UNDELIVERED = "admin_mail_undelivered"  # the invitation mail could not go out
    ADMIN_NEEDS_ATTENTION = "admin_needs_attention"  # an undo step failed for good


class EmailRequest(BaseModel):
    """One message. `message_key` is unique per message (e.g. "<invitation>:reminder:1"):
    sending the same key twice sends once."""

    message_key: str
    kind: EmailKind
    to: str
    invitation_id: str
    progress: Progress  # everything the templates need about the invitation
    issued_at: datetime | None = None  # issue time of the signed link, if the mail has one
    admin_email: str | None = None


class EmailBatch(BaseModel):
    """The messages of one moment (e.g. completion, refund receipt, admin notice), sent by
    one activity in order; each is idempotent by its own key."""

    messages: list[EmailRequest]


class EmailResult(BaseModel):
    message_key: str
    sent: bool  # False when this key had already been sent
    subject: str


class CategoryCount(BaseModel):
    category: Category
    items: int
    bytes: int = 0


class Preview(BaseModel):
    """What the invitee sees before accepting (computed from the platform's records)."""

    invitation_id: str
    account_name: str
    invited_by: str
    email: str
    user_type: UserType
    group: str | None
    counts: list[CategoryCount]
    settings_changes: list[SettingChange]
    reports_left_behind: int
    quote: RefundQuote | None
    blocking: list[BlockingItem]


class Carried(BaseModel):
    """What a waiting invitation carries into its next run (continue-as-new)."""

    progress: Progress
    issued_at: datetime
    fired: list[str] = []
    mails: dict[EmailKind, int] = {}


InvitationInput.model_rebuild()
AcceptOutcome.model_rebuild()
