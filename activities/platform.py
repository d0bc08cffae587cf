"""Activities that change the platform's records around one invitation: the admin-facing
Invitation row and its audit trail, the acceptance check, membership of the organisation,
and the refund (its money in activities/refunds.py). (The final switch that makes the
transferred data live is activities.finalising.)

Each method is safe to run twice: writes are keyed by the invitation (audit events by
(invitation, kind, time), the refund by its idempotency key, the link by its "linked"
event), so a retried activity finds its first attempt instead of doing the work again.
Database work is synchronous code run in a thread, off the worker's event loop: on the
hot path (register, check, link) Core statements built once (records.db.prepared) on one
connection per transaction, which costs a fraction of an ORM Session's CPU.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Row, Table, bindparam, func, select, update
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import refunds
from activities.fencing import in_thread
from config import Settings
from messages.activity_io import (
    ERR_CLAIM_LOST,
    ERR_INVITEE_UNAVAILABLE,
    ERR_SEATS_EXHAUSTED,
    AcceptanceCheck,
    AcceptanceFacts,
    LinkMember,
    Membership,
    PayRefund,
    RegisteredInvitation,
    RegisterInvitation,
    ReverseRefund,
    StatusChange,
    UnlinkInvitation,
)
from messages.payloads import (
    Payment,
)
from records.changes import insert_event_once, record_change, upsert_invitation
from records.claims import (
    connection_of,
    held_elsewhere,
    lock_account,
    mark_linked,
    seats_taken,
    take_claim,
)
from records.db import as_utc, prepared, write_session, write_transaction
from records.ids import normalise_email
from records.tables import (
    Account,
    AuditEvent,
    Invitation,
    Role,
    User,
    utcnow,
)
from rules.platform import (
    CATEGORY_TABLES,
    blocking_items,
    find_invitee,
    find_user,
    refund_quote,
    reports_left_behind_total,
    settings_changes,
)
from webhooks import outbox

EVENTS: Table = AuditEvent.__table__  # type: ignore[attr-defined]
INVITATIONS: Table = Invitation.__table__  # type: ignore[attr-defined]
ACCOUNTS: Table = Account.__table__  # type: ignore[attr-defined]
USERS: Table = User.__table__  # type: ignore[attr-defined]

# Business failures of this module not (yet) in messages.activity_io.
ERR_INVALID_INVITATION = "InvalidInvitation"  # unknown account, or inviter not owner/admin


class _View(NamedTuple):
    """The invitee as a member of the individual account they came from (what
    rules.platform.source_view stands for), for the read rules."""

    id: int
    account_id: int


def add_event_once(
    session: Session | Connection, *, invitation_id: str, kind: str, at: datetime,
    account_id: int | None, detail: dict[str, Any],
) -> bool:
    """The audit event once (records.changes.insert_event_once), and its webhooks."""
    conn = connection_of(session)
    if not insert_event_once(conn, invitation_id=invitation_id, kind=kind, at=at,
                             account_id=account_id, detail=detail):
        return False
    # Its webhooks (e.g. "invited" -> created) in the same transaction: webhooks/outbox.py.
    outbox.enqueue_event(conn, invitation_id=invitation_id, account_id=account_id, kind=kind,
                         at=at, detail=detail)
    return True


def _last_link_event(session: Session | Connection, invitation_id: str) -> Row[Any] | None:
    """The invitation's last "linked" or "unlinked" event (its kind and detail)."""
    conn = connection_of(session)
    return conn.execute(prepared(conn, "last_link_event", lambda: select(
        EVENTS.c.kind, EVENTS.c.detail).where(
        EVENTS.c.invitation_id == bindparam("invitation"),
        EVENTS.c.kind.in_(("linked", "unlinked")),
    ).order_by(EVENTS.c.id.desc()).limit(1)), {"invitation": invitation_id}).first()


def _tables() -> dict[str, Table]:
    """The transferable tables (Core), by category."""
    return {c.value: m.__table__ for c, m in CATEGORY_TABLES.items()}


def _user_has_data(session: Session, user_id: int) -> bool:
    for table in _tables().values():
        if session.execute(select(table.c.id).where(table.c.user_id == user_id)).first():
            return True
    return False


