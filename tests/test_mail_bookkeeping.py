"""The mail activity's SentEmail bookkeeping, which runs on the driver's cursor (statements
compiled once by SQLAlchemy): the rows it writes read back through the ORM as any other
(sent_at aware UTC, comparable with a datetime), a key recorded first keeps its row, and
the already-sent lookup finds exactly the recorded keys, for any number of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from activities.mail import MailActivities
from config import Settings
from messages.payloads import EmailKind
from records.tables import SentEmail
from tests.test_mail import request


def test_recorded_rows_read_back_as_written(settings: Settings, engine: Engine) -> None:
    acts = MailActivities(settings, engine)
    before = datetime.now(UTC) - timedelta(seconds=1)
    acts._record([(request(EmailKind.INVITATION, key="a:1"), "Subject ü 1"),
                  (request(EmailKind.ADMIN_ACCEPTED, key="a:2"), "Subject 2")])
    with Session(engine) as s:
        rows = s.exec(select(SentEmail).where(col(SentEmail.sent_at) >= before)
                      .order_by(col(SentEmail.message_key))).all()
    assert [(r.message_key, r.kind, r.to, r.subject, r.invitation_id) for r in rows] == [
        ("a:1", "invitation", "paula@example.com", "Subject ü 1",
         "invitation-1-paula@example.com"),
        ("a:2", "admin_accepted", "admin@acme.test", "Subject 2",
         "invitation-1-paula@example.com")]
    assert all(r.sent_at.tzinfo is not None and before <= r.sent_at <= datetime.now(UTC)
               for r in rows)


def test_a_key_recorded_first_keeps_its_row(settings: Settings, engine: Engine) -> None:
    acts = MailActivities(settings, engine)
    acts._record([(request(EmailKind.REMINDER, key="r:1"), "first")])
    acts._record([(request(EmailKind.REMINDER, key="r:1"), "second"),
                  (request(EmailKind.REMINDER, key="r:2"), "other")])
    assert acts._already_sent(["r:1", "r:2"]) == {"r:1": "first", "r:2": "other"}
    with Session(engine) as s:
        assert len(s.exec(select(SentEmail)).all()) == 2


def test_already_sent_finds_the_recorded_keys_among_any_number(
    settings: Settings, engine: Engine,
) -> None:
    acts = MailActivities(settings, engine)
    acts._record([(request(EmailKind.COMPLETION, key=f"c:{n}"), f"s{n}") for n in (1, 3)])
    assert acts._already_sent([]) == {}
    for n in range(1, 6):
        keys = [f"c:{i}" for i in range(n)]
        assert acts._already_sent(keys) == {k: f"s{k[2:]}" for k in keys if k in ("c:1", "c:3")}
