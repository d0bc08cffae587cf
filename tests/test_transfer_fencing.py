"""Unit tier: fenced transfer attempts. A stale attempt (older epoch) cannot commit a batch
once undo_transfer or a newer attempt took the transfer, an undone round never comes back,
and overlapping recording attempts never share or corrupt a file."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import activities.recording_transfer as recording_module
import activities.transfers as transfers_module
from activities.fencing import Cursor
from activities.transfers import TransferActivities
from config import Settings
from messages.activity_io import (
    ERR_TRANSFER_SUPERSEDED,
    ERR_TRANSFER_UNDONE,
    UndoTransfer,
)
from messages.payloads import Category
from records.tables import ChatMessage, Recording
from tests.test_transfers import INVITATION, count, make_world, state, transfer

LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)
UNDO_CHAT = UndoTransfer(invitation_id=INVITATION, category=Category.CHAT)


def scheduled(at: datetime, attempt: int = 1) -> ActivityEnvironment:
    """An activity environment whose attempt the server scheduled at `at`."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, scheduled_time=at,
                                   current_attempt_scheduled_time=at, attempt=attempt)
    return env


def staged(engine: Engine, table: Any = ChatMessage) -> int:
    return count(engine, table, table.invitation_id == INVITATION)


@pytest.fixture
def acts(settings: Settings, engine: Engine) -> TransferActivities:
    return TransferActivities(settings, engine)


async def test_a_batch_in_flight_during_undo_is_removed_by_it(acts, engine, settings,
                                                              monkeypatch):
    """The stale attempt is inside its batch's transaction when the undo starts: the undo
    waits for it, then removes its rows too, and the attempt's next batch is refused."""
    w = make_world(engine, settings, chat=5000)
    t = transfer(w, Category.CHAT, batch_size=1000)
    cursor, _ = acts._claim(t, LONG_AGO)
    inside, release = threading.Event(), threading.Event()
    real_hold = transfers_module.hold

    def hold_then_pause(conn: Any, c: Cursor) -> None:
        real_hold(conn, c)
        inside.set()
        assert release.wait(30)

    monkeypatch.setattr(transfers_module, "hold", hold_then_pause)
    loop = asyncio.get_running_loop()
    batch = loop.run_in_executor(None, acts._copy_batch, t, cursor)
    assert await loop.run_in_executor(None, inside.wait, 30)
    undo = asyncio.ensure_future(scheduled(LONG_AGO + timedelta(hours=1)).run(
        acts.undo_transfer, UNDO_CHAT))
    await asyncio.sleep(0.5)
    assert not undo.done()  # it waits for the batch's transaction
    release.set()
    first = await batch
    assert first is not None and first.inserted == 1000  # committed before the undo...
    assert (await undo).removed == 1000  # ...and removed by it
    monkeypatch.setattr(transfers_module, "hold", real_hold)
    with pytest.raises(ApplicationError) as err:
        acts._copy_batch(t, cursor.at(first.upto, 1000))
    assert err.value.type == ERR_TRANSFER_SUPERSEDED and err.value.non_retryable
    assert staged(engine) == 0 and state(engine).state == "undone"


async def test_an_undone_round_never_comes_back(acts, engine, settings):
    w = make_world(engine, settings, chat=3000)
    t = transfer(w, Category.CHAT)
    round_1 = scheduled(LONG_AGO)
    stale, _ = acts._claim(t, LONG_AGO)  # an attempt that lost its worker
    await round_1.run(acts.transfer_chat, t)  # its retry copied everything
    assert staged(engine) == 3000
    undone_at = LONG_AGO + timedelta(minutes=5)
    assert (await scheduled(undone_at).run(acts.undo_transfer, UNDO_CHAT)).removed == 3000
    # The stale attempt cannot write, and another attempt of the round refuses to start.
    with pytest.raises(ApplicationError) as err:
        acts._copy_batch(t, stale)
    assert err.value.type == ERR_TRANSFER_SUPERSEDED
    with pytest.raises(ApplicationError) as err:
        await scheduled(LONG_AGO + timedelta(minutes=1), attempt=3).run(acts.transfer_chat, t)
    assert err.value.type == ERR_TRANSFER_UNDONE and err.value.non_retryable
    assert staged(engine) == 0
    # The invitation is sent again (a new run, scheduled after the undo): a new round.
    round_2 = await scheduled(undone_at + timedelta(days=1)).run(acts.transfer_chat, t)
    assert round_2.resumed_from is None and round_2.copied == round_2.inserted == 3000
    # The first round's undo, retried late, leaves the new round alone.
    assert (await scheduled(undone_at).run(acts.undo_transfer, UNDO_CHAT)).removed == 0
    assert staged(engine) == 3000 and state(engine).state == "running"


