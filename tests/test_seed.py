"""The demo data: every path present, and seeding twice changes nothing."""

from __future__ import annotations

from sqlalchemy import Engine, func
from sqlmodel import Session, SQLModel, select

from config import Settings
from demo.seed import DEMO_INVITEES, seed_demo
from records.tables import Account, AccountSetting, Recording, Report
from rules.platform import blocking_items, category_counts, find_user, refund_quote


def _row_counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as s:
        return {t.name: s.exec(select(func.count()).select_from(t)).one()
                for t in SQLModel.metadata.sorted_tables}


def test_seed_demo_is_idempotent_and_covers_every_path(settings: Settings, engine: Engine) -> None:
    first = seed_demo(engine, settings.recordings_dir, chat_messages=3000)
    counts = _row_counts(engine)
    second = seed_demo(engine, settings.recordings_dir, chat_messages=3000)
    assert first["created"] is True and second["created"] is False
    assert second["account_id"] == first["account_id"]
    assert _row_counts(engine) == counts

    from datetime import UTC, datetime
    with Session(engine) as s:
        acme = s.get(Account, first["account_id"])
        assert acme is not None and acme.paid and acme.licensed_seats > 2
        assert s.exec(select(AccountSetting).where(AccountSetting.locked == True)).all()  # noqa: E712
        paid = find_user(s, DEMO_INVITEES["paid"])
        assert paid is not None
        by_cat = {c.category.value: c for c in category_counts(s, paid)}
        assert by_cat["chat"].items == 3000
        assert by_cat["recordings"].items == 3 and by_cat["meetings"].items == 8
        quote = refund_quote(s, paid, datetime.now(UTC))
        assert quote is not None and 0 < quote.amount_minor < quote.price_minor
        assert s.exec(select(func.count()).select_from(Report)
                      .where(Report.user_id == paid.id)).one() == 4
        for rec in s.exec(select(Recording)).all():
            assert (settings.recordings_dir / rec.path).stat().st_size == rec.size_bytes
        free = find_user(s, DEMO_INVITEES["free"])
        assert free is not None and refund_quote(s, free, datetime.now(UTC)) is None
        shared = find_user(s, DEMO_INVITEES["other_user"])
        room = find_user(s, DEMO_INVITEES["room"])
        busy = find_user(s, DEMO_INVITEES["other_business"])
        assert shared and room and busy
        names = [b.name for b in blocking_items(s, shared, acme.id)]
        assert names == ["olga.colleague@example.com"]
        assert [b.name for b in blocking_items(s, room, acme.id)] == ["Rita's Boardroom"]
        assert [b.kind for b in blocking_items(s, busy, acme.id)] == ["other_business_account"]
