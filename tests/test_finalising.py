"""Unit tier: finalise (the point of no return: one short transaction, deletes nothing) and
release_source (after completion: copies made final, sources removed, files re-verified),
against a real SQLite database and recordings dir, with ActivityEnvironment."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.finalising import FinaliseActivities
from activities.platform import PlatformActivities
from activities.transfers import TransferActivities
from config import Settings
from messages.activity_io import (
    ERR_CHECKSUM_MISMATCH,
    ERR_NOT_FINALISED,
    ERR_TRANSFER_LIVE,
    ERR_TRANSFER_SUPERSEDED,
    ERR_TRANSFER_UNDONE,
    Finalise,
    ReleaseSource,
    UndoTransfer,
)
from messages.payloads import Category
from records.tables import (
    Account,
    AuditEvent,
    ChatMessage,
    Recording,
    Report,
    TransferState,
    User,
)
from rules.platform import CATEGORY_TABLES, category_counts
from tests.test_platform_activities import INVITATION, claim, link, make_world, rows
from tests.test_transfers import World, commits, run_all, transfer

DATA = dict(meetings=2, webinars=1, recordings=2, chat=1500, contacts=3, reports=2)
MOVED = {"profile": 1, "meetings": 3, "recordings": 2, "chat": 1500, "contacts": 3,
         "settings": 2}


@pytest.fixture
def env() -> ActivityEnvironment:
    return ActivityEnvironment()


@pytest.fixture
def fin(settings: Settings, engine: Engine) -> FinaliseActivities:
    return FinaliseActivities(settings, engine)


def finalise_req(w: World) -> Finalise:
    return Finalise(invitation_id=INVITATION, user_id=w.user_id, source_account_id=w.source_id,
                    org_account_id=w.org_id)


def release_req(w: World) -> ReleaseSource:
    return ReleaseSource(invitation_id=INVITATION, user_id=w.user_id,
                         source_account_id=w.source_id, org_account_id=w.org_id)


async def transferred_world(env: ActivityEnvironment, engine: Engine,
                            settings: Settings) -> World:
    w = make_world(engine, settings, **DATA)
    acts = PlatformActivities(settings, engine)
    await claim(env, acts, w)  # link_member requires the join claim the check takes
    await env.run(acts.link_member, link(w))
    await run_all(env, TransferActivities(settings, engine), w)
    return w


def snapshot(engine: Engine, settings: Settings) -> dict[str, Any]:
    """Every transferable row (as tuples) and every recording file's bytes."""
    out: dict[str, Any] = {}
    with Session(engine) as session:
        for category, table in CATEGORY_TABLES.items():
            out[category.value] = sorted(repr(r.model_dump())
                                         for r in session.exec(select(table)).all())
    root = Path(settings.recordings_dir)
    out["files"] = {str(f.relative_to(root)): f.read_bytes()
                    for f in sorted(root.rglob("*")) if f.is_file()}
    return out


async def test_finalise_makes_transfers_live_in_one_step_and_deletes_nothing(
        env, fin, engine, settings):
    w = await transferred_world(env, engine, settings)
    before = snapshot(engine, settings)
    first = await env.run(fin.finalise, finalise_req(w))
    assert first == await env.run(fin.finalise, finalise_req(w))  # idempotent
    assert first.made_live == MOVED and first.source_account_closed
    assert snapshot(engine, settings) == before  # no row, no file touched
    assert {s.state for s in rows(engine, TransferState)} == {"live"}
    assert rows(engine, Account, Account.id == w.source_id)[0].status == "closed"
    assert len(rows(engine, AuditEvent, AuditEvent.kind == "finalised")) == 1
    # The staged copies of a live transfer already count as the member's data.
    with Session(engine) as session:
        member = session.get(User, w.user_id)
        assert member is not None and member.account_id == w.org_id
        counts = {c.category.value: c.items for c in category_counts(session, member)}
    assert counts == MOVED


async def test_past_finalise_no_attempt_writes_and_no_undo_removes(env, fin, engine, settings):
    w = await transferred_world(env, engine, settings)
    acts = TransferActivities(settings, engine)
    stale, _ = acts._claim(transfer(w, Category.CHAT), env.info.scheduled_time)
    await env.run(fin.finalise, finalise_req(w))
    with pytest.raises(ApplicationError) as err:  # a batch of an attempt from before
        acts._copy_batch(transfer(w, Category.CHAT), stale)
    assert err.value.type == ERR_TRANSFER_SUPERSEDED
    # A late retry finds the transfer live: copies nothing, reports what moved.
    again = await env.run(acts.transfer_chat, transfer(w, Category.CHAT))
    assert (again.copied, again.inserted, again.batches) == (1500, 0, 0)
    with pytest.raises(ApplicationError) as err:
        await env.run(acts.undo_transfer, UndoTransfer(invitation_id=INVITATION,
                                                       category=Category.CHAT))
    assert err.value.type == ERR_TRANSFER_LIVE and err.value.non_retryable
    assert len(rows(engine, ChatMessage, ChatMessage.invitation_id == INVITATION)) == 1500


