"""Read-side rules of the platform, shared by the activities (at acceptance time) and the
link handler's preview (before it), so that what the invitee is shown is what happens.

- `blocking_items`: the conditions behind error 1009.
- `settings_changes`: which of the invitee's settings the organisation's locks override.
- `category_counts`: what will move; `reports_left_behind`: what will not.
- `refund_quote`: the prorated refund (see rules.money).
- `live_rows`: which rows count as live while finalised copies wait for release_source.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, overload

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    ScalarSelect,
    Table,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    text,
    union_all,
)
from sqlalchemy import select as sa_select
from sqlalchemy.exc import NoResultFound
from sqlmodel import Session, col, select

from messages.payloads import (
    BlockingItem,
    Category,
    CategoryCount,
    RefundQuote,
    SettingChange,
)
from records.claims import connection_of
from records.db import as_utc, prepared
from records.ids import normalise_email
from records.tables import (
    Account,
    AccountKind,
    AccountSetting,
    ChatMessage,
    Contact,
    Meeting,
    Profile,
    Recording,
    Report,
    Role,
    Room,
    Subscription,
    TransferState,
    User,
    UserSetting,
)
from rules.money import FORMULA, prorated_refund_minor

ERROR_1009 = 1009
ACCOUNTS: Table = Account.__table__  # type: ignore[attr-defined]
USERS: Table = User.__table__  # type: ignore[attr-defined]

# Which table holds each category (settings are UserSetting rows).
CATEGORY_TABLES: dict[Category, Any] = {
    Category.PROFILE: Profile,
    Category.MEETINGS: Meeting,
    Category.RECORDINGS: Recording,
    Category.CHAT: ChatMessage,
    Category.CONTACTS: Contact,
    Category.SETTINGS: UserSetting,
}


def live_rows(table: Any) -> ColumnElement[bool]:
    """Rows of a transferable table that count as live: not staged, or a staged copy whose
    transfer finalise made live and release_source has not flipped yet. In an individual
    account no copy is ever staged, so there it is simply `staged == False`."""
    category = next(c for c, t in CATEGORY_TABLES.items() if t is table)
    live = select(TransferState.invitation_id).where(
        TransferState.category == category.value, TransferState.state == "live")
    return or_(table.staged == False,  # noqa: E712
               and_(table.staged == True, col(table.invitation_id).in_(live)))  # noqa: E712


@overload
def find_user(session: Session, email: str) -> User | None: ...
@overload
def find_user(session: Connection, email: str) -> Row[Any] | None: ...
def find_user(session: Session | Connection, email: str) -> User | Row[Any] | None:
    """The user with this email, whatever its case (rows stored before emails were
    normalised on write may be mixed-case). Given a Connection: a Core row of the same
    columns (one statement built once: the activities run it at every step)."""
    if isinstance(session, Session):
        return session.exec(select(User).where(
            func.lower(User.email) == normalise_email(email))).first()
    return session.execute(prepared(session, "find_user", lambda: sa_select(USERS).where(
        func.lower(USERS.c.email) == bindparam("email"))),
        {"email": normalise_email(email)}).first()


class AccountFacts(NamedTuple):
    """What blocking_items reads of the invitee's account."""

    id: int
    name: str
    kind: str
    status: str


def find_invitee(conn: Connection, email: str) -> tuple[Row[Any] | None, AccountFacts | None]:
    """`find_user` (Core row) and the user's account (for blocking_items), one statement."""
    row = conn.execute(prepared(conn, "find_invitee", lambda: sa_select(
        USERS, ACCOUNTS.c.id.label("acct_id"), ACCOUNTS.c.name.label("acct_name"),
        ACCOUNTS.c.kind.label("acct_kind"), ACCOUNTS.c.status.label("acct_status"),
    ).select_from(USERS.outerjoin(ACCOUNTS, ACCOUNTS.c.id == USERS.c.account_id)).where(
        func.lower(USERS.c.email) == bindparam("email"))),
        {"email": normalise_email(email)}).first()
    if row is None or row.acct_id is None:
        return row, None
    return row, AccountFacts(row.acct_id, row.acct_name, row.acct_kind, row.acct_status)


