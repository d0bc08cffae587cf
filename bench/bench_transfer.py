"""Chat rows per second: the project's transfer + finalise (the critical path of an
invitation's data) next to one raw `INSERT ... SELECT` of the same rows, same database.

    .venv/bin/python bench/bench_transfer.py [--sizes 10000,100000,1000000]
                                             [--db-url postgresql+psycopg://...]

For each size, in a fresh database (a temporary SQLite file by default; with --db-url the
tables are dropped and created again, so give it a scratch database):
  1. seeds an organisation and an individual with N chat messages (in chunks);
  2. raw      one `INSERT INTO chatmessage (...) SELECT ... FROM chatmessage WHERE
              user_id, account_id, staged` making the same staged copies (same table, same
              indexes, same conflict key); timed; then the raw copies are deleted;
  3. project  in a separate "worker" process (so its peak RSS is the worker's):
              `transfer_chat` (fenced keyset batches, sized by time) then `finalise`, run
              through ActivityEnvironment (no Temporal server: the data path is measured,
              not scheduling), after one small warm-up transfer of another user, as in a
              worker that has been running; then, timed apart, `release_source` (flip the
              copies, delete the sources: after completion, off the critical path).
Each size runs --repeat times (3) on freshly seeded data; the table shows the median raw
time and the run with the median project time (its RSS and release time). Prints rows/s,
the ratio raw time / project time, the worker's peak RSS and the release time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import delete, insert, literal, select, text  # noqa: E402
from sqlmodel import Session, SQLModel  # noqa: E402

from demo.seed import IndividualSpec, create_individual, create_org  # noqa: E402
from records.db import init_db, make_engine  # noqa: E402
from records.tables import ChatMessage  # noqa: E402

INVITATION = "invitation-bench"
SEED_CHUNK = 50_000


def seed(url: str, rows: int) -> dict[str, int]:
    engine = make_engine(url)
    if not url.startswith("sqlite"):
        SQLModel.metadata.drop_all(engine)
    init_db(engine)
    with Session(engine) as session:
        org = create_org(session, seats=10)
        user = create_individual(session, Path(tempfile.gettempdir()),
                                 IndividualSpec(email="bench@example.com", chat=0))
        warm = create_individual(session, Path(tempfile.gettempdir()),
                                 IndividualSpec(email="warmup@example.com", chat=100))
        session.commit()
        ids = {"org": org.id, "user": user.id, "source": user.account_id,
               "warm_user": warm.id, "warm_source": warm.account_id}
    with engine.begin() as conn:
        for start in range(0, rows, SEED_CHUNK):
            conn.execute(insert(ChatMessage), [
                {"account_id": ids["source"], "user_id": ids["user"], "channel": f"c{i % 7}",
                 "body": f"message {i} " + "x" * 40, "sent_at": _t0(i), "staged": False}
                for i in range(start, min(rows, start + SEED_CHUNK))])
    _checkpoint(engine)
    engine.dispose()
    return ids  # type: ignore[return-value]


def _t0(i: int):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i)


def _checkpoint(engine) -> None:  # type: ignore[no-untyped-def]
    """Start each timed phase from a settled database (WAL folded in, statistics fresh)."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        else:
            conn.execute(text("ANALYZE chatmessage"))


def raw_copy(url: str, ids: dict[str, int]) -> float:
    """One INSERT ... SELECT of every row: the floor for copying them in this database."""
    engine = make_engine(url)
    t = ChatMessage.__table__  # type: ignore[attr-defined]
    columns = [c.name for c in t.columns if c.name != "id"]
    overrides = {"account_id": literal(ids["org"]), "invitation_id": literal("raw"),
                 "source_id": t.c.id, "staged": literal(True)}
    rows = select(*[overrides.get(n, t.c[n]) for n in columns]).where(
        t.c.user_id == ids["user"], t.c.account_id == ids["source"], t.c.staged == False)  # noqa: E712
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(insert(t).from_select(columns, rows))
    elapsed = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(delete(t).where(t.c.invitation_id == "raw"))
    _checkpoint(engine)
    engine.dispose()
    return elapsed