class PlatformActivities:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

    # -- invitation record -------------------------------------------------------------

    @activity.defn(name="register_invitation")
    async def register_invitation(self, req: RegisterInvitation) -> RegisteredInvitation:
        return await asyncio.to_thread(self._register_invitation, req)

    def _register_invitation(self, req: RegisterInvitation) -> RegisteredInvitation:
        inp = req.input
        with self.engine.connect() as conn:  # checks first: a read, no write lock
            # The account with the inviter (rules.platform.is_admin_of), one statement.
            found = conn.execute(prepared(conn, "register_checks", lambda: select(
                ACCOUNTS.c.name, USERS.c.id, USERS.c.account_id, USERS.c.role,
                USERS.c.first_name, USERS.c.last_name, USERS.c.email,
            ).select_from(ACCOUNTS.outerjoin(
                USERS, func.lower(USERS.c.email) == bindparam("email"))).where(
                ACCOUNTS.c.id == bindparam("account")).limit(1)),
                {"email": normalise_email(inp.invited_by), "account": inp.account_id}).first()
        if found is None:
            raise ApplicationError(f"account {inp.account_id} does not exist",
                                   type=ERR_INVALID_INVITATION, non_retryable=True)
        if found.id is None or found.account_id != inp.account_id \
                or found.role not in (Role.OWNER, Role.ADMIN):
            raise ApplicationError(
                f"{inp.invited_by} is not an owner or admin of {found.name}",
                type=ERR_INVALID_INVITATION, non_retryable=True)
        name = f"{found.first_name} {found.last_name}".strip() or found.email
        registered = RegisteredInvitation(account_name=found.name, invited_by_name=name)
        with write_transaction(self.engine) as conn:
            upsert_invitation(conn, req.invitation_id, inp, invited_by_user_id=found.id,
                              invited_at=req.invited_at, expires_at=req.expires_at)
            add_event_once(conn, invitation_id=req.invitation_id, kind="invited",
                           at=req.invited_at, account_id=inp.account_id,
                           detail={"email": inp.email, "invited_by": inp.invited_by,
                                   "user_type": inp.user_type.value, "group": inp.group})
        return registered

    @activity.defn(name="record_status")
    async def record_status(self, change: StatusChange) -> None:
        await asyncio.to_thread(self._record_status, change)

    def _record_status(self, change: StatusChange) -> None:
        with write_transaction(self.engine) as conn:
            record_change(conn, change)

    # -- acceptance ---------------------------------------------------------------------

    @activity.defn(name="check_acceptance")
    async def check_acceptance(self, check: AcceptanceCheck) -> AcceptanceFacts:
        return await asyncio.to_thread(self._check_acceptance, check)

    def _check_acceptance(self, check: AcceptanceCheck) -> AcceptanceFacts:
        email = normalise_email(check.email)
        # What the invitee is told is read first, in a read transaction (no write lock,
        # no turn among this process's writers)...
        with self.engine.connect() as conn:
            elsewhere = held_elsewhere(conn, email=email, invitation_id=check.invitation_id)
            if elsewhere is not None:
                return AcceptanceFacts(blocking=[], quote=None, settings_changes=[],
                                       reports_left_behind=0, user_id=None,
                                       source_account_id=None, refusal=elsewhere)
            user, account = find_invitee(conn, email)
            member = user is not None and user.account_id == check.account_id
            # (A member already is blocked by nothing: blocking_items says [] at once.)
            blocking = [] if user is None or member else blocking_items(
                conn, user, check.account_id, account=account)
            view: Any = user
            source = user.account_id if user is not None else None
            if user is not None and user.id is not None and member:
                # Already in the organisation: linked by this invitation (a re-check after
                # the link) reads the individual account it came from; otherwise nothing
                # moves.
                event = _last_link_event(conn, check.invitation_id)
                linked_from = event.detail.get("source_account_id") if (
                    event is not None and event.kind == "linked") else None
                if linked_from is None:
                    return AcceptanceFacts(blocking=[], quote=None, settings_changes=[],
                                           reports_left_behind=0, user_id=user.id,
                                           source_account_id=None)
                view, source = _View(user.id, linked_from), linked_from
            if view is None:
                facts = AcceptanceFacts(blocking=[], quote=None, settings_changes=[],
                                        reports_left_behind=0, user_id=None,
                                        source_account_id=None)
            else:
                assert user is not None
                facts = AcceptanceFacts(
                    blocking=blocking,
                    quote=refund_quote(conn, view, as_utc(check.at)),
                    settings_changes=settings_changes(conn, view, check.account_id,
                                                      check.group),
                    reports_left_behind=reports_left_behind_total(conn, view.id,
                                                                  view.account_id),
                    user_id=user.id,
                    source_account_id=source,
                )
        if blocking:
            return facts  # blocked: the invitee fixes it and accepts again; nothing claimed
        # ...then the join claim, the only write, in its own short transaction. take_claim
        # decides from what it reads under the lock: a claim another invitation took since
        # the read above is a refusal, as it would have been then.
        with write_transaction(self.engine) as conn:
            refusal = take_claim(conn, email=email, invitation_id=check.invitation_id,
                                 org_account_id=check.account_id, source_account_id=source,
                                 user_type=check.user_type.value)
        return facts if refusal is None else facts.model_copy(update={"refusal": refusal})

    # -- membership ---------------------------------------------------------------------

    @activity.defn(name="link_member")
    async def link_member(self, req: LinkMember) -> Membership:
        # A cancel is answered once the thread's transaction committed or rolled back
        # (in_thread): the unlink that follows never runs beside it.
        return await in_thread(self._link_member, req)

    def _link_member(self, req: LinkMember) -> Membership:
        with write_transaction(self.engine) as conn:
            # The organisation's row is locked (SELECT ... FOR UPDATE on PostgreSQL; the
            # IMMEDIATE transaction on SQLite) so that the seat count below cannot change
            # before this transaction commits.
            org = lock_account(conn, req.account_id)
            if org is None:
                raise ApplicationError(f"account {req.account_id} does not exist",
                                       type=ERR_INVALID_INVITATION, non_retryable=True)
            if req.record is not None:  # idempotent: a retry writes nothing twice
                record_change(conn, req.record)
            user = find_user(conn, req.email)
            if user is not None and user.id is not None and user.account_id == org.id:
                event = _last_link_event(conn, req.invitation_id)
                if event is not None and event.kind == "linked":
                    return Membership.model_validate(event.detail)
                # A member before this invitation: nothing to link, nothing to restore.
                return Membership(
                    invitation_id=req.invitation_id, user_id=user.id, account_id=org.id,
                    source_account_id=org.id, previous_role=user.role.value,
                    previous_user_type=user.user_type, previous_group=user.group_name)
            if user is not None:
                blocking = blocking_items(conn, user, req.account_id)
                if blocking:  # changed since the acceptance check
                    raise ApplicationError(
                        f"{req.email} can no longer join: "
                        + "; ".join(f"{b.kind} {b.name}" for b in blocking),
                        type=ERR_INVITEE_UNAVAILABLE, non_retryable=True)
            if not mark_linked(conn, email=req.email, invitation_id=req.invitation_id):
                raise ApplicationError(
                    f"{req.email}'s join is not held by this invitation (another account's "
                    "invitation holds it, or it was released)",
                    type=ERR_CLAIM_LOST, non_retryable=True)
            if req.user_type.value == "licensed":
                used = seats_taken(conn, org.id, except_email=req.email)
                if used >= org.licensed_seats:
                    raise ApplicationError(
                        f"{org.name} has no free licensed seat ({used} of "
                        f"{org.licensed_seats} used)",
                        type=ERR_SEATS_EXHAUSTED, non_retryable=True)
            previous: dict[str, Any]
            if user is None:
                user_id = conn.execute(prepared(conn, "link_new_user", lambda: USERS.insert()
                                                .returning(USERS.c.id)), {
                    "email": normalise_email(req.email), "account_id": org.id,
                    "role": Role.MEMBER, "user_type": req.user_type.value,
                    "group_name": req.group, "first_name": req.first_name,
                    "last_name": req.last_name}).scalar_one()
                previous = {"source_account_id": None, "previous_role": None,
                            "previous_user_type": None, "previous_group": None}
            else:
                user_id = user.id
                previous = {"source_account_id": user.account_id,
                            "previous_role": user.role.value,
                            "previous_user_type": user.user_type,
                            "previous_group": user.group_name}
                # Conditional on the account read above: a concurrent move fails it.
                moved = conn.execute(prepared(conn, "link_move_user", lambda: update(
                    USERS).where(USERS.c.id == bindparam("user"),
                                 USERS.c.account_id == bindparam("was"),
                                 ).values(account_id=bindparam("org"), role=Role.MEMBER,
                                          user_type=bindparam("new_type"),
                                          group_name=bindparam("new_group"))),
                    {"user": user.id, "was": user.account_id, "org": org.id,
                     "new_type": req.user_type.value, "new_group": req.group})
                if moved.rowcount != 1:
                    raise ApplicationError(f"{req.email} moved to another account meanwhile",
                                           type=ERR_INVITEE_UNAVAILABLE, non_retryable=True)
            created = previous["source_account_id"] is None
            membership = Membership(invitation_id=req.invitation_id, user_id=user_id,
                                    account_id=org.id, created_user=created, **previous)
            conn.execute(prepared(conn, "link_event", lambda: EVENTS.insert()), {
                "invitation_id": req.invitation_id, "account_id": org.id, "kind": "linked",
                "at": utcnow(), "detail": membership.model_dump(mode="json")})
            return membership

    @activity.defn(name="unlink_member")
    async def unlink_member(self, m: Membership) -> None:
        await asyncio.to_thread(self._unlink_member, m)

    @activity.defn(name="unlink_invitation")
    async def unlink_invitation(self, req: UnlinkInvitation) -> None:
        """Undo the link this invitation made, read from its "linked" audit event, so a
        link whose answer never reached the workflow is undone too."""
        await asyncio.to_thread(self._unlink_invitation, req)

    def _unlink_invitation(self, req: UnlinkInvitation) -> None:
        with Session(self.engine) as session:
            event = _last_link_event(session, req.invitation_id)
        if event is not None and event.kind == "linked":
            self._unlink_member(Membership.model_validate(event.detail))

    def _unlink_member(self, m: Membership) -> None:
        with write_session(self.engine) as session:
            event = _last_link_event(session, m.invitation_id)
            if event is None or event.kind != "linked":
                return  # never linked by this invitation, or already unlinked
            user = session.get(User, m.user_id, with_for_update=True)
            detail: dict[str, Any] = {"user_id": m.user_id}
            if user is not None and user.account_id == m.account_id:
                if m.created_user:
                    if _user_has_data(session, m.user_id):
                        detail["kept_user"] = True  # has data of its own: not ours to delete
                    else:
                        session.delete(user)
                elif m.source_account_id is not None and m.source_account_id != m.account_id:
                    user.account_id = m.source_account_id
                    user.role = Role(m.previous_role or Role.OWNER.value)
                    user.user_type = m.previous_user_type or "basic"
                    user.group_name = m.previous_group
                    session.add(user)
            session.add(AuditEvent(invitation_id=m.invitation_id, account_id=m.account_id,
                                   kind="unlinked", detail=detail))
            session.commit()

    # -- money: the refund and its reversal (activities/refunds.py) ---------------------

    @activity.defn(name="pay_refund")
    async def pay_refund(self, req: PayRefund) -> Payment:
        return await in_thread(self._pay_refund, req)  # as link_member: then the reversal

    def _pay_refund(self, req: PayRefund) -> Payment:
        return refunds.pay_refund(self.engine, req)

    @activity.defn(name="reverse_refund")
    async def reverse_refund(self, req: ReverseRefund) -> Payment:
        """Undo pay_refund. amount_minor is the amount reversed (positive); the ledger
        row holds it negative."""
        return await asyncio.to_thread(self._reverse_refund, req)

    def _reverse_refund(self, req: ReverseRefund) -> Payment:
        return refunds.reverse_refund(self.engine, req)
