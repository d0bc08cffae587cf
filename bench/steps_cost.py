"""CPU per call of the worker's database steps, outside any worker: N paid invitees on a
temporary SQLite file (or --db URL), each step run through ActivityEnvironment for every
invitee in the workflow's order (register, check, link, pay, the transfers, finalise,
release), then once more (a retry: idempotent). Prints CPU ms per call (process_time) and
SQL statements per call (BEGIN included), the first run's and a retry's.

    PYTHONPATH=. .venv/bin/python bench/steps_cost.py [--n 200] [--db URL] [--repeat 3]
        [--profile STEP]   (cProfile of STEP's first run, top 25 by own time)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlmodel import Session  # noqa: E402
from temporalio.testing import ActivityEnvironment  # noqa: E402

from activities.finalising import FinaliseActivities  # noqa: E402
from activities.platform import PlatformActivities  # noqa: E402
from activities.transfers import TransferActivities  # noqa: E402
from config import Settings  # noqa: E402
from demo.seed import IndividualSpec, create_individual, create_org  # noqa: E402
from messages import activity_io as io  # noqa: E402
from messages.payloads import (  # noqa: E402
    Category,
    InvitationInput,
    InvitationStatus,
    RefundDestination,
    UserType,
)
from records.db import init_db, make_engine  # noqa: E402
from records.ids import invitation_id  # noqa: E402

ADMIN = "admin@steps.test"


class Inline(ThreadPoolExecutor):
    """Runs the activities' threads inline, so that cProfile (main thread only) sees them."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kw: Any) -> Future[Any]:
        done: Future[Any] = Future()
        try:
            done.set_result(fn(*args, **kw))
        except BaseException as err:  # noqa: BLE001  (handed to the awaiting task)
            done.set_exception(err)
        return done


