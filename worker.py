"""The worker: runs InvitationWorkflow and every activity on the invitations task queue.

    python worker.py            # uses Settings (INVITES_* env vars, .env)

Prometheus metrics (Temporal's own and ours) are served on settings.metrics_port.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
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
        activities=activities if activities is not None else build_activities(settings, engine),
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


def make_runtime(settings: Settings) -> Runtime:
    if not settings.metrics_port:
        return Runtime(telemetry=TelemetryConfig())
    return Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(bind_address=f"127.0.0.1:{settings.metrics_port}"),
    ))


async def main() -> None:
    settings = get_settings()
    # Before anything else: the worker signs the links it mails with this secret.
    require_production_secrets(settings, "the worker")
    configure_logging(json_output=settings.log_json, secrets=secrets_to_mask(settings))
    engine = engine_from(settings)
    init_db(engine)
    runtime = make_runtime(settings)
    client = await connect_temporal(settings, runtime=runtime)
    worker = build_worker(client, settings, engine)
    from domains.schedule import ensure_domain_check_schedule

    await ensure_domain_check_schedule(client, settings)  # idempotent: every start
    from webhooks.starting import ensure_all

    await ensure_all(client, settings, engine)  # idempotent: a delivery workflow per endpoint
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %s (metrics on :%s)", settings.task_queue,
             settings.metrics_port)
    async with worker:
        await stop.wait()
    log.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
