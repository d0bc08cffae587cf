"""The worker: runs InvitationWorkflow and every activity on the invitations task queue.

    python worker.py                  # uses Settings (INVITES_* env vars, .env)
    python worker.py --processes 1    # one process only (default: one per CPU)

A Python worker runs its workflow tasks and local activities on one CPU (the GIL), so by
default this starts one process per CPU it may run on (`--processes N`, or
INVITES_WORKER_PROCESSES, to choose). This process starts the others, which poll the same
task queue, die with it, and are stopped with it; process i serves metrics on
metrics_port + i.

Prometheus metrics (Temporal's own and ours) are served on settings.metrics_port.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import inspect
import logging
import os
import signal
import subprocess
import sys
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from config import (
    Settings,
    connect_temporal,
    get_settings,
    require_production_secrets,
    secrets_to_mask,
)
from observability import configure_logging
from records.db import engine_from, init_db

log = logging.getLogger("worker")


def activity_methods(*objects: object) -> list[Callable[..., Any]]:
    """Every @activity.defn method of the given activity-class instances."""
    found: list[Callable[..., Any]] = []
    for obj in objects:
        for _, member in inspect.getmembers(obj, inspect.ismethod):
            if hasattr(member, "__temporal_activity_definition"):
                found.append(member)
    return found


def build_activities(settings: Settings, engine: Engine) -> list[Callable[..., Any]]:
    from activities.domain_sweep import DomainSweepActivities
    from activities.finalising import FinaliseActivities
    from activities.mail import MailActivities
    from activities.platform import PlatformActivities
    from activities.transfers import TransferActivities
    from domains.activities import DomainActivities
    from webhooks.delivery import WebhookActivities

    return activity_methods(
        PlatformActivities(settings, engine),
        DomainActivities(settings, engine),
        WebhookActivities(settings, engine),
        TransferActivities(settings, engine),
        FinaliseActivities(settings, engine),
        MailActivities(settings, engine),
        DomainSweepActivities(settings, engine),  # issue #14: domain sweeps
    )


# The executor size installed per event loop (so building several workers on one loop, as
# the tests do, replaces it only to grow it).
_SIZED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


def size_thread_pool(threads: int) -> None:
    """Activities run their blocking database and file work on the running loop's default
    executor (asyncio.to_thread, run_in_executor(None)). Python sizes it min(32, cpus + 4):
    6 threads on 2 cores for 50 concurrent activities, so activities would wait for a
    thread while holding their slot. Give it one thread per (local) activity slot, plus a
    few. Most of them wait (on SQLite, for the writers' mutex: records/db.py)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # built outside a loop: whoever runs the worker sizes its own loop
    if _SIZED.get(loop, 0) >= threads:
        return
    loop.set_default_executor(ThreadPoolExecutor(max_workers=threads,
                                                 thread_name_prefix="activity"))
    _SIZED[loop] = threads


def build_worker(
    client: Client, settings: Settings, engine: Engine, *, task_queue: str | None = None,
    activities: list[Callable[..., Any]] | None = None, **kwargs: Any,
) -> Worker:
    from webhooks.workflow import WebhookDeliveryWorkflow
    from workflows.domain import DomainWorkflow
    from workflows.domain_check import DomainCheckWorkflow
    from workflows.invitation import InvitationWorkflow

    max_concurrent_activities = kwargs.pop("max_concurrent_activities", 50)
    # The SDK's default, made explicit: local activities (the bookkeeping, check, link and
    # refund steps) run on the same executor as activities, so the pool counts them too.
    # With threads for activities only, the local activities on every invitation's
    # critical path queued behind transfers for a thread (~0.4 s each under a burst).
    max_concurrent_local_activities = kwargs.pop("max_concurrent_local_activities", 100)
    size_thread_pool(max_concurrent_activities + max_concurrent_local_activities + 4)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[InvitationWorkflow, DomainCheckWorkflow, DomainWorkflow,
                   WebhookDeliveryWorkflow],
        activities=with_quick_join(
            activities if activities is not None else build_activities(settings, engine)),
        max_concurrent_activities=max_concurrent_activities,
        max_concurrent_local_activities=max_concurrent_local_activities,
        # No sandbox in production: in temporalio 1.35 the sandbox runs code through
        # `exec` for every payload list of every activation (the serialization context),
        # ~20% of the worker's CPU per invitation (bench/README.md). Determinism is still
        # guarded where it is decided: every committed history replays in the sandbox
        # (tests/test_replay*.py), which refuses a non-deterministic call on any path.
        workflow_runner=UnsandboxedWorkflowRunner(),
        **kwargs,
    )


