"""One person joins one account: the join claim (records.tables.JoinClaim) and the seat it
holds, as atomic operations on the system of record.

An acceptance that passed its blocking checks takes the claim keyed by the invitee's email
with an insert that the primary key lets only one invitation win; a licensed claim also
reserves a seat, counted under the organisation's row lock. The claim moves joining ->
linked (link_member) -> joined (completed), and is released when its invitation ends any
other way. Every function runs inside the caller's write transaction
(`records.db.write_session`): IMMEDIATE on SQLite, row locks on PostgreSQL.
"""

from __future__ import annotations

from typing import Any, overload

from sqlalchemy import Connection, Row, Table, bindparam, delete, func, select, update
from sqlalchemy.exc import NoResultFound
from sqlmodel import Session, col
from sqlmodel import select as sm_select

from messages.activity_io import ClaimRefusal
from messages.payloads import FINAL_STATUS_VALUES
from records.db import insert_for, prepared
from records.tables import Account, Invitation, JoinClaim, JoinClaimState, User

ACTIVE = (JoinClaimState.JOINING, JoinClaimState.LINKED)

# Core statements, built once (records.db.prepared): these run at every acceptance and link.
ACCOUNTS: Table = Account.__table__  # type: ignore[attr-defined]
USERS: Table = User.__table__  # type: ignore[attr-defined]
CLAIMS: Table = JoinClaim.__table__  # type: ignore[attr-defined]
INVITATIONS: Table = Invitation.__table__  # type: ignore[attr-defined]
_ACTIVE = [s.value for s in ACTIVE]


def connection_of(session: Session | Connection) -> Connection:
    """The connection of a Session's transaction (flushed first, as its own queries would
    autoflush), or the Connection itself."""
    if isinstance(session, Connection):
        return session
    if session.autoflush:
        session.flush()
    return session.connection()


@overload
def lock_account(session: Session, account_id: int) -> Account | None: ...
@overload
def lock_account(session: Connection, account_id: int) -> Row[Any] | None: ...
def lock_account(session: Session | Connection, account_id: int) -> Account | Row[Any] | None:
    """The account row, locked until the transaction ends where the database has row
    locks (PostgreSQL); SQLite's IMMEDIATE transaction already excludes other writers.
    Given a Connection: a Core row (id, name, licensed_seats)."""
    if isinstance(session, Session):
        return session.exec(sm_select(Account).where(
            col(Account.id) == account_id).with_for_update()).first()
    return session.execute(prepared(session, "claims_lock_account", lambda: select(
        ACCOUNTS.c.id, ACCOUNTS.c.name, ACCOUNTS.c.licensed_seats).where(
        ACCOUNTS.c.id == bindparam("org")).with_for_update()), {"org": account_id}).first()


def _seats_statement(except_email: bool) -> Any:
    members = select(func.count()).select_from(USERS).where(
        USERS.c.account_id == bindparam("org"), USERS.c.user_type == "licensed")
    claims = select(func.count()).select_from(CLAIMS).where(
        CLAIMS.c.org_account_id == bindparam("org"), CLAIMS.c.user_type == "licensed",
        CLAIMS.c.state == JoinClaimState.JOINING.value)
    if except_email:
        claims = claims.where(CLAIMS.c.email != bindparam("email"))
    return select(members.scalar_subquery(), claims.scalar_subquery())


def seats_taken(session: Session | Connection, org_account_id: int, *,
                except_email: str | None = None) -> int:
    """Licensed members plus licensed claims still joining (not yet members)."""
    conn = connection_of(session)
    exclude = except_email is not None
    members, claims = conn.execute(prepared(conn, ("claims_seats", exclude),
                                            lambda: _seats_statement(exclude)),
                                   {"org": org_account_id, "email": except_email}).one()
    return int(members) + int(claims)