async def test_finalise_refuses_an_undone_transfer(env, fin, engine, settings):
    w = await transferred_world(env, engine, settings)
    await env.run(TransferActivities(settings, engine).undo_transfer,
                  UndoTransfer(invitation_id=INVITATION, category=Category.CONTACTS))
    with pytest.raises(ApplicationError) as err:
        await env.run(fin.finalise, finalise_req(w))
    assert err.value.type == ERR_TRANSFER_UNDONE and err.value.non_retryable
    assert {s.state for s in rows(engine, TransferState)} == {"running", "undone"}


async def test_release_source_makes_copies_final_and_removes_the_source_once(
        env, fin, engine, settings):
    w = await transferred_world(env, engine, settings)
    with pytest.raises(ApplicationError) as err:  # not before the point of no return
        await env.run(fin.release_source, release_req(w))
    assert err.value.type == ERR_NOT_FINALISED
    source_files = [settings.recordings_dir / r.path
                    for r in rows(engine, Recording, Recording.account_id == w.source_id)]
    await env.run(fin.finalise, finalise_req(w))
    first = await env.run(fin.release_source, release_req(w))
    assert first.made_final == MOVED and first.source_rows_deleted == MOVED
    assert first.files_deleted == 2
    second = await env.run(fin.release_source, release_req(w))  # idempotent: nothing left
    assert second.made_final == {} and second.source_rows_deleted == {}
    assert second.files_deleted == 0
    for table in CATEGORY_TABLES.values():
        assert rows(engine, table, table.staged == True) == []  # noqa: E712
        assert rows(engine, table, table.account_id == w.source_id) == []
    assert all(not f.exists() for f in source_files)
    for r in rows(engine, Recording):  # the live copies, verified
        data = (settings.recordings_dir / r.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r.sha256
    assert {s.state for s in rows(engine, TransferState)} == {"released"}
    assert len(rows(engine, ChatMessage, ChatMessage.account_id == w.org_id,
                    ChatMessage.user_id == w.user_id)) == 1500
    assert len(rows(engine, Report, Report.account_id == w.source_id)) == 2  # never move
    # finalise again after the release: still the same answer, still nothing deleted
    assert (await env.run(fin.finalise, finalise_req(w))).made_live == MOVED


async def test_a_small_invitation_is_released_in_one_write_transaction(
        env, fin, engine, settings):
    """Fewer copies than a batch takes: every category (recordings included, after their
    destination was re-verified) is released, and marked so, in one transaction."""
    w = make_world(engine, settings, meetings=2, recordings=1, chat=5, contacts=2)
    acts = PlatformActivities(settings, engine)
    await claim(env, acts, w)
    await env.run(acts.link_member, link(w))
    await run_all(env, TransferActivities(settings, engine), w)
    await env.run(fin.finalise, finalise_req(w))
    with commits(engine) as n:
        done = await env.run(fin.release_source, release_req(w))
    assert n == [1] and done.batches == 1
    moved = {"profile": 1, "meetings": 2, "recordings": 1, "chat": 5, "contacts": 2,
             "settings": 2}
    assert done.made_final == done.source_rows_deleted == moved and done.files_deleted == 1
    assert {s.state for s in rows(engine, TransferState)} == {"released"}
    for table in CATEGORY_TABLES.values():
        assert rows(engine, table, table.account_id == w.source_id) == []


async def test_a_corrupted_destination_keeps_its_source_file(env, fin, engine, settings):
    """A recording corrupted between copy and release: release re-reads the destination,
    refuses to delete that source, releases everything else, and says which one."""
    w = await transferred_world(env, engine, settings)
    await env.run(fin.finalise, finalise_req(w))
    first, second = sorted(rows(engine, Recording, Recording.staged == True),  # noqa: E712
                           key=lambda r: r.source_id)
    bad = settings.recordings_dir / second.path
    good_bytes = bad.read_bytes()
    bad.write_bytes(b"X" + good_bytes[1:])  # bit rot at the destination
    [source] = rows(engine, Recording, Recording.id == second.source_id)
    with pytest.raises(ApplicationError) as err:
        await env.run(fin.release_source, release_req(w))
    assert err.value.type == ERR_CHECKSUM_MISMATCH and err.value.non_retryable
    assert second.topic in str(err.value) and second.sha256 in str(err.value)
    assert (settings.recordings_dir / source.path).read_bytes() == good_bytes  # kept
    assert rows(engine, Recording, Recording.id == second.source_id)  # its row too
    assert not rows(engine, Recording, Recording.id == first.source_id)  # the good one went
    states = {s.category: s.state for s in rows(engine, TransferState)}
    assert states.pop("recordings") == "live" and set(states.values()) == {"released"}
    # Once an operator restores the destination, a re-run finishes the release.
    bad.write_bytes(good_bytes)
    done = await env.run(fin.release_source, release_req(w))
    assert done.files_deleted == 1 and done.made_final == {"recordings": 1}
    assert not (settings.recordings_dir / source.path).exists()
