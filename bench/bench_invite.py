"""Starts per second: 10,000 invitations from a CSV through the client, next to a bare
`start_workflow` loop at the same concurrency, in one run.

    .venv/bin/python bench/bench_invite.py [--count 10000] [--concurrency 32]

Starts its own headless dev server (127.0.0.1, a free port, in memory, our search
attributes) and a temporary SQLite database, seeds an organisation with enough seats,
writes the CSV, then times, one after the other:
  0. checks   reading the CSV and validating every row, nothing started (for scale);
  1. client   `read_invite_csv` + `InvitationsClient.invite_many` (validation, starts,
              Invitation rows written);
  2. bare     `client.start_workflow` with the same payloads and start options (other ids),
              `concurrency` at a time, nothing else;
  3. re-run   the same CSV again through the client: every row "already pending".
No worker runs: starts are what is measured (the workflows wait for one, untouched).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import func  # noqa: E402
from sqlmodel import Session, select  # noqa: E402
from temporalio.client import Client  # noqa: E402

from config import Settings, connect_temporal  # noqa: E402
from demo.seed import create_org  # noqa: E402
from invitations import InvitationsClient, Outcome  # noqa: E402
from invitations.csvimport import read_invite_csv  # noqa: E402
from invitations.starting import WORKFLOW, start_options  # noqa: E402
from invitations.validation import Inviter, validate  # noqa: E402
from messages import search_attributes  # noqa: E402
from messages.payloads import InvitationInput, UserType  # noqa: E402
from records.db import init_db, make_engine  # noqa: E402
from records.tables import Invitation  # noqa: E402

ADMIN = "admin@bench.test"


@dataclass
class Timing:
    name: str
    what: str
    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, log: Path) -> subprocess.Popen[bytes]:
    temporal = Path(sys.executable).parent / "temporal"
    args = [str(temporal), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
            "--headless", "--log-level", "error", *search_attributes.cli_flags()]
    return subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def connect(settings: Settings, proc: subprocess.Popen[bytes]) -> Client:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the dev server exited with code {proc.returncode}")
        try:
            return await connect_temporal(settings)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def write_csv(path: Path, count: int) -> None:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["email", "first_name", "last_name", "user_type"])
        for i in range(count):
            out.writerow([f"person{i:05d}@example.com", "Person", f"No{i}",
                          "licensed" if i % 2 else "basic"])


async def bare_loop(client: Client, settings: Settings, inputs: list[InvitationInput],
                    inviter: Inviter, concurrency: int) -> None:
    """What a script would do by hand: the same start options, `concurrency` in flight."""
    pending: Iterator[int] = iter(range(len(inputs)))
    expires_at = datetime.now(UTC) + timedelta(days=30)

    async def starter() -> None:
        for i in pending:
            await client.start_workflow(WORKFLOW, inputs[i], **start_options(
                settings, f"bench-bare-{i}", inputs[i], inviter, expires_at))

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(starter())


async def run(count: int, concurrency: int) -> list[Timing]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-invite-"))
    port = free_port()
    settings = Settings(database_url=f"sqlite:///{tmp / 'platform.db'}",
                        temporal_address=f"127.0.0.1:{port}", task_queue="bench-invitations",
                        recordings_dir=tmp / "recordings", metrics_port=None)
    engine = make_engine(settings.database_url)
    init_db(engine)
    with Session(engine) as s:
        org = create_org(s, "Bench", owner="owner@bench.test", admins=(ADMIN,),
                         seats=count + 10)
        s.commit()
        account_id = org.id
    assert account_id is not None
    path = tmp / "people.csv"
    write_csv(path, count)
    proc = start_server(port, tmp / "temporal.log")
    try:
        temporal = await connect(settings, proc)
        client = InvitationsClient(temporal, settings, engine)
        timings = []

        t0 = time.perf_counter()
        rows = read_invite_csv(path, account_id=account_id, invited_by=ADMIN)
        with Session(engine) as s:
            checked = validate(s, rows.requests, settings.invitation_expiry_days)
        timings.append(Timing("client checks", "CSV + validation only (no start)", count,
                              time.perf_counter() - t0))
        assert all(c.error is None for c in checked)

        t0 = time.perf_counter()
        rows = read_invite_csv(path, account_id=account_id, invited_by=ADMIN)
        results = await client.invite_many(rows.requests, concurrency=concurrency)
        timings.append(Timing("client", "CSV + validation + starts + DB rows", count,
                              time.perf_counter() - t0))
        bad = [r for r in results if r.outcome != Outcome.STARTED] + rows.errors
        assert not bad, bad[:3]
        with Session(engine) as s:
            assert s.exec(select(func.count()).select_from(Invitation)).one() == count

        inviter = await client.check_inviter(account_id, ADMIN)
        inputs = [InvitationInput(account_id=account_id, invited_by=ADMIN, email=r.email,
                                  first_name=r.first_name, last_name=r.last_name,
                                  user_type=UserType(r.user_type)) for r in rows.requests]
        t0 = time.perf_counter()
        await bare_loop(temporal, settings, inputs, inviter, concurrency)
        timings.append(Timing("bare", "start_workflow only", count, time.perf_counter() - t0))

        t0 = time.perf_counter()
        rows = read_invite_csv(path, account_id=account_id, invited_by=ADMIN)
        again = await client.invite_many(rows.requests, concurrency=concurrency)
        timings.append(Timing("client re-run", "same CSV: all already pending", count,
                              time.perf_counter() - t0))
        assert all(r.outcome == Outcome.ALREADY_PENDING for r in again)
        return timings
    finally:
        stop_server(proc)
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    timings = asyncio.run(run(args.count, args.concurrency))
    bare = next(t for t in timings if t.name == "bare")
    table = Table(title=f"{args.count:,} invitation starts, concurrency {args.concurrency}")
    for col in ("Run", "What is timed", "Invitations", "Seconds", "Starts/s", "vs bare"):
        table.add_column(col, justify="left" if col in ("Run", "What is timed") else "right")
    md = ["| Run | What is timed | Invitations | Seconds | Starts/s | vs bare |",
          "|---|---|---:|---:|---:|---:|"]
    for t in timings:
        cells = [t.name, t.what, f"{t.count:,}", f"{t.seconds:.1f}", f"{t.per_second:,.0f}",
                 f"{t.per_second / bare.per_second:.2f}x"]
        if t.name == "client checks":  # no start happens: rows per second, not starts
            cells[4:] = [f"({t.per_second:,.0f} rows/s)", "-"]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    console.print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
                  f"{platform.python_version()}, {platform.system()}; dev server in memory, "
                  "no worker.")
    console.print("\nMarkdown:\n" + "\n".join(md), markup=False, highlight=False)


if __name__ == "__main__":
    main()