def take_claim(
    session: Session | Connection, *, email: str, invitation_id: str, org_account_id: int,
    source_account_id: int | None, user_type: str,
) -> ClaimRefusal | None:
    """Claim `email`'s join for `invitation_id`; None when held (now or already), else
    why not. Safe to run twice: the holder finds its own claim. An invitation that ended
    meanwhile (declined, revoked, expired while its acceptance was checked) takes none:
    its ending releases claims in the transaction that ends its row, and this one reads
    that row under a lock (PostgreSQL: FOR UPDATE; SQLite: the write lock), so whichever
    commits first, no claim is left behind (tests/test_races.py)."""
    conn = connection_of(session)
    org = lock_account(conn, org_account_id)
    assert org is not None
    key = {"email": email, "invitation": invitation_id}
    # The invitation's row under a lock (after the organisation's), with this
    # invitation's own claim, if any, in the same round trip.
    row = conn.execute(prepared(conn, "claims_status_mine", lambda: select(
        INVITATIONS.c.status, select(CLAIMS.c.state).where(
            CLAIMS.c.email == bindparam("email"),
            CLAIMS.c.invitation_id == bindparam("invitation")).scalar_subquery(),
    ).where(INVITATIONS.c.id == bindparam("invitation")).with_for_update(
        of=INVITATIONS)), key).first()
    if row is not None:
        status, mine = row
    else:  # no Invitation row (not registered): no status, the claim read on its own
        status, mine = None, conn.execute(prepared(conn, "claims_mine", lambda: select(
            CLAIMS.c.state).where(CLAIMS.c.email == bindparam("email"),
                                  CLAIMS.c.invitation_id == bindparam("invitation"))),
            key).scalar()
    if status in FINAL_STATUS_VALUES:
        return None  # the workflow already ended it and says so; nothing to hold
    if mine is not None and mine in _ACTIVE:
        return None
    if user_type == "licensed" and seats_taken(conn, org_account_id,
                                               except_email=email) >= org.licensed_seats:
        return ClaimRefusal(kind="no_free_seat", account_name=org.name)
    values = {"email": email, "invitation_id": invitation_id, "org_account_id": org_account_id,
              "source_account_id": source_account_id, "user_type": user_type,
              "state": JoinClaimState.JOINING}
    # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING.
    inserted = conn.execute(prepared(conn, "claims_take", lambda: insert_for(conn, CLAIMS)
                                     .on_conflict_do_nothing().returning(CLAIMS.c.email)),
                            values).first()
    if inserted is not None:
        return None
    held = _held(conn, email)
    if held is None:
        raise NoResultFound("No row was found when one was required")
    refusal = _refusal(conn, held)
    if refusal is not None:
        return refusal
    # They joined once and have left that account since: the old claim is spent.
    taken = conn.execute(update(CLAIMS).where(
        CLAIMS.c.email == email, CLAIMS.c.invitation_id == held.invitation_id,
        CLAIMS.c.state == JoinClaimState.JOINED.value,
    ).values(**values))
    if taken.rowcount == 1:
        return None
    return ClaimRefusal(kind="already_joining", account_name=_name(conn, held))


def _held(conn: Connection, email: str) -> Row[Any] | None:
    return conn.execute(prepared(conn, "claims_held", lambda: select(
        CLAIMS.c.invitation_id, CLAIMS.c.org_account_id, CLAIMS.c.state, CLAIMS.c.email,
    ).where(CLAIMS.c.email == bindparam("email"))), {"email": email}).first()


def held_elsewhere(session: Session | Connection, *, email: str,
                   invitation_id: str) -> ClaimRefusal | None:
    """Whether another invitation holds (or spent, by a join that still stands) this
    person's join. Checked before the blocking conditions: a person whose join is under
    way elsewhere is told that, not what would block them from joining a second time."""
    conn = connection_of(session)
    held = _held(conn, email)
    if held is None or held.invitation_id == invitation_id:
        return None
    return _refusal(conn, held)


def _name(conn: Connection, claim: Row[Any]) -> str:
    name = conn.execute(prepared(conn, "claims_account_name", lambda: select(
        ACCOUNTS.c.name).where(ACCOUNTS.c.id == bindparam("org"))),
        {"org": claim.org_account_id}).scalar()
    return name if name is not None else f"account {claim.org_account_id}"


def _refusal(conn: Connection, held: Row[Any]) -> ClaimRefusal | None:
    if held.state in _ACTIVE:
        return ClaimRefusal(kind="already_joining", account_name=_name(conn, held),
                            invitation_id=held.invitation_id)
    account = conn.execute(prepared(conn, "claims_user_account", lambda: select(
        USERS.c.account_id).where(func.lower(USERS.c.email) == bindparam("email"))),
        {"email": held.email}).first()
    if account is not None and account.account_id == held.org_account_id:
        return ClaimRefusal(kind="joined_elsewhere", account_name=_name(conn, held),
                            invitation_id=held.invitation_id)
    return None


def mark_linked(session: Session | Connection, *, email: str, invitation_id: str) -> bool:
    """joining -> linked, in link_member's transaction; False if this invitation does not
    hold the claim (then it must not link)."""
    conn = connection_of(session)
    done = conn.execute(prepared(conn, "claims_mark_linked", lambda: update(CLAIMS).where(
        CLAIMS.c.email == bindparam("claim_email"),
        CLAIMS.c.invitation_id == bindparam("invitation"), CLAIMS.c.state.in_(_ACTIVE),
    ).values(state=JoinClaimState.LINKED.value)),
        {"claim_email": email, "invitation": invitation_id})
    return bool(done.rowcount == 1)


def mark_joined(conn: Connection, invitation_id: str) -> None:
    conn.execute(prepared(conn, "claims_mark_joined", lambda: update(CLAIMS).where(
        CLAIMS.c.invitation_id == bindparam("invitation"), CLAIMS.c.state.in_(_ACTIVE),
    ).values(state=JoinClaimState.JOINED.value)), {"invitation": invitation_id})


def release(conn: Connection, invitation_id: str) -> int:
    """The invitation ended without a join (declined, revoked, expired, failed and
    undone): the person is free to join another account."""
    gone = conn.execute(prepared(conn, "claims_release", lambda: delete(CLAIMS).where(
        CLAIMS.c.invitation_id == bindparam("invitation"), CLAIMS.c.state.in_(_ACTIVE))),
        {"invitation": invitation_id})
    return int(gone.rowcount or 0)