def blocking_items(session: Session | Connection, invitee: Any, org_account_id: int, *,
                   account: AccountFacts | None = None) -> list[BlockingItem]:
    """Everything that stops `invitee` (a User, or a row with its id and account_id) from
    joining `org_account_id` right now. `account`: the invitee's, if read already."""
    conn = connection_of(session)
    read: Any = account
    if read is None:
        read = conn.execute(prepared(conn, "blocking_account", lambda: select(
            ACCOUNTS.c.id, ACCOUNTS.c.name, ACCOUNTS.c.kind, ACCOUNTS.c.status).where(
            ACCOUNTS.c.id == bindparam("acc"))), {"acc": invitee.account_id}).first()
    assert read is not None
    account = read
    items: list[BlockingItem] = []
    if account.id == org_account_id:
        return items
    if account.kind == AccountKind.BUSINESS:
        items.append(BlockingItem(
            kind="other_business_account", name=account.name,
            action=f"Leave the business account {account.name!r} (ask its owner to remove "
                   "you) before joining.",
        ))
        return items
    if account.status != "active":
        items.append(BlockingItem(
            kind="account_closed", name=account.name,
            action="Your account is closed; ask the inviting admin for a new invitation.",
        ))
        return items
    # The other users (by email), then the rooms (by name): one statement.
    for kind, name in conn.execute(prepared(conn, "blocking_others", _blockers),
                                   {"acc": account.id, "user": invitee.id}).all():
        if kind == "other_user":
            items.append(BlockingItem(
                kind="other_user", name=name,
                action=f"Remove {name} from your account (Admin > User Management), "
                       "or transfer them to another account.",
            ))
        else:
            items.append(BlockingItem(
                kind="room", name=name,
                action=f"Delete the room {name!r} or move it to another account "
                       "(Room Management).",
            ))
    return items


def _blockers() -> Any:
    rooms = Room.__table__  # type: ignore[attr-defined]
    others: Any = select(literal_column("'other_user'").label("kind"),
                    USERS.c.email.label("name")).where(
        USERS.c.account_id == bindparam("acc"), USERS.c.id != bindparam("user"))
    return union_all(others, select(literal_column("'room'"), rooms.c.name).where(
        rooms.c.account_id == bindparam("acc"))).order_by(text("kind"), text("name"))


def settings_changes(
    session: Session | Connection, invitee: Any, org_account_id: int, group: str | None,
) -> list[SettingChange]:
    """The invitee's settings that a lock of the organisation (or of the invited group)
    overrides: key, old value, new value, and why. A group lock wins over an account lock.
    (Core statements built once: it runs at every acceptance check and settings transfer.)"""
    conn = connection_of(session)
    locked = AccountSetting.__table__  # type: ignore[attr-defined]
    mine_table = UserSetting.__table__  # type: ignore[attr-defined]
    # The organisation's name with its locks (none: one row of NULLs), one statement.
    found = conn.execute(prepared(conn, "settings_org_locks", lambda: select(
        ACCOUNTS.c.name, locked.c.key, locked.c.value, locked.c.group_name,
    ).select_from(ACCOUNTS.outerjoin(locked, and_(
        locked.c.account_id == ACCOUNTS.c.id, locked.c.locked == True))).where(  # noqa: E712
        ACCOUNTS.c.id == bindparam("org"))), {"org": org_account_id}).all()
    if not found:
        raise NoResultFound("No row was found when one was required")
    org_name = found[0].name
    rows = [row for row in found if row.key is not None]
    locks: dict[str, tuple[object, str]] = {}
    for row in sorted(rows, key=lambda r: r.group_name is not None):  # account, then group
        if row.group_name is None:
            locks[row.key] = (row.value, f"locked by account {org_name}")
        elif group is not None and row.group_name == group:
            locks[row.key] = (row.value, f"locked by group {group} of {org_name}")
    if not locks:
        return []
    mine = conn.execute(prepared(conn, "settings_mine", lambda: select(
        mine_table.c.key, mine_table.c.value).where(
        mine_table.c.user_id == bindparam("user"), mine_table.c.account_id == bindparam("acc"),
        live_rows(UserSetting)).order_by(mine_table.c.key)),
        {"user": invitee.id, "acc": invitee.account_id}).all()
    changes = []
    for setting in mine:
        if setting.key in locks and locks[setting.key][0] != setting.value:
            new, why = locks[setting.key]
            changes.append(SettingChange(key=setting.key, old=setting.value, new=new, why=why))
    return changes


