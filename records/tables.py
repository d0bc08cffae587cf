"""The platform's system of record. Only activities, the seeder and the link handler's
read-only preview touch these `table=True` classes; workflows see `messages.payloads`.

Transferred data is *staged* before it goes live: a copy in the organisation's scope
carries `invitation_id`, the id of the row it came from (`source_id`) and `staged=True`.
The unique (invitation_id, source_id) pair is what makes every copy safe to run twice.
Money columns are integers in the currency's minor unit, validated strictly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Strict
from sqlalchemy import JSON, CheckConstraint, Column, Index, UniqueConstraint, event, func
from sqlmodel import Field, SQLModel

from records.ids import normalise_email
from records.types import MinorUnitsType, UTCDateTime

# An int that refuses floats, Decimals and numeric strings when validated; the column type
# (MinorUnitsType) refuses them when written: money never reaches the database as 12.5.
MinorUnits = Annotated[int, Strict()]


def utcnow() -> datetime:
    return datetime.now(UTC)


class AccountKind(StrEnum):
    INDIVIDUAL = "individual"
    BUSINESS = "business"


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


class Account(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str
    kind: AccountKind
    plan: str = "basic"  # "basic" (free), "pro", "business"
    paid: bool = False
    licensed_seats: int = Field(default=0, ge=0)
    currency: str = Field(default="USD", min_length=3, max_length=3)
    credit_balance_minor: MinorUnits = Field(default=0, sa_type=MinorUnitsType)
    status: str = "active"  # active | closed
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class User(SQLModel, table=True):
    """A person's identity. `account_id` is the account they currently belong to. Emails
    are unique whatever their case (rows written before normalisation may be mixed-case:
    every lookup compares lower(email))."""

    __table_args__ = (Index("uq_user_email_lower", func.lower(Column("email")), unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, index=True)  # stored normalised (lower-case, trimmed)
    account_id: int = Field(foreign_key="account.id", index=True)
    role: Role = Role.MEMBER
    user_type: str = "basic"  # basic | licensed
    group_name: str | None = None
    first_name: str = ""
    last_name: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Subscription(SQLModel, table=True):
    __table_args__ = (CheckConstraint("price_minor >= 0", name="ck_subscription_price"),)
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    plan: str
    price_minor: MinorUnits = Field(sa_type=MinorUnitsType)
    currency: str = Field(min_length=3, max_length=3)
    period_start: datetime = Field(sa_type=UTCDateTime)
    period_end: datetime = Field(sa_type=UTCDateTime)
    status: str = "active"  # active | cancelled | ended
    payment_method: str = "card"
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Room(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    name: str


class Staged(SQLModel):
    """Columns every transferable row carries (see module docstring)."""

    account_id: int = Field(foreign_key="account.id", index=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    invitation_id: str | None = Field(default=None, index=True)
    source_id: int | None = None
    staged: bool = False


def _staging_unique(table: str) -> tuple[Any, ...]:
    """The copy key, plus the keyset index a transfer walks the source rows with (equality
    on the first three columns, a range on id: no scan of rows already copied)."""
    return (UniqueConstraint("invitation_id", "source_id", name=f"uq_{table}_staged_copy"),
            Index(f"ix_{table}_source_keyset", "user_id", "account_id", "staged", "id"))


class Profile(Staged, table=True):
    __table_args__ = _staging_unique("profile")
    id: int | None = Field(default=None, primary_key=True)
    display_name: str
    picture_url: str | None = None
    timezone: str = "UTC"
    language: str = "en-US"


class Meeting(Staged, table=True):
    """Scheduled meetings and webinars (`kind`)."""

    __table_args__ = _staging_unique("meeting")
    id: int | None = Field(default=None, primary_key=True)
    kind: str = "meeting"  # meeting | webinar
    topic: str
    start_time: datetime = Field(sa_type=UTCDateTime)
    duration_minutes: int = 30


class Recording(Staged, table=True):
    """A cloud recording; the bytes live at settings.recordings_dir / path."""

    __table_args__ = _staging_unique("recording")
    id: int | None = Field(default=None, primary_key=True)
    topic: str
    path: str
    size_bytes: int = Field(ge=0)
    sha256: str = Field(min_length=64, max_length=64)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ChatMessage(Staged, table=True):
    __table_args__ = _staging_unique("chatmessage")
    id: int | None = Field(default=None, primary_key=True)
    channel: str
    body: str
    sent_at: datetime = Field(sa_type=UTCDateTime)


class Contact(Staged, table=True):
    __table_args__ = _staging_unique("contact")
    id: int | None = Field(default=None, primary_key=True)
    name: str
    email: str


class UserSetting(Staged, table=True):
    __table_args__ = _staging_unique("usersetting")
    id: int | None = Field(default=None, primary_key=True)
    key: str
    value: Any = Field(sa_column=Column(JSON, nullable=False))


class AccountSetting(SQLModel, table=True):
    """An account-wide (group_name None) or group setting; `locked` forces members to it."""

    __table_args__ = (UniqueConstraint("account_id", "group_name", "key", name="uq_acct_setting"),)
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    group_name: str | None = None
    key: str
    value: Any = Field(sa_column=Column(JSON, nullable=False))
    locked: bool = False


class Report(SQLModel, table=True):
    """Usage reports. They never transfer: the invitee downloads them before accepting."""

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    kind: str = "meeting"  # meeting | webinar | usage
    title: str
    held_on: datetime = Field(sa_type=UTCDateTime)
    participants: int = 0
    minutes: int = 0


class Invitation(SQLModel, table=True):
    """The admin-facing record of an invitation; the workflow (same id) is the truth of
    its progress and keeps `status` here current."""

    id: str = Field(primary_key=True)  # == the workflow id
    account_id: int = Field(foreign_key="account.id", index=True)
    invited_by_user_id: int = Field(foreign_key="user.id")
    email: str = Field(index=True)
    first_name: str = ""
    last_name: str = ""
    user_type: str = "basic"
    group_name: str | None = None
    message: str | None = None
    status: str = Field(default="pending", index=True)
    invited_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    source_account_id: int | None = None  # the invitee's individual account, once linked


class RefundLedger(SQLModel, table=True):
    """Every refund movement. `idempotency_key` is derived from the invitation, so a
    retried payment finds its first attempt instead of paying twice."""

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, index=True)
    invitation_id: str = Field(index=True)
    subscription_id: int = Field(foreign_key="subscription.id")
    kind: str  # refund | reversal
    amount_minor: MinorUnits = Field(sa_type=MinorUnitsType)  # a refund > 0, its reversal < 0
    currency: str = Field(min_length=3, max_length=3)
    destination: str  # original_payment_method | account_credit
    destination_account_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AuditEvent(SQLModel, table=True):
    # An invitation's event is written once per (kind, time): records.changes.insert_event_once
    __table_args__ = (Index("uq_auditevent_once", "invitation_id", "kind", "at", unique=True),)
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True, sa_type=UTCDateTime)
    invitation_id: str | None = Field(default=None, index=True)
    account_id: int | None = None
    kind: str
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class SentEmail(SQLModel, table=True):
    """One row per message: `message_key` makes sending idempotent."""

    id: int | None = Field(default=None, primary_key=True)
    message_key: str = Field(unique=True, index=True)
    invitation_id: str | None = Field(default=None, index=True)
    kind: str
    to: str
    subject: str
    sent_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


@event.listens_for(User, "before_insert")
@event.listens_for(User, "before_update")
def _normalise_user_email(_mapper: Any, _conn: Any, user: User) -> None:
    """Emails are one identity whatever their case: stored normalised."""
    user.email = normalise_email(user.email)


class JoinClaimState(StrEnum):
    JOINING = "joining"  # an acceptance passed its checks: this invitation may link them
    LINKED = "linked"  # linked into the organisation, data moving
    JOINED = "joined"  # the join completed


class JoinClaim(SQLModel, table=True):
    """One person joins one account at a time: the row keyed by the person's email is
    taken by the invitation whose acceptance passed its checks, by an atomic insert, and
    released (deleted) when that invitation ends without a join. A second company's
    acceptance finds it held and is refused at once."""

    email: str = Field(primary_key=True)  # normalised
    invitation_id: str = Field(index=True)
    org_account_id: int = Field(foreign_key="account.id", index=True)
    source_account_id: int | None = None
    user_type: str = "basic"  # a licensed claim holds one of the organisation's seats
    state: str = JoinClaimState.JOINING.value  # a JoinClaimState
    claimed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TransferState(SQLModel, table=True):
    """Who holds the transfer of one category for one invitation, and how far it got.

    An attempt takes the transfer by bumping `epoch`; each of its batches commits only if
    the row still carries that epoch and state "running" (checked by the UPDATE that moves
    `checkpoint` in the batch's own transaction). `undo_transfer` bumps the epoch too, so a
    stale attempt can neither commit after an undo nor resurrect what it removed.

    state: running (copying, or copied and waiting for finalise) | undone (compensated) |
    live (finalise committed: the staged copies count as live) | released (release_source
    flipped the copies and removed the source rows).
    """

    __table_args__ = (UniqueConstraint("invitation_id", "category", name="uq_transferstate"),)
    id: int | None = Field(default=None, primary_key=True)
    invitation_id: str
    category: str
    epoch: int = 0
    state: str = "running"
    checkpoint: int = 0  # last source id whose batch committed
    rows_copied: int = 0  # rows inserted by committed batches (all attempts of this round)
    batches: int = 0  # committed batches (all attempts of this round)
    bytes_copied: int = 0
    released_upto: int = 0  # release_source's checkpoint (source ids)
    # server time the undo was scheduled (see transfers)
    undone_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# Tables kept by other packages, registered on the same metadata (init_db, migrations/).
from domains import sweep_tables as _sweep_tables  # noqa: E402,F401  (issue #14: sweeps)
from domains import tables as _domain_tables  # noqa: E402,F401
from records import api_tables  # noqa: E402,F401  (the REST API's tables, on the same metadata)
from webhooks import tables as _webhook_tables  # noqa: E402,F401
