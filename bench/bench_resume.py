"""Exact resume, measured: a worker process is killed (SIGKILL) midway through a chat
transfer, a new worker process is started at once, and the numbers come from the database.

    .venv/bin/python bench/bench_resume.py [--rows 200000] [--kill-at 100000]

Starts its own dev server (in memory, 127.0.0.1, a free port) and a temporary SQLite
database with one invitee holding ROWS chat messages. The worker (tests/transfer_harness.py)
runs a tiny workflow that calls `transfer_chat` with the invitation workflow's options and a
10 s heartbeat timeout. Reports:
  - rows committed at the kill (the batch in flight then is rolled back with its
    checkpoint: it is the only work done twice);
  - rows the new attempt inserted vs rows that were left (equal: nothing committed is copied
    again), and the sum of every attempt's INSERTs vs ROWS (equal: exact);
  - time from the new worker's start until the new attempt resumed (the dead worker's
    heartbeat timeout, then the retry), until the copy finished, and until the workflow
    completed; next to the time the remaining rows take at the first worker's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlmodel import Session, select  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from messages.activity_io import Transfer  # noqa: E402
from messages.payloads import Category  # noqa: E402
from records.db import init_db, make_engine  # noqa: E402
from records.tables import TransferState  # noqa: E402
from tests.transfer_harness import ChatTransferWorkflow  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from bench_transfer import seed  # noqa: E402

INVITATION = "invitation-resume-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def state(engine) -> TransferState | None:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        row = session.exec(select(TransferState).where(
            TransferState.invitation_id == INVITATION)).first()
        if row is not None:
            session.expunge(row)
        return row


def worker(address: str, task_queue: str, url: str, recordings: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.transfer_harness", "worker", address, task_queue, url,
         recordings], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


async def until(check, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll the database (another process writes it: there is nothing to wait on)."""
    while True:
        if found := check():
            return found
        await asyncio.sleep(interval)


async def run(rows: int, kill_at: int) -> None:
    temporal = shutil.which("temporal", path=str(Path(sys.executable).parent)) or "temporal"
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter, dev_server_existing_path=temporal,
        ip="127.0.0.1", port=free_port(), ui=False)
    tmp = tempfile.mkdtemp(prefix="bench-resume-")
    try:
        url = f"sqlite:///{tmp}/bench.db"
        ids = seed(url, rows)
        engine = make_engine(url)
        init_db(engine)
        address, queue = env.client.service_client.config.target_host, f"resume-{uuid.uuid4()}"
        first = worker(address, queue, url, tmp)
        t = Transfer(invitation_id=INVITATION, category=Category.CHAT, user_id=ids["user"],
                     source_account_id=ids["source"], org_account_id=ids["org"])
        started = time.monotonic()
        handle = await env.client.start_workflow(ChatTransferWorkflow.run, t,
                                                 id=f"resume-{uuid.uuid4()}", task_queue=queue)
        await until(lambda: (s := state(engine)) and s.rows_copied >= kill_at)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        first_ran = time.monotonic() - started
        at_kill = state(engine)
        assert at_kill is not None
        second_start = time.monotonic()
        second = worker(address, queue, url, tmp)
        ready = time.monotonic() - second_start
        await until(lambda: state(engine).epoch > at_kill.epoch)  # type: ignore[union-attr]
        resumed = time.monotonic() - second_start
        await until(lambda: state(engine).rows_copied >= rows)  # type: ignore[union-attr]
        copied = time.monotonic() - second_start
        done = await handle.result()
        completed = time.monotonic() - second_start
        second.send_signal(signal.SIGKILL)
        second.wait()
        final = state(engine)
        assert final is not None
        rate = at_kill.rows_copied / first_ran
        left = rows - at_kill.rows_copied
        print(f"rows: {rows:,}; killed after {first_ran:.1f} s with {at_kill.rows_copied:,} "
              f"committed in {at_kill.batches} batches (checkpoint id {at_kill.checkpoint:,})")
        print(f"new attempt: resumed from {done.resumed_from}, inserted {done.inserted:,} of "
              f"the {left:,} rows left; rows re-copied (committed before the kill, copied "
              f"again): {done.inserted - left:,}")
        print(f"every attempt's INSERTs summed: {final.rows_copied:,} (exact: "
              f"{final.rows_copied == rows}); copies: {done.copied:,}")
        print(f"new worker: ready {ready:.1f} s, resumed {resumed:.1f} s, copy finished "
              f"{copied:.1f} s, workflow completed {completed:.1f} s after its start")
        print(f"the {left:,} remaining rows at the first worker's rate "
              f"({rate:,.0f} rows/s): {left / rate:.1f} s; copy after resuming: "
              f"{copied - resumed:.1f} s")
        print("| Rows | Killed at (committed) | Rows re-copied | Remaining | Resumed after | "
              "Copy done after | Workflow done after | Remaining rows at first rate |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {rows:,} | {at_kill.rows_copied:,} | {done.inserted - left:,} | {left:,} | "
              f"{resumed:.1f} s | {copied:.1f} s | {completed:.1f} s | {left / rate:.1f} s |")
    finally:
        await env.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--kill-at", type=int, default=100_000,
                        help="kill the first worker once this many rows are committed")
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.kill_at))
    # Everything is printed and the server stopped; exit without interpreter finalisation,
    # during which the Temporal runtime's native threads aborted the process in our runs.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
