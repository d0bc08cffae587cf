"""Per-person state of a domain sweep (workflows/domain.py): one row per (account, domain,
person), written only by the sweep's activities (activities/domain_sweep.py) and by the
email change (domains/sweep.py `change_email_rows`).

    found --> notified                     (notify: the mail went out, exactly once)
    found --> invited --> (invitation ends: see the Invitation row)
                                           (already invited by another path: invited with
                                            that invitation's id and a reason; not started
                                            by the sweep, so not revoked by its cancel)
    found --> skipped                      (refused at start)
    invited|found --> email_changed        (moved to an email off the domain)

`sign_ins` counts the sign-ins of a consolidating person since they were invited;
`last_sign_in_key` makes counting one sign-in idempotent (a retried activity finds its key).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from records.types import UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


class DomainSweepPerson(SQLModel, table=True):
    __tablename__ = "domain_sweep_person"
    __table_args__ = (
        UniqueConstraint("account_id", "domain", "email", name="uq_domain_sweep_person"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    domain: str = Field(index=True)
    email: str = Field(index=True)  # normalised, as found (the User row may change later)
    user_id: int = Field(foreign_key="user.id")
    sweep_id: str  # the DomainWorkflow's id
    mode: str  # the SweepMode of the sweep that found them
    state: str = "found"  # a PersonState
    invitation_id: str | None = Field(default=None, index=True)
    # The sweep run that started invitation_id (the DomainWorkflow's first execution run
    # id: the same across continue-as-new); None when it did not start it (already
    # invited by another path). A cancel with --revoke-started revokes only its own.
    sweep_run_id: str | None = None
    sign_ins: int = 0
    last_sign_in_key: str | None = None
    reason: str | None = None  # why skipped / why the email changed
    new_email: str | None = None
    found_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