def project(url: str, ids: dict[str, int]) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", url, json.dumps(ids)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"the worker process failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def child(url: str, ids: dict[str, int]) -> dict[str, float]:
    """The worker's side: transfer + finalise timed together, release apart."""
    from temporalio.testing import ActivityEnvironment

    from activities.finalising import FinaliseActivities
    from activities.transfers import TransferActivities
    from config import Settings
    from messages.activity_io import Finalise, ReleaseSource, Transfer
    from messages.payloads import Category
    from worker import size_thread_pool

    size_thread_pool(54)
    settings = Settings(database_url=url, recordings_dir=Path(tempfile.gettempdir()),
                        metrics_port=None)
    engine = make_engine(url)
    transfers, finalising = TransferActivities(settings, engine), FinaliseActivities(
        settings, engine)
    env = ActivityEnvironment()
    # Warm up as a long-running worker is (statement caches, threads): one small transfer.
    warm = dict(invitation_id="warm-up", user_id=ids["warm_user"],
                source_account_id=ids["warm_source"], org_account_id=ids["org"])
    await env.run(transfers.transfer_chat, Transfer(category=Category.CHAT, **warm))
    await env.run(finalising.finalise, Finalise(**warm))
    await env.run(finalising.release_source, ReleaseSource(**warm))
    common = dict(invitation_id=INVITATION, user_id=ids["user"],
                  source_account_id=ids["source"], org_account_id=ids["org"])
    started = time.perf_counter()
    done = await env.run(transfers.transfer_chat, Transfer(category=Category.CHAT, **common))
    copied = time.perf_counter()
    await env.run(finalising.finalise, Finalise(**common))
    finalised = time.perf_counter()
    released = await env.run(finalising.release_source, ReleaseSource(**common))
    release_s = time.perf_counter() - finalised
    assert done.copied == done.total and released.made_final["chat"] == done.total
    return {"copy_s": copied - started, "finalise_s": finalised - copied,
            "critical_s": finalised - started, "release_s": release_s, "batches": done.batches,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--db-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per size; the table shows the median of each side")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(child(args.child[0], json.loads(args.child[1])))
        print(json.dumps(result))
        return
    console = Console(width=180)
    table = Table(title=f"Chat transfer vs raw INSERT..SELECT ({platform.machine()}, "
                        f"Python {platform.python_version()})")
    for name in ("Rows", "DB", "Raw s", "Raw rows/s", "Copy s", "Finalise s",
                 "Project s", "Project rows/s", "Ratio", "Batches", "Worker peak RSS MB",
                 "release_source s"):
        table.add_column(name, justify="right")
    lines = []
    for size in [int(s) for s in args.sizes.split(",")]:
        raws, runs = [], []
        for _ in range(args.repeat):  # each run on freshly seeded data
            with tempfile.TemporaryDirectory() as tmp:
                url = args.db_url or f"sqlite:///{tmp}/bench.db"
                ids = seed(url, size)
                raws.append(raw_copy(url, ids))
                runs.append(project(url, ids))
        raw = statistics.median(raws)
        p = sorted(runs, key=lambda r: r["critical_s"])[len(runs) // 2]
        row = [f"{size:,}", url.split(":")[0].split("+")[0], f"{raw:.2f}",
               f"{size / raw:,.0f}", f"{p['copy_s']:.2f}", f"{p['finalise_s']:.3f}",
               f"{p['critical_s']:.2f}", f"{size / p['critical_s']:,.0f}",
               f"{raw / p['critical_s']:.2f}x", str(int(p["batches"])),
               f"{p['rss_mb']:.0f}", f"{p['release_s']:.2f}"]
        table.add_row(*row)
        lines.append("| " + " | ".join(row) + " |")
        console.print(f"{size:,} rows done", style="dim")
    console.print(table)
    print("\n| Rows | DB | Raw s | Raw rows/s | Copy s | Finalise s | Project s | Project rows/s "
          "| Ratio | Batches | Worker peak RSS MB | release_source s |")
    print("|" + "---:|" * 12)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
