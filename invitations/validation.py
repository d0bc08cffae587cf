"""Everything checked before an invitation starts: synchronous reads, one session, a few
queries per batch (not per row), so that a CSV of thousands validates in well under a
second. Nothing here writes.

Order per row: the inviter and the account (unknown, not an owner/admin, not paid), the
fields (email structure, user type, expiry, message), a duplicate earlier in the batch,
then, unless an invitation for that email is already open (reported "already pending",
not re-checked), membership, ownership of another business account, and licensed seats.
Two admins inviting at the same moment can both see the last seat free: the seat is
checked again when the member is linked (activities.platform, "SeatsExhausted").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import Session, col, select

from invitations.emails import email_problem
from invitations.errors import (
    AccountNotPaid,
    AdminOfAnotherAccount,
    AlreadyMember,
    DuplicateRow,
    InvalidRow,
    InvitationError,
    MalformedEmail,
    NotAnAdmin,
    SeatsExhausted,
    UnknownAccount,
)
from invitations.models import InviteRequest
from messages.payloads import FINAL_STATUS_VALUES, InvitationInput, UserType
from records.ids import invitation_id, normalise_email
from records.tables import Account, AccountKind, Invitation, Role, User
from rules.platform import is_admin_of

_CHUNK = 500  # rows per IN (...) query: far below every database's parameter limit


@dataclass(frozen=True)
class Inviter:
    account_id: int
    account_name: str
    user_id: int
    email: str
    name: str


@dataclass
class Checked:
    """A row after validation: `error` set, or `input` ready to start."""

    request: InviteRequest
    email: str
    error: InvitationError | None = None
    input: InvitationInput | None = None
    invitation_id: str | None = None
    inviter: Inviter | None = None
    open_status: str | None = None  # status of an invitation already open for this email


@dataclass
class _Seats:
    limit: int
    used: int  # licensed members + open licensed invitations + licensed rows so far


def check_account_admin(session: Session, account_id: int, by: str,
                        only_they_can: str) -> tuple[Account, User]:
    """The business account and its owner or admin `by`, or the errors every `--by` gets
    (inviting, API tokens, webhooks): UnknownAccount, NotAnAdmin."""
    account = session.get(Account, account_id)
    if account is None or account.kind != AccountKind.BUSINESS:
        raise UnknownAccount(f"there is no business account with id {account_id}")
    admin = is_admin_of(session, normalise_email(by), account_id)
    if admin is None or admin.id is None:
        raise NotAnAdmin(f"{by} is not an owner or admin of {account.name} (account "
                         f"{account_id}); only they can {only_they_can}")
    return account, admin


def check_inviter(session: Session, account_id: int, by: str) -> Inviter:
    account, admin = check_account_admin(session, account_id, by, "invite")
    assert admin.id is not None
    if not account.paid:
        raise AccountNotPaid(f"{account.name} (account {account_id}) is not on a paid plan; "
                             "upgrade it before inviting users into it")
    name = f"{admin.first_name} {admin.last_name}".strip() or admin.email
    return Inviter(account_id, account.name, admin.id, admin.email, name)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def _fields(req: InviteRequest, email: str, default_days: int) -> InvitationInput:
    problem = email_problem(email)
    if problem:
        raise MalformedEmail(f"{req.email!r} is not a valid email address: {problem}")
    kind = (req.user_type or UserType.BASIC.value).strip().lower()
    if kind not in {t.value for t in UserType}:
        raise InvalidRow(f"user type must be basic or licensed, not {req.user_type!r}",
                         field="user_type")
    days = default_days if req.expires_in_days is None else req.expires_in_days
    if not 1 <= days <= 365:
        raise InvalidRow(f"expiry must be 1 to 365 days, not {days}", field="expires_in_days")
    if req.message is not None and len(req.message) > 2000:
        raise InvalidRow("the message is longer than 2000 characters", field="message")
    try:
        return InvitationInput(
            account_id=req.account_id, invited_by=req.invited_by, email=email,
            first_name=req.first_name.strip(), last_name=req.last_name.strip(),
            user_type=UserType(kind), group=req.group or None, message=req.message or None,
            expires_in_days=days,
        )
    except ValidationError as exc:  # a limit of the payload model not checked above
        first = exc.errors()[0]
        raise InvalidRow(first["msg"], field=".".join(map(str, first["loc"]))) from exc


def validate(
    session: Session, requests: Sequence[InviteRequest], default_days: int,
) -> list[Checked]:
    checked = [Checked(req, normalise_email(req.email)) for req in requests]
    inviters: dict[tuple[int, str], Inviter | InvitationError] = {}
    for row in checked:
        key = (row.request.account_id, normalise_email(row.request.invited_by))
        if key not in inviters:
            try:
                inviters[key] = check_inviter(session, *key)
            except InvitationError as exc:
                inviters[key] = exc
        found = inviters[key]
        if isinstance(found, InvitationError):
            row.error = found
            continue
        row.inviter = found
        try:
            row.input = _fields(row.request, row.email, default_days)
        except InvitationError as exc:
            row.error = exc
            continue
        row.invitation_id = invitation_id(row.request.account_id, row.email)

    ok = [r for r in checked if r.error is None]
    users = _users_by_email(session, sorted({r.email for r in ok}))
    open_rows = _open_invitations(session, sorted({r.invitation_id for r in ok if r.invitation_id}))
    seats: dict[int, _Seats] = {}
    first_line: dict[str, InviteRequest] = {}
    for row in ok:
        assert row.input is not None and row.invitation_id is not None
        account_id = row.input.account_id
        earlier = first_line.setdefault(row.invitation_id, row.request)
        if earlier is not row.request:
            where = f"line {earlier.line}" if earlier.line else "earlier in this batch"
            row.error = DuplicateRow(f"{row.email} is already invited on {where}")
            continue
        if row.invitation_id in open_rows:
            row.open_status = open_rows[row.invitation_id]
            continue
        user = users.get(row.email)
        if user is not None:
            member, role, kind, name = user
            if member == account_id:
                row.error = AlreadyMember(f"{row.email} is already a member of this account")
                continue
            if role in (Role.OWNER, Role.ADMIN) and kind == AccountKind.BUSINESS:
                row.error = AdminOfAnotherAccount(
                    f"{row.email} is the {role.value} of another business account ({name}); "
                    "they must hand it over or leave it before they can be invited")
                continue
        if row.input.user_type == UserType.LICENSED:
            if account_id not in seats:
                seats[account_id] = _seat_usage(session, account_id)
            usage = seats[account_id]
            if usage.used >= usage.limit:
                row.error = SeatsExhausted(
                    f"no licensed seat left: {usage.limit} seats, {usage.used} taken by "
                    "licensed members, pending licensed invitations and earlier rows; "
                    "invite as basic or buy more seats")
                continue
            usage.used += 1
    return checked


def _users_by_email(session: Session, emails: Sequence[str]) -> dict[str, tuple]:
    found: dict[str, tuple] = {}
    for chunk in _chunks(emails):
        rows = session.exec(
            select(User, Account).join(Account, col(Account.id) == col(User.account_id))
            .where(func.lower(User.email).in_(chunk))
        ).all()
        for user, account in rows:
            found[normalise_email(user.email)] = (
                user.account_id, Role(user.role), AccountKind(account.kind), account.name)
    return found


def _open_invitations(session: Session, ids: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in _chunks(ids):
        rows = session.exec(
            select(Invitation.id, Invitation.status)
            .where(col(Invitation.id).in_(chunk),
                   col(Invitation.status).not_in(FINAL_STATUS_VALUES))
        ).all()
        found.update(dict(rows))
    return found


def _seat_usage(session: Session, account_id: int) -> _Seats:
    account = session.get(Account, account_id)
    assert account is not None
    members = session.exec(select(func.count()).select_from(User).where(
        User.account_id == account_id, User.user_type == UserType.LICENSED.value)).one()
    pending = session.exec(select(func.count()).select_from(Invitation).where(
        Invitation.account_id == account_id, Invitation.user_type == UserType.LICENSED.value,
        col(Invitation.status).not_in(FINAL_STATUS_VALUES))).one()
    return _Seats(limit=account.licensed_seats, used=int(members) + int(pending))