def category_counts(session: Session, invitee: User) -> list[CategoryCount]:
    counts = []
    for category, table in CATEGORY_TABLES.items():
        q = select(func.count()).select_from(table).where(
            table.user_id == invitee.id, table.account_id == invitee.account_id,
            live_rows(table),
        )
        n = session.exec(q).one()
        size = 0
        if table is Recording:
            size = session.exec(
                select(func.coalesce(func.sum(Recording.size_bytes), 0)).where(
                    Recording.user_id == invitee.id, Recording.account_id == invitee.account_id,
                    live_rows(Recording),
                )
            ).one()
        counts.append(CategoryCount(category=category, items=int(n), bytes=int(size)))
    return counts


def _reports_of(user_id: Any, account_id: Any) -> list[ColumnElement[bool]]:
    return [col(Report.user_id) == user_id, col(Report.account_id) == account_id]


def reports_left_behind(session: Session, invitee: User) -> list[Report]:
    return list(session.exec(
        select(Report).where(*_reports_of(invitee.id, invitee.account_id))
        .order_by(col(Report.held_on))
    ).all())


def reports_left_behind_total(conn: Connection, user_id: int | None, account_id: int) -> int:
    """How many of `reports_left_behind` there are (one Core count, built once)."""
    return int(conn.execute(prepared(conn, "reports_left_behind_total", lambda: select(
        reports_left_behind_count(bindparam("user"), bindparam("acc")))),
        {"user": user_id, "acc": account_id}).scalar_one())


def reports_left_behind_count(user_id: Any, account_id: Any) -> ScalarSelect[int]:
    """How many reports stay behind, as a subquery (the transfer reads it with its count);
    the ids may be bind parameters."""
    return select(func.count()).select_from(Report).where(
        *_reports_of(user_id, account_id)).scalar_subquery()


def active_subscription(session: Session, account_id: int) -> Subscription | None:
    return session.exec(
        select(Subscription).where(
            Subscription.account_id == account_id, Subscription.status == "active",
        ).order_by(col(Subscription.id).desc())
    ).first()


def subscription_row(conn: Connection, account_id: int) -> Row[Any] | None:
    """`active_subscription` as a Core row (one statement built once)."""
    subs = Subscription.__table__  # type: ignore[attr-defined]
    return conn.execute(prepared(conn, "active_subscription", lambda: sa_select(subs).where(
        subs.c.account_id == bindparam("acc"), subs.c.status == "active",
    ).order_by(subs.c.id.desc()).limit(1)), {"acc": account_id}).first()


def refund_quote(session: Session | Connection, invitee: Any,
                 at: datetime) -> RefundQuote | None:
    """The refund if `invitee` accepted at `at`; None when there is nothing to refund
    (no active paid subscription)."""
    sub = subscription_row(connection_of(session), invitee.account_id)
    if sub is None or sub.price_minor == 0:
        return None
    start, end = as_utc(sub.period_start), as_utc(sub.period_end)
    amount, left, period = prorated_refund_minor(
        price_minor=sub.price_minor, period_start=start, period_end=end, at=at,
    )
    return RefundQuote(
        amount_minor=amount, currency=sub.currency, price_minor=sub.price_minor, plan=sub.plan,
        period_start=start, period_end=end, at=at, seconds_left=left, period_seconds=period,
        formula=FORMULA, payment_method=sub.payment_method,
    )


def is_admin_of(session: Session, email: str, account_id: int) -> User | None:
    user = find_user(session, email)
    if user and user.account_id == account_id and user.role in (Role.OWNER, Role.ADMIN):
        return user
    return None


def source_view(user_id: int, source_account_id: int) -> User:
    """A detached stand-in for the invitee *as a member of their individual account*.
    The read rules above select by (user.id, user.account_id); once the invitee is linked
    their real account_id is the organisation, so steps that run after the link pass this
    view instead. Never added to a session."""
    return User(id=user_id, account_id=source_account_id, email="")
