"""Throughput and history size of paid invitations accepted at once, next to a bare
workflow of the same shape, on one Temporal dev server in one run (issue #13).

    .venv/bin/python bench/bench_flow.py [--n 200] [--concurrency N] [--repeat 2]
        [--server memory|file|HOST:PORT] [--db PATH|URL] [--json]

Starts its own headless dev server (127.0.0.1, a free port, in memory unless
`--server file`; our search attributes), a mail catcher, a temporary SQLite database,
and two worker subprocesses: the production worker (`worker.build_worker`) and one for
the bare shape (bare_shape.py); stack.py starts and stops them. Then, `--repeat` times,
one phase of each kind (bare, project, bare, project, ...), each of `--n` workflows:
  bare     start N `BareInvitationShape`s, then at once the `accept` update on each:
           2 sequential trivial activities (link, refund), 6 in parallel (transfers);
  project  seed N paid individuals (a few rows per category, one small recording),
           `InvitationsClient.invite_many`, then at once `InvitationsClient.accept` with
           the refund destination, so that the whole path runs (check, link, refund,
           6 transfers, finalise, mail).
Throughput is N / (last completion - first accept), completions as the server stamps
them. CPU is read from /proc for the server and each worker process over the whole phase
(first start to last completion), so work moved before the accept still counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bare_shape import BareShape  # noqa: E402
from histories import Histories, read_histories  # noqa: E402
from stack import (  # noqa: E402
    ADMIN,
    KINDS,
    Stack,
    bounded,
    open_stack,
    seed_paid_invitees,
)

from invitations import InvitationsClient, InviteRequest  # noqa: E402
from messages.payloads import AcceptRequest, RefundDestination  # noqa: E402


@dataclass
class Phase:
    kind: str
    round: int
    n: int
    concurrency: int
    window_s: float  # first accept -> last completion (server time)
    completions_per_s: float
    accept_to_done_p50_s: float
    accept_to_done_max_s: float
    events_mean: float
    events_max: int
    workflow_tasks_mean: float
    activities_mean: float
    local_activities_mean: float
    timers_mean: float
    actions_mean: float
    workflow_task_wait_ms: float  # mean scheduled -> started
    activity_wait_ms: float
    cpu_ms_per_invitation: dict[str, float | None]  # server, worker, driver; whole phase
    phase_s: float  # first start -> last completion (wall)
    not_completed: int
    problems: list[str]
    events_by_type: dict[str, float]


def summarise(kind: str, rnd: int, n: int, concurrency: int, accepted_at: dict[str, float],
              h: Histories, cpu0: dict[str, float | None], cpu1: dict[str, float | None],
              phase_s: float, not_completed: int, problems: list[str]) -> Phase:
    first = min(accepted_at.values())
    closed = {w: t.timestamp() for w, t in h.closed_at.items()}
    window = max(closed.values()) - first
    latencies = sorted(closed[w] - accepted_at[w] for w in accepted_at if w in closed)

    def per_invitation(key: str) -> float | None:
        a, b = cpu0.get(key), cpu1.get(key)
        return None if a is None or b is None else round((b - a) * 1000 / n, 1)

    return Phase(
        kind=kind, round=rnd, n=n, concurrency=concurrency, window_s=round(window, 2),
        completions_per_s=round(n / window, 2),
        accept_to_done_p50_s=round(statistics.median(latencies), 2),
        accept_to_done_max_s=round(latencies[-1], 2),
        events_mean=round(statistics.fmean(h.events), 1), events_max=max(h.events),
        workflow_tasks_mean=round(statistics.fmean(h.workflow_tasks), 1),
        activities_mean=round(statistics.fmean(h.activities), 1),
        local_activities_mean=round(statistics.fmean(h.local_activities), 1),
        timers_mean=round(statistics.fmean(h.timers), 1),
        actions_mean=round(statistics.fmean(h.actions), 1),
        workflow_task_wait_ms=round(statistics.fmean(h.workflow_task_waits or [0]) * 1000),
        activity_wait_ms=round(statistics.fmean(h.activity_waits or [0]) * 1000),
        cpu_ms_per_invitation={"server": per_invitation("server"),
                               "worker": per_invitation(f"worker_{kind}"),
                               "driver": per_invitation("driver")},
        phase_s=round(phase_s, 2), not_completed=not_completed, problems=problems[:5],
        events_by_type={t: round(c / len(h.events), 2) for t, c in sorted(h.by_type.items())},
    )


async def bare_phase(stack: Stack, rnd: int, n: int, concurrency: int) -> Phase:
    tag = uuid.uuid4().hex[:6]
    ids = [f"bench-bare-{tag}-{i:05d}" for i in range(n)]
    temporal, tq = stack.temporal, stack.bare_settings.task_queue
    problems: list[str] = []
    accepted_at: dict[str, float] = {}
    cpu0, t0 = stack.cpu(), time.monotonic()

    async def start(wid: str) -> None:
        await temporal.start_workflow(BareShape.run, wid, id=wid, task_queue=tq)

    async def accept(wid: str) -> None:
        accepted_at[wid] = time.time()
        answer = await temporal.get_workflow_handle_for(BareShape.run, wid).execute_update(
            BareShape.accept, RefundDestination.ORIGINAL_PAYMENT_METHOD.value)
        if answer != "accepted":
            problems.append(f"{wid}: accept answered {answer!r}")

    async def done(wid: str) -> None:
        result = await temporal.get_workflow_handle_for(BareShape.run, wid).result()
        if result != "completed":
            problems.append(f"{wid}: ended {result!r}")

    await bounded(ids, concurrency, start)
    await bounded(ids, concurrency, accept)
    await bounded(ids, len(ids), done)
    cpu1, phase_s = stack.cpu(), time.monotonic() - t0
    h = await read_histories(temporal, ids)
    return summarise("bare", rnd, n, concurrency, accepted_at, h, cpu0, cpu1, phase_s,
                     len(problems), problems)


async def wait_for_invitation_emails(stack: Stack, ids: list[str]) -> None:
    from sqlalchemy import func, select

    from records.tables import SentEmail

    column = SentEmail.invitation_id
    query = select(func.count()).select_from(SentEmail).where(
        SentEmail.kind == "invitation", column.in_(ids))  # type: ignore[attr-defined]
    deadline = time.monotonic() + 300
    while True:
        with stack.engine.connect() as conn:
            if conn.execute(query).scalar_one() >= len(ids):
                return
        if time.monotonic() > deadline:
            raise SystemExit("the invitation emails did not all go out in time")
        await asyncio.sleep(0.1)


async def project_phase(stack: Stack, rnd: int, n: int, concurrency: int) -> Phase:
    tag = uuid.uuid4().hex[:6]
    emails = [f"paid.{tag}.{i:05d}@bench.test" for i in range(n)]
    await asyncio.to_thread(seed_paid_invitees, stack, emails)
    client = InvitationsClient(stack.temporal, stack.settings, stack.engine)
    problems: list[str] = []
    accepted_at: dict[str, float] = {}
    refund = AcceptRequest(refund_destination=RefundDestination.ORIGINAL_PAYMENT_METHOD)
    cpu0, t0 = stack.cpu(), time.monotonic()

    async def accept(wid: str) -> None:
        accepted_at[wid] = time.time()
        outcome = await client.accept(wid, refund)
        if outcome.outcome != "accepted":
            problems.append(f"{wid}: accept answered {outcome.outcome}")

    async def done(wid: str) -> None:
        await stack.temporal.get_workflow_handle(wid).result()

    rows = await client.invite_many(
        [InviteRequest(account_id=stack.account_id, invited_by=ADMIN, email=e,
                       first_name="Paid", last_name=f"No{i}", user_type="licensed")
         for i, e in enumerate(emails)], concurrency=concurrency)
    # A row whose bookkeeping failed may still have started its workflow: run it too.
    problems += [f"{r.email}: invite {r.outcome}: {r.error.message}" for r in rows
                 if r.error is not None]
    ids = [r.invitation_id for r in rows if r.invitation_id is not None]
    # An invitee accepts from the invitation email: the burst starts once every email
    # went out (the registrations' CPU still counts in the phase's CPU per invitation).
    await wait_for_invitation_emails(stack, ids)
    await bounded(ids, concurrency, accept)
    await bounded(ids, len(ids), done)
    cpu1, phase_s = stack.cpu(), time.monotonic() - t0
    statuses: dict[str, str] = {}

    async def status(wid: str) -> None:
        statuses[wid] = (await client.status(wid)).status.value

    await bounded(ids, 16, status)
    unfinished = [w for w, s in statuses.items() if s != "completed"]
    problems += [f"{w}: ended {statuses[w]}" for w in unfinished]
    h = await read_histories(stack.temporal, ids)
    return summarise("project", rnd, len(ids), concurrency, accepted_at, h, cpu0, cpu1,
                     phase_s, n - len(ids) + len(unfinished), problems)


# ------------------------------------------------------------------- the run


async def run(args: argparse.Namespace) -> list[Phase]:
    concurrency = args.concurrency or args.n
    phases: list[Phase] = []
    async with open_stack(args.server, args.db, seats=args.n * args.repeat + 10,
                          processes=args.workers) as stack:
        for rnd in range(1, args.repeat + 1):
            for kind in KINDS:
                stack.check_alive()
                phase = bare_phase if kind == "bare" else project_phase
                async with asyncio.timeout(args.timeout):
                    phases.append(await phase(stack, rnd, args.n, concurrency))
                if not args.json:
                    p = phases[-1]
                    print(f"round {rnd} {kind:7}: {p.completions_per_s:6.2f} completions/s, "
                          f"{p.events_mean:.0f} events, {p.not_completed} not completed",
                          file=sys.stderr, flush=True)
    return phases


def mean_of(phases: list[Phase], kind: str, get: Callable[[Phase], float | None]) -> float | None:
    values = [v for p in phases if p.kind == kind and (v := get(p)) is not None]
    return statistics.fmean(values) if values else None


def summary(phases: list[Phase]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in KINDS:
        out[kind] = {
            "completions_per_s": mean_of(phases, kind, lambda p: p.completions_per_s),
            "events_mean": mean_of(phases, kind, lambda p: p.events_mean),
            "events_max": max(p.events_max for p in phases if p.kind == kind),
            "timers_mean": mean_of(phases, kind, lambda p: p.timers_mean),
            "workflow_tasks_mean": mean_of(phases, kind, lambda p: p.workflow_tasks_mean),
            "activities_mean": mean_of(phases, kind, lambda p: p.activities_mean),
            "actions_mean": mean_of(phases, kind, lambda p: p.actions_mean),
            "server_cpu_ms": mean_of(phases, kind, lambda p: p.cpu_ms_per_invitation["server"]),
            "worker_cpu_ms": mean_of(phases, kind, lambda p: p.cpu_ms_per_invitation["worker"]),
        }
    bare, project = out["bare"]["completions_per_s"], out["project"]["completions_per_s"]
    out["ratio"] = round(project / bare, 3) if bare and project else None
    out["ratios_per_round"] = [
        round(p.completions_per_s / b.completions_per_s, 3)
        for b, p in zip([p for p in phases if p.kind == "bare"],
                        [p for p in phases if p.kind == "project"], strict=True)]
    out["bar"] = {"ratio_at_least_0.6": (out["ratio"] or 0) >= 0.6,
                  "events_at_most_70": (out["project"]["events_mean"] or 999) <= 70}
    return out


def print_report(args: argparse.Namespace, phases: list[Phase], total: dict[str, Any],
                 load: tuple[float, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    concurrency = args.concurrency or args.n
    table = Table(title=f"{args.n} invitations per phase, concurrency {concurrency}, "
                        f"dev server {args.server}")
    heads = ["Phase", "Completions/s", "Window s", "Accept->done p50 s", "Events mean/max",
             "WF tasks", "Activities", "Local act.", "Actions~", "WFT wait ms",
             "Act. wait ms", "Server CPU ms/inv",
             "Worker CPU ms/inv", "Not done"]
    for h in heads:
        table.add_column(h, justify="left" if h == "Phase" else "right")
    md = ["| " + " | ".join(heads) + " |", "|---" + "|---:" * (len(heads) - 1) + "|"]
    for p in phases:
        cells = [f"{p.kind} {p.round}", f"{p.completions_per_s:.1f}", f"{p.window_s:.1f}",
                 f"{p.accept_to_done_p50_s:.1f}", f"{p.events_mean:.0f} / {p.events_max}",
                 f"{p.workflow_tasks_mean:.1f}", f"{p.activities_mean:.1f}",
                 f"{p.local_activities_mean:.1f}", f"{p.actions_mean:.1f}",
                 f"{p.workflow_task_wait_ms:.0f}", f"{p.activity_wait_ms:.0f}",
                 ms(p.cpu_ms_per_invitation["server"]), ms(p.cpu_ms_per_invitation["worker"]),
                 str(p.not_completed)]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    console = Console(width=None if sys.stdout.isatty() else 220)
    console.print(table)
    b, p = total["bare"], total["project"]
    ratio = total["ratio"]
    console.print(
        f"Project {p['completions_per_s']:.1f}/s vs bare {b['completions_per_s']:.1f}/s: "
        f"ratio {ratio:.2f}x (per round: {', '.join(f'{r:.2f}' for r in total['ratios_per_round'])}"
        f"; issue #13 bar >= 0.6: {'met' if total['bar']['ratio_at_least_0.6'] else 'NOT met'})"
        if ratio else "No ratio: a phase completed nothing.")
    console.print(
        f"Events per paid invitation: mean {p['events_mean']:.0f}, max {p['events_max']}, "
        f"{p['timers_mean']:.2f} timers each (the accept came after the wait began) "
        f"(bare {b['events_mean']:.0f}; bar mean <= 70: "
        f"{'met' if total['bar']['events_at_most_70'] else 'NOT met'}).")
    console.print(
        f"CPU per invitation, whole phase: server {ms(p['server_cpu_ms'])} ms vs bare "
        f"{ms(b['server_cpu_ms'])} ms; worker {ms(p['worker_cpu_ms'])} ms vs bare "
        f"{ms(b['worker_cpu_ms'])} ms (worker = its own subprocess, read from /proc).")
    for phase in phases:
        for problem in phase.problems:
            console.print(f"[yellow]{phase.kind} {phase.round}: {problem}[/yellow]")
    console.print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
                  f"{platform.python_version()}; load average {load[0]:.2f} before, "
                  f"{load[1]:.2f} after (1 min).")
    print("\nMarkdown:\n" + "\n".join(md))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="invitations per phase")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="starts/accepts in flight (default: all N at once)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of (bare, project); the ratio is over all of them")
    parser.add_argument("--server", default="memory",
                        help="memory or file: own dev server (in memory, or a SQLite file "
                             "in the temp dir); HOST:PORT: a running server with our search "
                             "attributes (its CPU is not measured)")
    parser.add_argument("--db", default=None,
                        help="platform database: SQLite path or SQLAlchemy URL "
                             "(default: a SQLite file in a temp dir)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per phase")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes per kind, the same for both (default: one "
                             "per CPU, as worker.py runs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.n < 1 or args.repeat < 1 or args.workers < 1:
        parser.error("--n, --repeat and --workers must be at least 1")
    # SIGTERM as Ctrl-C: asyncio.run then cancels the run, whose `finally`s stop the stack.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    load0 = os.getloadavg()[0]
    try:
        phases = asyncio.run(run(args))
    except KeyboardInterrupt:
        raise SystemExit("interrupted: the servers and workers it started are stopped") from None
    total = summary(phases)
    load = (load0, os.getloadavg()[0])
    if args.json:
        print(json.dumps({"args": vars(args), "summary": total, "load_average": load,
                          "cpus": os.cpu_count(), "phases": [asdict(p) for p in phases]},
                         indent=2, default=str))
    else:
        print_report(args, phases, total, load)


if __name__ == "__main__":
    main()