def with_quick_join(activities: list[Callable[..., Any]]) -> list[Callable[..., Any]]:
    """Add `join_quick` (activities/quick_join.py), built on the activity functions in this
    list (so a replaced step is the one it calls). Left out when the list lacks a step it
    needs or has its own: the workflow then runs each step alone."""
    from activities.quick_join import QUICK_JOIN, QuickJoinActivities, needed_steps

    by_name = {defn.name: fn for fn in activities
               if (defn := getattr(fn, "__temporal_activity_definition", None)) is not None}
    if QUICK_JOIN in by_name or not all(name in by_name for name in needed_steps()):
        return activities
    return [*activities, QuickJoinActivities(by_name).join_quick]


def make_runtime(settings: Settings) -> Runtime:
    if not settings.metrics_port:
        return Runtime(telemetry=TelemetryConfig())
    return Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(bind_address=f"127.0.0.1:{settings.metrics_port}"),
    ))


def process_count(settings: Settings, flag: int | None) -> int:
    """The flag, else the setting; 0 is one per CPU this process may run on (its
    affinity: a container's cpuset, not the host's count)."""
    wanted = settings.worker_processes if flag is None else flag
    if wanted > 0:
        return wanted
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return len(usable) if usable else (os.cpu_count() or 1)


def start_sibling(index: int) -> subprocess.Popen[bytes]:
    """Process index+1 of this worker (the same command, `--sibling index`)."""
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--sibling", str(index)],
        env={**os.environ, "INVITES_WORKER_PARENT_PID": str(os.getpid())})


def start_siblings(count: int) -> list[subprocess.Popen[bytes]]:
    return [start_sibling(i) for i in range(1, count)]


async def keep_siblings(siblings: list[subprocess.Popen[bytes]], stop: asyncio.Event,
                        every: float = 1.0) -> None:
    """A sibling that exits while this process runs is started again (after `every` s)."""
    while not stop.is_set():
        for i, proc in enumerate(siblings):
            if proc.poll() is not None and not stop.is_set():
                log.error("worker process %d exited with code %s: starting it again",
                          i + 2, proc.returncode)
                siblings[i] = start_sibling(i + 1)
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except TimeoutError:
            pass


def die_with_parent() -> None:
    """A sibling is stopped (SIGTERM) when the process that started it dies, even by
    SIGKILL (Linux prctl PR_SET_PDEATHSIG); elsewhere it is stopped on a clean exit only.
    If that process is already gone, this one leaves at once."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if str(os.getppid()) != os.environ.get("INVITES_WORKER_PARENT_PID"):
        raise SystemExit(0)


def stop_siblings(siblings: list[subprocess.Popen[bytes]]) -> None:
    for proc in siblings:
        if proc.poll() is None:
            proc.terminate()
    for proc in siblings:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def main() -> None:
    parser = argparse.ArgumentParser(description="The invitations worker.")
    parser.add_argument("--processes", type=int, default=None,
                        help="worker processes on this machine, 0 = one per CPU "
                             "(default: INVITES_WORKER_PROCESSES, 0)")
    parser.add_argument("--sibling", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes is not None and args.processes < 0:
        parser.error("--processes: must be 0 (one per CPU) or more")
    if args.sibling:
        die_with_parent()
    settings = get_settings()
    # Before anything else: the worker signs the links it mails with this secret.
    require_production_secrets(settings, "the worker")
    configure_logging(json_output=settings.log_json, secrets=secrets_to_mask(settings))
    if args.sibling:
        if settings.metrics_port:
            settings = settings.model_copy(
                update={"metrics_port": settings.metrics_port + args.sibling})
    engine = engine_from(settings)
    init_db(engine)
    runtime = make_runtime(settings)
    client = await connect_temporal(settings, runtime=runtime)
    worker = build_worker(client, settings, engine)
    siblings: list[subprocess.Popen[bytes]] = []
    if not args.sibling:
        from domains.schedule import ensure_domain_check_schedule

        await ensure_domain_check_schedule(client, settings)  # idempotent: every start
        from webhooks.starting import ensure_all

        await ensure_all(client, settings, engine)  # idempotent: a delivery workflow per endpoint
        siblings = start_siblings(process_count(settings, args.processes))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker process %d polling task queue %s (metrics on :%s; %d more started)",
             args.sibling + 1, settings.task_queue, settings.metrics_port, len(siblings))
    keeping = asyncio.ensure_future(keep_siblings(siblings, stop))
    try:
        async with worker:
            await stop.wait()
    finally:
        stop.set()
        await keeping
        await asyncio.to_thread(stop_siblings, siblings)
    log.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
