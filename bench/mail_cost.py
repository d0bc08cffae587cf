"""CPU per message of the worker's mail path (activities/mail.py), measured alone.

    PYTHONPATH=. .venv/bin/python bench/mail_cost.py [--invitations 100] [--rounds 7] [--profile]

The real send path: `MailActivities.send_emails` (render, build, flatten, SMTP over
aiosmtplib with the kept connection, the SentEmail bookkeeping) against the project's mail
catcher (`mailcatcher.start_catcher`, 127.0.0.1, a free port) and a temporary SQLite
database. Each invitation sends what a paid one does, in its three batches: invitation;
admin accepted; refund receipt + completion + admin completed (5 messages). The catcher
runs in a child process, so this process's CPU (`os.times()`: all threads, the event
loop's and the database's; user + system, and user alone) is the sender's only. After a
warm-up, rounds are timed one by one: the minimum is the steadiest figure on a busy
machine, the median is shown beside it. System time is mostly the loopback TCP stack.
`--profile` prints the top functions instead (cProfile, cumulative; the database calls
run inline there, so that they are seen).

Measured (--rounds 15, 2-CPU VM with other work on it, four runs alternated with the tree
before the mail changes, 904d5e5): min CPU per message 1160-1460 us before, 700-880 us
after (medians 1240-1660 -> 900-1180 us). Those "after" figures include the SentEmail
bookkeeping run on the driver's cursor (about 70 us per message less), which was not
kept: the bookkeeping stays on SQLAlchemy Core statements. What is left is mostly
aiosmtplib and the event loop (~330 us: four commands and replies per message, a NOOP per
batch), Jinja (~67 us), the two database calls and their thread hops.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import os
import pstats
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402

from activities.mail import MailActivities  # noqa: E402
from bench.stack import free_port  # noqa: E402
from config import Settings  # noqa: E402
from messages.payloads import (  # noqa: E402
    Category,
    CategoryProgress,
    EmailBatch,
    EmailKind,
    EmailRequest,
    InvitationStatus,
    Payment,
    Progress,
    RefundQuote,
    SettingChange,
    UserType,
)
from records.db import init_db, make_engine  # noqa: E402

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ADMIN = "admin@bench.test"
BATCHES = ((EmailKind.INVITATION,), (EmailKind.ADMIN_ACCEPTED,),
           (EmailKind.REFUND_RECEIPT, EmailKind.COMPLETION, EmailKind.ADMIN_COMPLETED))


def catcher(port: int, maildir: Path, stop: object) -> None:
    from mailcatcher import start_catcher

    controller = start_catcher("127.0.0.1", port, maildir)
    stop.wait()  # type: ignore[attr-defined]
    controller.stop()


def progress(n: int) -> Progress:
    quote = RefundQuote(amount_minor=899, currency="USD", price_minor=1499, plan="pro",
                        period_start=NOW - timedelta(days=12), period_end=NOW + timedelta(days=18),
                        at=NOW, seconds_left=1555200, period_seconds=2592000, formula="",
                        payment_method="card 4242")
    email = f"paula.{n}@example.com"
    return Progress(
        invitation_id=f"invitation-1-{email}", status=InvitationStatus.COMPLETED, account_id=1,
        account_name="Acme & Co", invited_by=ADMIN, email=email, first_name="Paula",
        last_name="Paid", user_type=UserType.LICENSED, message="Welcome aboard!",
        invited_at=NOW, expires_at=NOW + timedelta(days=30), accepted_at=NOW,
        finished_at=NOW, quote=quote,
        payment=Payment(idempotency_key=f"refund:{n}", amount_minor=899, currency="USD",
                        destination="account_credit", status="paid"),
        categories={c: CategoryProgress(category=c, state="live", total=4, copied=4)
                    for c in Category},
        settings_changed=[SettingChange(key="cloud_recording", old=False, new=True,
                                        why="locked by account Acme & Co")])


def batches(n: int) -> list[EmailBatch]:
    p = progress(n)
    return [EmailBatch(messages=[EmailRequest(
        message_key=f"{p.invitation_id}:run:{kind.value}:1", kind=kind,
        to=ADMIN if kind.value.startswith("admin_") else p.email, invitation_id=p.invitation_id,
        progress=p.model_copy(deep=True), issued_at=NOW, admin_email=ADMIN) for kind in kinds])
        for kinds in BATCHES]


async def run(acts: MailActivities, invitations: range,
              profile: cProfile.Profile | None = None) -> tuple[int, float, float]:
    """(messages sent, CPU seconds of this process while sending them: user + system,
    user only)."""
    todo = [batch for n in invitations for batch in batches(n)]  # built before the clock
    if profile:
        profile.enable()
    start = os.times()
    for batch in todo:
        results = await acts.send_emails(batch)
        assert all(r.sent for r in results)
    end = os.times()
    if profile:
        profile.disable()
    user = end.user - start.user
    return (sum(len(batch.messages) for batch in todo), user + end.system - start.system,
            user)


async def inline(fn: Callable[..., Any], /, *args: Any) -> Any:
    return fn(*args)  # --profile: the database calls on this thread, seen by cProfile


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mail-cost-"))
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'platform.db'}", recordings_dir=tmp / "recordings",
        maildir=tmp / "mail", smtp_host="127.0.0.1", smtp_port=free_port(),
        link_secret=SecretStr("bench-secret"), public_base_url="http://127.0.0.1:8000",
        metrics_port=None)
    engine = make_engine(settings.database_url)
    init_db(engine)
    stop = multiprocessing.Event()
    child = multiprocessing.Process(target=catcher, args=(settings.smtp_port, settings.maildir,
                                                          stop))
    child.start()
    await asyncio.sleep(1.0)  # the catcher is listening
    try:
        acts = MailActivities(settings, engine)
        await run(acts, range(args.invitations // 4))  # warm-up, not counted
        rounds = [range(args.invitations * r, args.invitations * (r + 1))
                  for r in range(1, args.rounds + 1)]
        if args.profile:
            asyncio.to_thread = inline  # type: ignore[assignment]
            await run(acts, rounds[0], prof := cProfile.Profile())
            pstats.Stats(prof).sort_stats("cumulative").print_stats(50)
            return
        timed = [await run(acts, todo) for todo in rounds]
        for what, i in (("CPU", 1), ("of which user", 2)):
            us = sorted(t[i] * 1e6 / t[0] for t in timed)
            print(f"{what} per message: min {us[0]:.0f} us, median "
                  f"{statistics.median(us):.0f} us", end="; " if i == 1 else "\n")
    finally:
        stop.set()
        child.join()
        engine.dispose()
        shutil.rmtree(tmp)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invitations", type=int, default=100, help="per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    asyncio.run(main(parser.parse_args()))
