"""Factories for the platform's records, and the idempotent demo data set.

Tests build their worlds with `create_org` / `create_individual`; `seed_demo` (run by
`python starter.py seed-demo` and `make run`) builds one world covering every path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert
from sqlmodel import Session, select

from records.db import write_session
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
    User,
    UserSetting,
)

ACME_LOCKS: dict[str, Any] = {"cloud_recording": True, "waiting_room": True}
ACME_UNLOCKED: dict[str, Any] = {"chat_emoji": True}
ACME_GROUP_LOCKS: dict[str, dict[str, Any]] = {"Sales": {"auto_transcript": True}}


def create_org(
    session: Session, name: str = "Acme", *, owner: str = "owner@acme.test",
    admins: tuple[str, ...] = ("admin@acme.test",), seats: int = 10, paid: bool = True,
    locks: dict[str, Any] | None = None, unlocked: dict[str, Any] | None = None,
    group_locks: dict[str, dict[str, Any]] | None = None, currency: str = "USD",
) -> Account:
    org = Account(
        name=name, kind=AccountKind.BUSINESS, plan="business" if paid else "basic", paid=paid,
        licensed_seats=seats, currency=currency,
    )
    session.add(org)
    session.flush()
    assert org.id is not None
    session.add(User(email=normalise_email(owner), account_id=org.id, role=Role.OWNER,
                     user_type="licensed", first_name=name, last_name="Owner"))
    for admin in admins:
        session.add(User(email=normalise_email(admin), account_id=org.id, role=Role.ADMIN,
                         user_type="licensed", first_name=name, last_name="Admin"))
    for key, value in (ACME_LOCKS if locks is None else locks).items():
        session.add(AccountSetting(account_id=org.id, key=key, value=value, locked=True))
    for key, value in (ACME_UNLOCKED if unlocked is None else unlocked).items():
        session.add(AccountSetting(account_id=org.id, key=key, value=value, locked=False))
    for group, group_settings in (ACME_GROUP_LOCKS if group_locks is None else group_locks).items():
        for key, value in group_settings.items():
            session.add(AccountSetting(account_id=org.id, group_name=group, key=key,
                                       value=value, locked=True))
    session.flush()
    return org


@dataclass
class IndividualSpec:
    email: str
    first_name: str = "Ind"
    last_name: str = "Vidual"
    price_minor: int = 0  # 0: free plan
    currency: str = "USD"
    period_start: datetime | None = None
    period_end: datetime | None = None
    payment_method: str = "card ending 4242"
    meetings: int = 2
    webinars: int = 0
    recordings: int = 0
    recording_bytes: int = 64 * 1024
    chat: int = 10
    contacts: int = 3
    settings: dict[str, Any] = field(default_factory=lambda: {"cloud_recording": False,
                                                              "language_pref": "en"})
    reports: int = 0
    other_users: tuple[str, ...] = ()
    rooms: tuple[str, ...] = ()


def _recording_bytes(seed: str, size: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def create_individual(session: Session, recordings_dir: Path, spec: IndividualSpec) -> User:
    """An individual account with one user and `spec`'s data. Chat rows go in one bulk
    insert (tens of thousands are fine)."""
    now = datetime.now(UTC)
    paid = spec.price_minor > 0
    account = Account(
        name=f"{spec.first_name} {spec.last_name}", kind=AccountKind.INDIVIDUAL,
        plan="pro" if paid else "basic", paid=paid, licensed_seats=1 if paid else 0,
        currency=spec.currency,
    )
    session.add(account)
    session.flush()
    assert account.id is not None
    user = User(email=normalise_email(spec.email), account_id=account.id, role=Role.OWNER,
                user_type="licensed" if paid else "basic", first_name=spec.first_name,
                last_name=spec.last_name)
    session.add(user)
    session.flush()
    assert user.id is not None
    aid, uid = account.id, user.id
    if paid:
        start = spec.period_start or now - timedelta(days=10)
        end = spec.period_end or start + timedelta(days=30)
        session.add(Subscription(account_id=aid, plan="pro", price_minor=spec.price_minor,
                                 currency=spec.currency, period_start=start, period_end=end,
                                 payment_method=spec.payment_method))
    session.add(Profile(account_id=aid, user_id=uid,
                        display_name=f"{spec.first_name} {spec.last_name}",
                        picture_url=f"https://pictures.example/{uid}.png",
                        timezone="Europe/Berlin", language="de-DE"))
    for i in range(spec.meetings):
        session.add(Meeting(account_id=aid, user_id=uid, kind="meeting", topic=f"Meeting {i + 1}",
                            start_time=now + timedelta(days=i + 1)))
    for i in range(spec.webinars):
        session.add(Meeting(account_id=aid, user_id=uid, kind="webinar", topic=f"Webinar {i + 1}",
                            start_time=now + timedelta(days=i + 2), duration_minutes=60))
    for i in range(spec.recordings):
        rel = Path(str(aid)) / str(uid) / f"recording-{i + 1}.mp4"
        data = _recording_bytes(f"{spec.email}-{i}", spec.recording_bytes + i * 1024)
        full = recordings_dir / rel
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data)
        session.add(Recording(account_id=aid, user_id=uid, topic=f"Recording {i + 1}",
                              path=str(rel), size_bytes=len(data),
                              sha256=hashlib.sha256(data).hexdigest()))
    if spec.chat:
        base = now - timedelta(days=365)
        session.execute(insert(ChatMessage), [
            {"account_id": aid, "user_id": uid, "channel": f"channel-{i % 7}",
             "body": f"message {i + 1}", "sent_at": base + timedelta(seconds=i), "staged": False}
            for i in range(spec.chat)
        ])
    for i in range(spec.contacts):
        session.add(Contact(account_id=aid, user_id=uid, name=f"Contact {i + 1}",
                            email=f"contact{i + 1}.{uid}@example.com"))
    for key, value in spec.settings.items():
        session.add(UserSetting(account_id=aid, user_id=uid, key=key, value=value))
    for i in range(spec.reports):
        session.add(Report(account_id=aid, user_id=uid, kind="meeting", title=f"Report {i + 1}",
                           held_on=now - timedelta(days=30 - i), participants=3 + i,
                           minutes=30 + i))
    for other in spec.other_users:
        session.add(User(email=normalise_email(other), account_id=aid, role=Role.MEMBER,
                         first_name="Other", last_name="User"))
    for room in spec.rooms:
        session.add(Room(account_id=aid, name=room))
    session.flush()
    return user


DEMO_INVITEES = {
    "free": "fran.free@example.com",
    "paid": "paula.paid@example.com",
    "other_user": "oscar.shared@example.com",
    "room": "rita.room@example.com",
    "other_business": "bob.busy@example.com",
}


def seed_demo(engine: Engine, recordings_dir: Path, *, chat_messages: int = 5000) -> dict[str, Any]:
    """Idempotent: a second run finds Acme and changes nothing. Returns what it found or made."""
    with write_session(engine) as session:
        acme = session.exec(select(Account).where(Account.name == "Acme",
                                                  Account.kind == AccountKind.BUSINESS)).first()
        if acme is not None:
            return {"created": False, "account_id": acme.id, "invitees": DEMO_INVITEES}
        acme = create_org(session, "Acme", owner="owner@acme.test", admins=("admin@acme.test",),
                          seats=25)
        now = datetime.now(UTC)
        create_individual(session, recordings_dir, IndividualSpec(
            email=DEMO_INVITEES["free"], first_name="Fran", last_name="Free", meetings=3,
            chat=200, contacts=5))
        create_individual(session, recordings_dir, IndividualSpec(
            email=DEMO_INVITEES["paid"], first_name="Paula", last_name="Paid", price_minor=1499,
            period_start=now - timedelta(days=12), period_end=now + timedelta(days=18),
            meetings=6, webinars=2, recordings=3, recording_bytes=512 * 1024,
            chat=chat_messages, contacts=40,
            settings={"cloud_recording": False, "waiting_room": False, "chat_emoji": False,
                      "auto_transcript": False, "language_pref": "de"},
            reports=4))
        create_individual(session, recordings_dir, IndividualSpec(
            email=DEMO_INVITEES["other_user"], first_name="Oscar", last_name="Shared",
            other_users=("olga.colleague@example.com",)))
        create_individual(session, recordings_dir, IndividualSpec(
            email=DEMO_INVITEES["room"], first_name="Rita", last_name="Room",
            rooms=("Rita's Boardroom",)))
        other = create_org(session, "Globex", owner="bob.busy@example.com", admins=(), seats=5,
                           locks={}, unlocked={}, group_locks={})
        session.commit()
        return {"created": True, "account_id": acme.id, "other_business_id": other.id,
                "invitees": DEMO_INVITEES}