async def main(n: int, db: str | None, repeat: int, profile: str | None = None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="steps-cost-"))
    settings = Settings(database_url=db or f"sqlite:///{tmp / 'platform.db'}",
                        recordings_dir=tmp / "recordings", maildir=tmp / "mail",
                        link_secret=SecretStr("steps"), metrics_port=None)
    engine = make_engine(settings.database_url)
    init_db(engine)
    executed = [0]

    def count(*_: Any) -> None:
        executed[0] += 1

    event.listen(engine, "before_cursor_execute", count)
    now = datetime.now(UTC)
    with Session(engine) as s:
        org = create_org(s, f"Steps {tmp.name}", owner=f"owner.{tmp.name}@steps.test",
                         admins=(ADMIN,), seats=n + 10)
        people = [create_individual(s, settings.recordings_dir, IndividualSpec(
            email=f"p{i}.{tmp.name}@steps.test".lower(), first_name="Paid", last_name="Inv",
            price_minor=1499, period_start=now - timedelta(days=10),
            period_end=now + timedelta(days=20), meetings=2, recordings=1,
            recording_bytes=4096, chat=5, contacts=2, reports=1)) for i in range(n)]
        s.commit()
        org_id = org.id
        who = [(p.email, p.id, p.account_id) for p in people]
    assert org_id is not None
    if profile is not None:
        asyncio.get_running_loop().set_default_executor(Inline())
    env = ActivityEnvironment()
    plat = PlatformActivities(settings, engine)
    fin = FinaliseActivities(settings, engine)
    moves = TransferActivities(settings, engine)
    transfers = {Category.PROFILE: moves.transfer_profile,
                 Category.MEETINGS: moves.transfer_meetings,
                 Category.RECORDINGS: moves.transfer_recordings,
                 Category.CHAT: moves.transfer_chat, Category.CONTACTS: moves.transfer_contacts,
                 Category.SETTINGS: moves.transfer_settings}

    def change(inv: str, status: InvitationStatus, source: int) -> io.StatusChange:
        return io.StatusChange(invitation_id=inv, status=status, at=now, event=status.value,
                               source_account_id=source)

    steps: list[tuple[str, Callable[[str, int, int], Awaitable[Any]]]] = []

    def step(name: str) -> Callable[[Callable[[str, int, int], Awaitable[Any]]], Any]:
        def add(fn: Callable[[str, int, int], Awaitable[Any]]) -> Any:
            steps.append((name, fn))
            return fn
        return add

    def inv(email: str) -> str:
        return invitation_id(org_id, email)

    @step("register")
    async def _register(email: str, user: int, source: int) -> Any:
        return await env.run(plat.register_invitation, io.RegisterInvitation(
            invitation_id=inv(email), invited_at=now, expires_at=now + timedelta(days=30),
            input=InvitationInput(account_id=org_id, invited_by=ADMIN, email=email,
                                  user_type=UserType.LICENSED, group="Sales")))

    @step("check")
    async def _check(email: str, user: int, source: int) -> Any:
        facts = await env.run(plat.check_acceptance, io.AcceptanceCheck(
            invitation_id=inv(email), account_id=org_id, email=email,
            user_type=UserType.LICENSED, group="Sales", at=now))
        assert facts.refusal is None and not facts.blocking, facts
        return facts

    @step("link")
    async def _link(email: str, user: int, source: int) -> Any:
        return await env.run(plat.link_member, io.LinkMember(
            invitation_id=inv(email), account_id=org_id, email=email, first_name="Paid",
            last_name="Inv", user_type=UserType.LICENSED, group="Sales",
            record=change(inv(email), InvitationStatus.TRANSFERRING, source)))

    @step("pay")
    async def _pay(email: str, user: int, source: int) -> Any:
        paid = await env.run(plat.pay_refund, io.PayRefund(
            invitation_id=inv(email), source_account_id=source, org_account_id=org_id,
            destination=RefundDestination.ORIGINAL_PAYMENT_METHOD, at=now))
        assert paid.status == "paid" and paid.amount_minor > 0, paid
        return paid

    @step("transfers(6)")
    async def _transfers(email: str, user: int, source: int) -> Any:
        for category, fn in transfers.items():
            await env.run(fn, io.Transfer(invitation_id=inv(email), category=category,
                                          user_id=user, source_account_id=source,
                                          org_account_id=org_id, group="Sales"))

    @step("finalise")
    async def _finalise(email: str, user: int, source: int) -> Any:
        return await env.run(fin.finalise, io.Finalise(
            invitation_id=inv(email), user_id=user, source_account_id=source,
            org_account_id=org_id, completed=change(inv(email), InvitationStatus.COMPLETED,
                                                    source)))

    @step("release")
    async def _release(email: str, user: int, source: int) -> Any:
        return await env.run(fin.release_source, io.ReleaseSource(
            invitation_id=inv(email), user_id=user, source_account_id=source,
            org_account_id=org_id))

    print(f"{n} invitees, {settings.database_url.split(':', 1)[0]}; CPU ms per call "
          f"(first run | retry, best of {repeat} retries); statements per call (first | retry)")
    for name, fn in steps:
        prof = cProfile.Profile() if name == profile else None
        began, statements = time.process_time(), executed[0]
        if prof is not None:
            prof.enable()
        first = [await fn(*p) for p in who]
        if prof is not None:
            prof.disable()
        cost = (time.process_time() - began) * 1000 / n
        first_sql = (executed[0] - statements) / n
        retries = []
        for _ in range(repeat):  # a retry answers the same and writes nothing new
            began, statements = time.process_time(), executed[0]
            again = [await fn(*p) for p in who]
            retries.append((time.process_time() - began) * 1000 / n)
            retry_sql = (executed[0] - statements) / n
            if name not in ("transfers(6)", "release"):
                assert again == first, (name, again[0], first[0])
        print(f"  {name:13s} {cost:7.3f} | {min(retries):7.3f}   "
              f"{first_sql:5.1f} | {retry_sql:5.1f}")
        if prof is not None:
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    engine.dispose()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--db", help="a database URL (default: a temporary SQLite file)")
    parser.add_argument("--repeat", type=int, default=3, help="retry passes per step")
    parser.add_argument("--profile", metavar="STEP", help="cProfile STEP's first run")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.db, args.repeat, args.profile))
