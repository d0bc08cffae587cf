"""Unit tier: the transfer activities against a real SQLite database and recordings dir,
run outside a worker with ActivityEnvironment (heartbeats and retries simulated)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.fencing import BatchSizer
from activities.transfers import TransferActivities
from config import Settings
from demo.seed import IndividualSpec, create_individual, create_org
from messages.activity_io import (
    ERR_CHECKSUM_MISMATCH,
    ERR_SOURCE_CHANGED,
    Transfer,
    Transferred,
    UndoTransfer,
)
from messages.payloads import Category
from records.tables import Account, ChatMessage, Meeting, Recording, TransferState, UserSetting
from rules.platform import CATEGORY_TABLES

INVITATION = "invitation-1-paula@example.com"


@dataclass
class World:
    org_id: int
    user_id: int
    source_id: int


def make_world(engine: Engine, settings: Settings, /, **spec: Any) -> World:
    with Session(engine) as session:
        org = create_org(session)
        user = create_individual(session, settings.recordings_dir,
                                 IndividualSpec(email="paula@example.com", **spec))
        session.commit()
        assert org.id and user.id
        return World(org.id, user.id, user.account_id)


def transfer(w: World, category: Category, **kw: Any) -> Transfer:
    return Transfer(invitation_id=INVITATION, category=category, user_id=w.user_id,
                    source_account_id=w.source_id, org_account_id=w.org_id, **kw)


async def run_all(env: ActivityEnvironment, acts: TransferActivities, w: World,
                  group: str | None = None) -> dict[Category, Transferred]:
    fns = {Category.PROFILE: acts.transfer_profile, Category.MEETINGS: acts.transfer_meetings,
           Category.RECORDINGS: acts.transfer_recordings, Category.CHAT: acts.transfer_chat,
           Category.CONTACTS: acts.transfer_contacts, Category.SETTINGS: acts.transfer_settings}
    return {c: await env.run(fn, transfer(w, c, group=group)) for c, fn in fns.items()}


def count(engine: Engine, table: Any, *where: Any) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(table).where(*where)).one())


@contextmanager
def commits(engine: Engine) -> Iterator[list[int]]:
    """Counts the transactions committed on `engine` inside the block (the write
    transactions: reads are never committed), in `[n]`."""
    n = [0]

    def on_commit(_conn: Any) -> None:
        n[0] += 1

    event.listen(engine, "commit", on_commit)
    try:
        yield n
    finally:
        event.remove(engine, "commit", on_commit)


def files(settings: Settings, pattern: str) -> list[Path]:
    return list(Path(settings.recordings_dir).glob(pattern))


@pytest.fixture
def acts(settings: Settings, engine: Engine) -> TransferActivities:
    return TransferActivities(settings, engine)


SPEC = dict(meetings=3, webinars=2, recordings=3, recording_bytes=2 * 1024 * 1024 + 17,
            chat=2500, contacts=4, reports=2,
            settings={"cloud_recording": False, "auto_transcript": False,
                      "language_pref": "de"})


async def test_every_category_is_copied_exactly_once(acts, engine, settings):
    w = make_world(engine, settings, **SPEC)
    env = ActivityEnvironment()
    first = await run_all(env, acts, w)
    second = await run_all(env, acts, w)  # a retry of everything: no duplicates
    expected = {Category.PROFILE: 1, Category.MEETINGS: 5, Category.RECORDINGS: 3,
                Category.CHAT: 2500, Category.CONTACTS: 4, Category.SETTINGS: 3}
    for category, n in expected.items():
        assert first[category].total == first[category].copied == n, category
        assert second[category].copied == n, category
        table = CATEGORY_TABLES[category]
        assert count(engine, table, table.invitation_id == INVITATION,
                     table.staged == True, table.account_id == w.org_id) == n  # noqa: E712
        # the sources are untouched
        assert count(engine, table, table.account_id == w.source_id) == n
    assert count(engine, Meeting, Meeting.staged == True, Meeting.kind == "webinar") == 2  # noqa: E712
    # 2500 rows: a first batch of 1000, then sized by time (at most doubling)
    assert 2 <= first[Category.CHAT].batches <= 3
    assert second[Category.CHAT].batches == 0  # resumed from the end: nothing re-read
    assert first[Category.PROFILE].reports_left_behind == 2
    assert first[Category.RECORDINGS].bytes == sum(2 * 1024 * 1024 + 17 + i * 1024
                                                   for i in range(3))
    assert second[Category.RECORDINGS].bytes == 0  # already staged: skipped


async def test_a_small_category_is_one_write_transaction(acts, engine, settings):
    """No more rows than the first batch: claim, copy, checkpoint and the settings' locks
    commit together; a retry is one transaction too and copies nothing again."""
    w = make_world(engine, settings, contacts=4, settings={"cloud_recording": False})
    env = ActivityEnvironment()
    for category, n in ((Category.CONTACTS, 4), (Category.SETTINGS, 1)):
        fn = acts.transfer_contacts if category == Category.CONTACTS else acts.transfer_settings
        with commits(engine) as first_commits:
            first = await env.run(fn, transfer(w, category))
        with commits(engine) as retry_commits:
            retry = await env.run(fn, transfer(w, category))
        assert first_commits == retry_commits == [1], category
        assert (first.total, first.copied, first.inserted, first.batches) == (n, n, n, 1)
        assert (retry.copied, retry.inserted, retry.batches) == (n, 0, 0)
        assert retry.epoch == first.epoch + 1 and retry.resumed_from == state(
            engine, category).checkpoint
    assert [c.key for c in first.settings_changed] == ["cloud_recording"]
    with Session(engine) as session:  # the organisation's lock applied to the copy
        staged = session.exec(select(UserSetting).where(UserSetting.staged == True)).one()  # noqa: E712
    assert (staged.key, staged.value) == ("cloud_recording", True)


async def test_recordings_are_verified_copies(acts, engine, settings):
    w = make_world(engine, settings, recordings=2, recording_bytes=3 * 1024 * 1024)
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *d: beats.append(d)
    result = await env.run(acts.transfer_recordings, transfer(w, Category.RECORDINGS))
    assert result.copied == 2 and result.batches == 2
    with Session(engine) as session:
        staged = session.exec(select(Recording).where(Recording.staged == True)).all()  # noqa: E712
        for row in staged:
            source = session.get(Recording, row.source_id)
            assert source is not None and row.path != source.path
            assert f"{w.org_id}/staged/" in row.path
            data = (settings.recordings_dir / row.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row.sha256 == source.sha256
            assert len(data) == row.size_bytes
    # A checkpoint after the first copy; none after the last (the result follows at once,
    # and a heartbeat is a billed action).
    batches = [b[0]["batches"] for b in beats if b and isinstance(b[0], dict) and "rows" in b[0]]
    assert batches == [1]


async def test_corrupted_recording_fails_for_good_and_leaves_nothing(acts, engine, settings):
    w = make_world(engine, settings, recordings=3)
    with Session(engine) as session:
        second = session.exec(select(Recording).where(Recording.user_id == w.user_id)
                              .order_by(Recording.id)).all()[1]
    path = settings.recordings_dir / second.path
    path.write_bytes(b"X" + path.read_bytes()[1:])  # bit rot in the source
    env = ActivityEnvironment()
    with pytest.raises(ApplicationError) as err:
        await env.run(acts.transfer_recordings, transfer(w, Category.RECORDINGS))
    assert err.value.type == ERR_CHECKSUM_MISMATCH and err.value.non_retryable
    assert second.topic in str(err.value)
    staged_dirs = files(settings, "*/staged/*")
    assert staged_dirs and not files(settings, "**/*.part")
    # the workflow compensates with undo_transfer: nothing staged remains, sources intact
    undone = await env.run(acts.undo_transfer, UndoTransfer(invitation_id=INVITATION,
                                                            category=Category.RECORDINGS))
    assert undone.removed == 1  # the first recording had been verified and staged
    assert count(engine, Recording, Recording.staged == True) == 0  # noqa: E712
    assert all(not d.exists() for d in staged_dirs)
    assert count(engine, Recording, Recording.account_id == w.source_id) == 3


class Crash(Exception):
    pass


def state(engine: Engine, category: Category = Category.CHAT) -> TransferState:
    with Session(engine) as session:
        row = session.exec(select(TransferState).where(
            TransferState.invitation_id == INVITATION,
            TransferState.category == category.value)).one()
        session.expunge(row)
        return row


async def test_chat_resumes_from_the_database_checkpoint(acts, engine, settings):
    """The checkpoint is committed with each batch: a retry resumes from the database (no
    heartbeat details at all), re-copies nothing, and the counts are exact."""
    w = make_world(engine, settings, chat=20_000)
    beats: list[dict[str, Any]] = []

    def crash_after_3(*details: Any) -> None:
        if "batches" in details[0]:
            beats.append(details[0])
        if len(beats) == 3:
            raise Crash("worker lost after 3 committed batches")

    env = ActivityEnvironment()
    env.on_heartbeat = crash_after_3
    with pytest.raises(Crash):
        await env.run(acts.transfer_chat, transfer(w, Category.CHAT, batch_size=200))
    at_crash = state(engine)
    staged = count(engine, ChatMessage, ChatMessage.staged == True)  # noqa: E712
    assert 0 < staged < 20_000
    assert at_crash.rows_copied == staged and at_crash.batches == 3  # checkpoint == data
    assert at_crash.checkpoint == beats[-1]["checkpoint"]

    retry = ActivityEnvironment()
    retry.info = dataclasses.replace(retry.info, attempt=2)  # no heartbeat details
    result = await retry.run(acts.transfer_chat, transfer(w, Category.CHAT))
    assert result.resumed_from == at_crash.checkpoint
    assert result.inserted == 20_000 - staged  # nothing committed was copied again
    assert result.attempt == 2 and result.epoch == at_crash.epoch + 1
    assert result.total == result.copied == 20_000
    assert count(engine, ChatMessage, ChatMessage.staged == True) == 20_000  # noqa: E712
    assert state(engine).rows_copied == 20_000  # every INSERT of every attempt, summed


def test_batches_are_sized_by_time():
    sizer = BatchSizer(1000, target=0.5, low=200, high=50_000)
    assert sizer.record(1000, 0.01) == 2000  # fast: at most doubles
    assert sizer.record(2000, 0.5) == 2000  # on target: stays
    assert sizer.record(2000, 4.0) == 1000  # slow: at most halves
    assert sizer.record(300, 0.001) == 1000  # a short (last) batch tells nothing
    for _ in range(20):
        sizer.record(sizer.size, 0.001)
    assert sizer.size == 50_000
    for _ in range(20):
        sizer.record(sizer.size, 100.0)
    assert sizer.size == 200


async def test_undo_removes_staged_copies_only(acts, engine, settings):
    w = make_world(engine, settings, **SPEC)
    env = ActivityEnvironment()
    await run_all(env, acts, w)
    for category, table in CATEGORY_TABLES.items():
        before = count(engine, table, table.account_id == w.source_id)
        undo = UndoTransfer(invitation_id=INVITATION, category=category)
        first = await env.run(acts.undo_transfer, undo)
        assert first.removed == before > 0, category
        assert (await env.run(acts.undo_transfer, undo)).removed == 0
        assert count(engine, table, table.invitation_id == INVITATION) == 0
        assert count(engine, table, table.account_id == w.source_id) == before
    with Session(engine) as session:
        for row in session.exec(select(Recording)).all():
            assert (settings.recordings_dir / row.path).exists()  # source files kept
    assert not files(settings, "*/staged/*/*")


async def test_settings_take_the_locked_values(acts, engine, settings):
    w = make_world(engine, settings, **SPEC)
    result = await ActivityEnvironment().run(
        acts.transfer_settings, transfer(w, Category.SETTINGS, group="Sales"))
    changed = {c.key: (c.old, c.new) for c in result.settings_changed}
    assert changed == {"cloud_recording": (False, True), "auto_transcript": (False, True)}
    assert "group Sales" in next(c.why for c in result.settings_changed
                                 if c.key == "auto_transcript")
    with Session(engine) as session:
        staged = {s.key: s.value for s in session.exec(
            select(UserSetting).where(UserSetting.staged == True)).all()}  # noqa: E712
    assert staged == {"cloud_recording": True, "auto_transcript": True, "language_pref": "de"}
    # without the group only the account lock applies
    other = await ActivityEnvironment().run(
        acts.transfer_settings, transfer(w, Category.SETTINGS))
    assert [c.key for c in other.settings_changed] == ["cloud_recording"]


async def test_source_gone_is_a_business_failure(acts, engine, settings):
    w = make_world(engine, settings)
    with Session(engine) as session:
        account = session.get(Account, w.source_id)
        assert account is not None
        account.status = "closed"
        session.add(account)
        session.commit()
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.transfer_contacts, transfer(w, Category.CONTACTS))
    assert err.value.type == ERR_SOURCE_CHANGED and err.value.non_retryable
