"""The statements that stage an invitee's rows, each run inside the caller's transaction
(which holds the transfer, see activities.fencing): check and count the source, copy the
source rows in (checkpoint, upto] as *staged* copies (see records.tables) with one
`INSERT ... SELECT ... ON CONFLICT (invitation_id, source_id) DO NOTHING` and move the
checkpoint with them, and apply the organisation's locks to the staged settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, literal, select, update
from sqlmodel import col
from temporalio.exceptions import ApplicationError

from activities.fencing import COUNT_ROWS, Cursor, advance, inserted_rows
from messages.activity_io import ERR_SOURCE_CHANGED, Transfer
from messages.payloads import Category, SettingChange
from records.db import insert_for, prepared
from records.tables import Account, User, UserSetting
from rules.platform import CATEGORY_TABLES, reports_left_behind_count

STAGING_KEY = ["invitation_id", "source_id"]


def table_of(category: Category) -> Table:
    return CATEGORY_TABLES[category].__table__  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Batch:
    upto: int  # the new checkpoint (last source id of the batch)
    inserted: int
    size: int = 0  # bytes (recordings)
    last: bool = False  # nothing was left after it when it committed
    copied: int = 0  # rows copied by the round's committed batches, this one included


@dataclass(frozen=True)
class Source:
    """What the claim's transaction read of the source."""

    rows: int  # source rows not copied yet by anyone (staged=False, in the source account)
    last_id: int | None  # the highest of their ids
    reports: int = 0  # reports left behind (profile only)
    recording: Any = None  # the first recording after the checkpoint (recordings only)


def source_filter(table: Table, t: Transfer) -> list[Any]:
    # The columns of the keyset index (user_id, account_id, staged, id), in its order.
    return [table.c.user_id == t.user_id, table.c.account_id == t.source_account_id,
            table.c.staged == False]  # noqa: E712


def _source_rows(table: Table) -> list[Any]:
    """source_filter for a prepared statement: parameters src_user and src_account."""
    return [table.c.user_id == bindparam("src_user"),
            table.c.account_id == bindparam("src_account"),
            table.c.staged == False]  # noqa: E712


def check_source(conn: Connection, t: Transfer) -> Source:
    """Fail for good if the individual account or the user is gone; else count rows
    (and, for the profile, the reports left behind): one statement."""
    def build() -> Any:
        accounts, users = Account.__table__, User.__table__  # type: ignore[attr-defined]
        table = table_of(t.category)
        reports = reports_left_behind_count(bindparam("src_user"), bindparam("src_account")) \
            if t.category == Category.PROFILE else literal(0)
        return select(
            select(accounts.c.status).where(accounts.c.id == bindparam("src_account"))
            .scalar_subquery(),
            select(users.c.id).where(users.c.id == bindparam("src_user"))
            .scalar_subquery(),
            func.count(), func.max(table.c.id), reports,
        ).select_from(table).where(*_source_rows(table))
    row = conn.execute(prepared(conn, ("check_source", t.category), build), {
        "src_user": t.user_id, "src_account": t.source_account_id}).one()
    status, user, rows, last_id, reports_left = row
    if status != "active" or user is None:
        raise ApplicationError(
            f"the source account {t.source_account_id} or user {t.user_id} no longer "
            "exists", type=ERR_SOURCE_CHANGED, non_retryable=True)
    return Source(int(rows), None if last_id is None else int(last_id), int(reports_left))


def copy_upto(conn: Connection, t: Transfer, cursor: Cursor, upto: int, *,
              last: bool) -> Batch:
    """Stage the source rows in (checkpoint, upto] and move the checkpoint to `upto`,
    inside the caller's transaction, which holds the transfer."""
    def build() -> Any:
        table = table_of(t.category)
        overrides = {
            "account_id": bindparam("org_account", type_=table.c.account_id.type),
            "invitation_id": bindparam("invitation", type_=table.c.invitation_id.type),
            "source_id": table.c.id,
            "staged": literal(True, table.c.staged.type),
        }
        columns = [c.name for c in table.columns if c.name != "id"]
        rows = select(*[overrides.get(name, table.c[name]) for name in columns]).where(
            *_source_rows(table), table.c.id > bindparam("after"),
            table.c.id <= bindparam("upto")).order_by(table.c.id)
        return insert_for(conn, table).from_select(columns, rows) \
            .on_conflict_do_nothing(index_elements=STAGING_KEY)
    stmt = prepared(conn, ("copy", t.category), build)
    inserted = inserted_rows(conn.execute(stmt, {
        "org_account": t.org_account_id, "invitation": t.invitation_id,
        "src_user": t.user_id, "src_account": t.source_account_id,
        "after": cursor.checkpoint, "upto": upto}, execution_options=COUNT_ROWS))
    copied = advance(conn, cursor, upto, inserted)
    return Batch(upto, inserted, last=last, copied=copied)


def apply_locks(conn: Connection, t: Transfer, changes: list[SettingChange]) -> None:
    """The organisation's locked settings overwrite the staged copies of the invitee's."""
    for change in changes:
        conn.execute(update(UserSetting).where(
            col(UserSetting.invitation_id) == t.invitation_id,
            col(UserSetting.staged) == True,  # noqa: E712
            col(UserSetting.key) == change.key,
        ).values(value=change.new))