async def test_overlapping_recording_attempts_never_share_a_file(acts, engine, settings,
                                                                 monkeypatch):
    """Attempt A stalls in the middle of writing a recording; attempt B takes over and
    stages everything; A resumes, finishes its own file, and is refused: the staged file is
    B's verified copy throughout, and no temporary file is left."""
    w = make_world(engine, settings, recordings=2, recording_bytes=3 * 1024 * 1024)
    monkeypatch.setattr("activities.recording_files.CHUNK", 256 * 1024)
    t = transfer(w, Category.RECORDINGS)
    paused, go_on = threading.Event(), threading.Event()
    real_copy = recording_module.copy_verified
    a_temp: list[Path] = []

    class StallMidway(threading.Event):
        """Passed as A's stop flag: after 4 chunks it holds the copy until told."""

        def __init__(self, calls: int = 0) -> None:
            super().__init__()
            self.calls = calls

        def is_set(self) -> bool:
            self.calls += 1
            if self.calls == 5:
                paused.set()
                assert go_on.wait(30)
            return False

    def copy(source: Path, temp: Path, expected: str, what: str, stop: Any) -> int:
        if not a_temp:  # the first call is attempt A's
            a_temp.append(temp)
            return real_copy(source, temp, expected, what, StallMidway())
        return real_copy(source, temp, expected, what, stop)

    monkeypatch.setattr(recording_module, "copy_verified", copy)
    attempt_a = asyncio.ensure_future(scheduled(LONG_AGO).run(acts.transfer_recordings, t))
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, paused.wait, 30)
    assert a_temp[0].exists() and a_temp[0].stat().st_size == 4 * 256 * 1024  # half written
    b = await scheduled(LONG_AGO, attempt=2).run(acts.transfer_recordings, t)
    assert b.copied == 2 and b.epoch == 2
    copies = {r.source_id: r for r in _rows(engine)}
    staged_files = {sid: Path(settings.recordings_dir) / r.path for sid, r in copies.items()}
    assert a_temp[0].parent == staged_files[min(copies)].parent
    assert a_temp[0] not in staged_files.values()  # A writes its own file, never B's
    go_on.set()
    with pytest.raises(ApplicationError) as err:
        await attempt_a
    assert err.value.type == ERR_TRANSFER_SUPERSEDED
    for sid, path in staged_files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == copies[sid].sha256
    assert staged(engine, Recording) == 2
    assert temp_files(settings) == []


def _rows(engine: Engine) -> list[Recording]:
    with Session(engine) as session:
        return list(session.exec(select(Recording).where(
            Recording.invitation_id == INVITATION)).all())


def temp_files(settings: Settings) -> list[Path]:
    return list(Path(settings.recordings_dir).rglob("*.part"))


async def test_a_long_batch_heartbeats_and_a_cancel_waits_for_it():
    """in_thread heartbeats while the thread works (a short heartbeat timeout does not take
    a busy worker for a dead one), and a cancel is reported only once the thread returned
    (its transaction is over before an undo can start)."""
    from activities import fencing

    beats: list[Any] = []
    finished = threading.Event()

    def slow() -> str:
        time.sleep(2.5 * fencing.HEARTBEAT_EVERY)
        finished.set()
        return "done"

    env = ActivityEnvironment()
    env.on_heartbeat = lambda *d: beats.append(d)

    async def run_slow() -> str:
        return await fencing.in_thread(slow, details={"checkpoint": 7})

    assert await env.run(run_slow) == "done"
    assert len(beats) >= 2 and beats[0] == ({"checkpoint": 7},)
    finished.clear()
    task = asyncio.ensure_future(env.run(run_slow))
    await asyncio.sleep(0.2)
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()  # the thread had returned when the cancel came out
