"""A domain sweep over 10,000 people: children started per second and history per run.

    .venv/bin/python bench/bench_domain.py [--people 10000] [--window 50] [--page-size 100]
                                           [--history-limit 2000] [--json]

Starts its own headless dev server (127.0.0.1, a free port, in memory, our search
attributes) and a temporary SQLite database; seeds an organisation with a verified claim on
bench-domain.test and `--people` individual accounts on it (plus as many off it, which the
keyset query must pass over); runs a worker in this process with the production
DomainWorkflow and activities; starts an `invite` sweep through `SweepsClient` and times it
until every child invitation was started (the sweep reaches "watching"). The children are
started on a task queue no worker polls: what is measured is the sweep's fan-out (pages,
child starts in a bounded window, records, continue-as-new), not the invitations' own work.
Then it reads the history of every run of the sweep (events and bytes) and stops the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402
from temporalio.client import Client  # noqa: E402

from bench.bench_invite import connect, free_port, start_server, stop_server  # noqa: E402
from config import Settings  # noqa: E402
from demo.seed import create_org  # noqa: E402
from domains.sweep import SweepsClient  # noqa: E402
from domains.tables import ClaimedDomain  # noqa: E402
from messages.domain_sweep import SweepProgress, SweepStatus  # noqa: E402
from records.db import init_db, make_engine, write_session  # noqa: E402
from records.tables import Account, User  # noqa: E402
from worker import build_worker  # noqa: E402

ADMIN = "admin@bench.test"
DOMAIN = "bench-domain.test"


def seed(engine: Any, people: int) -> int:
    with write_session(engine) as s:
        org = create_org(s, "Bench", owner="owner@bench.test", admins=(ADMIN,), seats=10)
        assert org.id is not None
        s.add(ClaimedDomain(account_id=org.id, name=DOMAIN, status="verified", token="t",
                            created_by=ADMIN, verified_at=datetime.now(UTC)))
        s.commit()
        org_id = org.id
    base = 10_000
    with write_session(engine) as s:
        # Interleaved on and off the domain: the keyset pages skip the others in the index.
        total = people * 2
        s.execute(insert(Account), [
            {"id": base + i, "name": f"Person {i}", "kind": "individual", "plan": "basic",
             "paid": False, "licensed_seats": 0, "currency": "USD", "credit_balance_minor": 0,
             "status": "active", "created_at": datetime.now(UTC)} for i in range(total)])
        s.execute(insert(User), [
            {"id": base + i, "account_id": base + i, "role": "owner", "user_type": "basic",
             "first_name": "Person", "last_name": str(i), "created_at": datetime.now(UTC),
             "email": (f"p{i:05d}@{DOMAIN}" if i % 2 == 0 else f"p{i:05d}@elsewhere.test")}
            for i in range(total)])
        s.commit()
    return org_id


async def histories(client: Client, wid: str) -> list[dict[str, int]]:
    runs = []
    async for w in client.list_workflows(f'WorkflowId="{wid}"'):
        history = await client.get_workflow_handle(wid, run_id=w.run_id).fetch_history()
        runs.append({"events": len(history.events), "bytes": len(history.to_json())})
    return runs


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-domain-"))
    port = free_port()
    settings = Settings(database_url=f"sqlite:///{tmp / 'platform.db'}",
                        temporal_address=f"127.0.0.1:{port}", task_queue="bench-domain",
                        recordings_dir=tmp / "recordings", metrics_port=None)
    engine = make_engine(settings.database_url)
    init_db(engine)
    org_id = seed(engine, args.people)
    proc = start_server(port, tmp / "server.log")
    try:
        client = await connect(settings, proc)
        sweeps = SweepsClient(client, settings, engine)
        async with build_worker(client, settings, engine):
            began = time.monotonic()
            wid = await sweeps.start(org_id, ADMIN, DOMAIN, mode="invite", window=args.window,
                                     page_size=args.page_size,
                                     history_limit=args.history_limit,
                                     child_task_queue="bench-domain-children-nobody-polls")
            progress: SweepProgress | None = None
            while True:
                try:
                    progress = await sweeps.status(org_id, DOMAIN)
                except Exception:  # noqa: BLE001  (between two runs: ask again)
                    progress = None
                if progress is not None and (progress.status == SweepStatus.WATCHING
                                             or progress.status.is_final):
                    break
                await asyncio.sleep(0.5)
            seconds = time.monotonic() - began
            runs = await histories(client, wid)
            await client.get_workflow_handle(wid).terminate("benchmark done")
    finally:
        stop_server(proc)
    assert progress is not None and progress.status == SweepStatus.WATCHING, progress
    events = [r["events"] for r in runs]
    return {
        "people": args.people, "window": args.window, "page_size": args.page_size,
        "history_limit": args.history_limit, "seconds": round(seconds, 1),
        "invited": progress.counts.invited, "found": progress.counts.found,
        "children_per_second": round(progress.counts.invited / seconds, 1),
        "runs": len(runs), "max_events_per_run": max(events),
        "mean_events_per_run": round(sum(events) / len(events)),
        "max_history_kib_per_run": round(max(r["bytes"] for r in runs) / 1024),
        "machine": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--history-limit", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("| People | Window | Page | Seconds | Children/s | Runs | Events/run (max, mean) "
              "| History/run (max) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {result['people']:,} | {result['window']} | {result['page_size']} "
              f"| {result['seconds']} | {result['children_per_second']} | {result['runs']} "
              f"| {result['max_events_per_run']:,}, {result['mean_events_per_run']:,} "
              f"| {result['max_history_kib_per_run']:,} KiB |")
