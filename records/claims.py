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

from sqlalchemy import Connection, delete, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from messages.activity_io import ClaimRefusal
from messages.payloads import FINAL_STATUS_VALUES
from records.tables import Account, Invitation, JoinClaim, JoinClaimState, User

ACTIVE = (JoinClaimState.JOINING, JoinClaimState.LINKED)


def lock_account(session: Session, account_id: int) -> Account | None:
    """The account row, locked until the transaction ends where the database has row
    locks (PostgreSQL); SQLite's IMMEDIATE transaction already excludes other writers."""
    return session.exec(select(Account).where(Account.id == account_id).with_for_update()).first()


def seats_taken(session: Session, org_account_id: int, *, except_email: str | None = None) -> int:
    """Licensed members plus licensed claims still joining (not yet members)."""
    members = session.exec(select(func.count()).select_from(User).where(
        User.account_id == org_account_id, User.user_type == "licensed")).one()
    claims = select(func.count()).select_from(JoinClaim).where(
        JoinClaim.org_account_id == org_account_id, JoinClaim.user_type == "licensed",
        JoinClaim.state == JoinClaimState.JOINING)
    if except_email is not None:
        claims = claims.where(JoinClaim.email != except_email)
    return int(members) + int(session.exec(claims).one())


def take_claim(
    session: Session, *, email: str, invitation_id: str, org_account_id: int,
    source_account_id: int | None, user_type: str,
) -> ClaimRefusal | None:
    """Claim `email`'s join for `invitation_id`; None when held (now or already), else
    why not. Safe to run twice: the holder finds its own claim. An invitation that ended
    meanwhile (declined, revoked, expired while its acceptance was checked) takes none:
    its ending releases claims in the transaction that ends its row, and this one reads
    that row under a lock (PostgreSQL: FOR UPDATE; SQLite: the write lock), so whichever
    commits first, no claim is left behind (tests/test_races.py)."""
    org = lock_account(session, org_account_id)
    assert org is not None
    status = session.exec(select(Invitation.status).where(
        Invitation.id == invitation_id).with_for_update()).first()
    if status in FINAL_STATUS_VALUES:
        return None  # the workflow already ended it and says so; nothing to hold
    mine = session.exec(select(JoinClaim).where(
        JoinClaim.email == email, JoinClaim.invitation_id == invitation_id)).first()
    if mine is not None and mine.state in ACTIVE:
        return None
    if user_type == "licensed" and seats_taken(session, org_account_id,
                                               except_email=email) >= org.licensed_seats:
        return ClaimRefusal(kind="no_free_seat", account_name=org.name)
    values = {"email": email, "invitation_id": invitation_id, "org_account_id": org_account_id,
              "source_account_id": source_account_id, "user_type": user_type,
              "state": JoinClaimState.JOINING}
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING.
    inserted = session.connection().execute(
        dialect.insert(JoinClaim).values(**values).on_conflict_do_nothing()
        .returning(JoinClaim.email)).first()
    if inserted is not None:
        return None
    held = session.exec(select(JoinClaim).where(JoinClaim.email == email)).one()
    refusal = _refusal(session, held)
    if refusal is not None:
        return refusal
    # They joined once and have left that account since: the old claim is spent.
    taken = session.connection().execute(update(JoinClaim).where(
        col(JoinClaim.email) == email, col(JoinClaim.invitation_id) == held.invitation_id,
        col(JoinClaim.state) == JoinClaimState.JOINED,
    ).values(**values))
    if taken.rowcount == 1:
        return None
    return ClaimRefusal(kind="already_joining", account_name=_name(session, held))


def held_elsewhere(session: Session, *, email: str, invitation_id: str) -> ClaimRefusal | None:
    """Whether another invitation holds (or spent, by a join that still stands) this
    person's join. Checked before the blocking conditions: a person whose join is under
    way elsewhere is told that, not what would block them from joining a second time."""
    held = session.exec(select(JoinClaim).where(JoinClaim.email == email)).first()
    if held is None or held.invitation_id == invitation_id:
        return None
    return _refusal(session, held)


def _name(session: Session, claim: JoinClaim) -> str:
    holder = session.get(Account, claim.org_account_id)
    return holder.name if holder is not None else f"account {claim.org_account_id}"


def _refusal(session: Session, held: JoinClaim) -> ClaimRefusal | None:
    if held.state in ACTIVE:
        return ClaimRefusal(kind="already_joining", account_name=_name(session, held),
                            invitation_id=held.invitation_id)
    user = session.exec(select(User).where(func.lower(User.email) == held.email)).first()
    if user is not None and user.account_id == held.org_account_id:
        return ClaimRefusal(kind="joined_elsewhere", account_name=_name(session, held),
                            invitation_id=held.invitation_id)
    return None


def mark_linked(session: Session, *, email: str, invitation_id: str) -> bool:
    """joining -> linked, in link_member's transaction; False if this invitation does not
    hold the claim (then it must not link)."""
    done = session.connection().execute(update(JoinClaim).where(
        col(JoinClaim.email) == email, col(JoinClaim.invitation_id) == invitation_id,
        col(JoinClaim.state).in_(ACTIVE),
    ).values(state=JoinClaimState.LINKED))
    return bool(done.rowcount == 1)


def mark_joined(conn: Connection, invitation_id: str) -> None:
    conn.execute(update(JoinClaim).where(
        col(JoinClaim.invitation_id) == invitation_id, col(JoinClaim.state).in_(ACTIVE),
    ).values(state=JoinClaimState.JOINED))


def release(conn: Connection, invitation_id: str) -> int:
    """The invitation ended without a join (declined, revoked, expired, failed and
    undone): the person is free to join another account."""
    gone = conn.execute(delete(JoinClaim).where(
        col(JoinClaim.invitation_id) == invitation_id, col(JoinClaim.state).in_(ACTIVE)))
    return int(gone.rowcount or 0)
