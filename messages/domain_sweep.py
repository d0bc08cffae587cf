"""Payloads of the domain sweep (workflows/domain.py): its input and what it carries across
continue-as-new, the progress operators read, and one input and one result model per
activity and per message. Plain pydantic models: only activities touch the tables."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, Field, StrictInt

from messages.payloads import UserType


class SweepMode(StrEnum):
    NOTIFY = "notify"  # one email each: they may join, or change their email
    INVITE = "invite"  # one InvitationWorkflow each
    CONSOLIDATE = "consolidate"  # invite, and count their sign-ins: N more, then choose


class SweepStatus(StrEnum):
    SWEEPING = "sweeping"  # finding people, page by page
    PAUSED = "paused"
    WATCHING = "watching"  # everyone found; waiting for the invitations to end
    COMPLETED = "completed"  # everyone notified, or every invitation ended
    CANCELLED = "cancelled"
    REFUSED = "refused"  # the domain is not verified by the account, or not an admin

    @property
    def is_final(self) -> bool:
        return self in (SweepStatus.COMPLETED, SweepStatus.CANCELLED, SweepStatus.REFUSED)


class PersonState(StrEnum):
    FOUND = "found"
    NOTIFIED = "notified"
    INVITED = "invited"
    SKIPPED = "skipped"  # handled by an earlier sweep, or refused at start
    EMAIL_CHANGED = "email_changed"  # moved to an email off the domain: out of the sweep


class SweepCounts(BaseModel):
    found: int = 0
    notified: int = 0
    invited: int = 0
    skipped: int = 0
    # From the invitations' records (tally): where the invited people stand now.
    open: int = 0
    blocked: int = 0
    completed: int = 0
    failed: int = 0
    ended: int = 0  # declined, revoked, expired, cancelled, joined elsewhere
    email_changed: int = 0
    must_choose: int = 0  # consolidation: signed in past the grace (N + 1), not joined yet


class SweepCarried(BaseModel):
    """What a continued run needs from the one before it."""

    cursor: int = 0  # the last user id handled (keyset)
    counts: SweepCounts = SweepCounts()
    status: SweepStatus = SweepStatus.SWEEPING
    paused: bool = False
    account_name: str = ""
    runs: int = 1


class SweepInput(BaseModel):
    account_id: StrictInt
    domain: str  # normalised (domains.names.normalise_domain)
    started_by: str  # the owner/admin: the inviter of every invitation
    mode: SweepMode = SweepMode.NOTIFY
    grace_sign_ins: int = Field(default=3, ge=0, le=100)
    user_type: UserType = UserType.BASIC
    message: str | None = Field(default=None, max_length=2000)
    expires_in_days: int = Field(default=30, ge=1, le=365)
    window: int = Field(default=50, ge=1, le=1000)  # children starts in flight
    page_size: int = Field(default=100, ge=1, le=1000)
    history_limit: int = Field(default=2000, ge=20)  # continue as new past this length
    tally_every: timedelta = timedelta(hours=1)  # how often the watching phase re-counts
    child_task_queue: str | None = None  # the invitations' queue (default: the sweep's)
    carried: SweepCarried | None = None


class SweepProgress(BaseModel):
    sweep_id: str
    account_id: int
    account_name: str = ""
    domain: str
    mode: SweepMode
    started_by: str
    status: SweepStatus
    paused: bool = False
    counts: SweepCounts
    cursor: int = 0
    runs: int = 1  # runs of this sweep so far (continue-as-new)
    grace_sign_ins: int
    reason: str | None = None  # why it was refused or cancelled


class SweepResult(BaseModel):
    status: SweepStatus
    progress: SweepProgress


# --- activities -------------------------------------------------------------------------


class CheckSweep(BaseModel):
    account_id: int
    domain: str
    started_by: str


class SweepChecked(BaseModel):
    ok: bool
    reason: str | None = None
    account_name: str = ""


class FindPeople(BaseModel):
    account_id: int
    domain: str
    sweep_id: str
    mode: SweepMode
    after_user_id: int
    limit: int


class Person(BaseModel):
    user_id: int
    email: str
    first_name: str = ""
    last_name: str = ""
    state: PersonState  # as recorded before this page (FOUND when new)
    invitation_id: str | None = None


class PeoplePage(BaseModel):
    people: list[Person]
    next_cursor: int  # the last user id of the page
    last: bool  # fewer than `limit`: nothing after


class NotifyPeople(BaseModel):
    account_id: int
    account_name: str
    domain: str
    started_by: str
    message: str | None = None
    people: list[Person]


class Marked(BaseModel):
    """People whose state an activity recorded (or found recorded already)."""

    done: int = 0
    already: int = 0


class InvitedPerson(BaseModel):
    email: str
    invitation_id: str | None  # None: not started (refused)
    reason: str | None = None
    # Their invitation to the account was open already (started by hand, by SSO...): the
    # sweep records it (invitation_id, state invited) but did not start it, so it counts it
    # as skipped and a cancel with --revoke-started leaves it open.
    already: bool = False


class RecordInvited(BaseModel):
    account_id: int
    domain: str
    sweep_run_id: str  # the sweep's first execution run id: who started these invitations
    people: list[InvitedPerson]


class Tally(BaseModel):
    account_id: int
    domain: str
    grace_sign_ins: int


class Tallied(BaseModel):
    open: int = 0
    blocked: int = 0
    completed: int = 0
    failed: int = 0
    ended: int = 0
    email_changed: int = 0
    must_choose: int = 0


class RevokeStarted(BaseModel):
    account_id: int
    domain: str
    sweep_run_id: str  # only what this sweep started (not earlier sweeps of the domain)
    by: str
    reason: str


class Revoked(BaseModel):
    revoked: int = 0
    left: int = 0  # already ended, or moving data (a revoke is refused once data moves)


# --- messages ---------------------------------------------------------------------------


class SignIn(BaseModel):
    email: str


class SignInAnswer(BaseModel):
    email: str
    in_consolidation: bool  # a consolidation invitation of this person is open
    sign_ins: int = 0
    grace_left: int | None = None
    must_choose: bool = False
    invitation_id: str | None = None
    message: str


class RecordSignIn(BaseModel):
    account_id: int
    domain: str
    email: str
    key: str  # the update's id: a retried activity counts the sign-in once
    grace_sign_ins: int
    consolidating: bool


class CancelSweep(BaseModel):
    revoke_started: bool = False
    by: str | None = None
    reason: str | None = None


class PauseSweep(BaseModel):
    by: str | None = None
