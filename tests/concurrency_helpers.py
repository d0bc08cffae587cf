"""Firing competitors truly at once: threads released by a barrier (activity level), and
worker processes (`python worker.py`) sharing one task queue (workflow level)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from config import Settings
from tests.conftest import free_port

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def at_once(calls: Sequence[Callable[[], T]]) -> list[T | BaseException]:
    """Run every call in its own thread, all released by one barrier; results (or the
    exception raised) in call order."""
    barrier = threading.Barrier(len(calls))
    results: list[T | BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001  (reported to the test)
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a competitor never finished"
    return results  # type: ignore[return-value]


def worker_env(settings: Settings, temporal_address: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVITES_", "TEMPORAL_"))}
    env.update({
        "INVITES_DATABASE_URL": settings.database_url,
        "INVITES_TASK_QUEUE": settings.task_queue,
        "INVITES_WORKER_PROCESSES": "1",  # one process each: the tests count them
        "INVITES_TEMPORAL_ADDRESS": temporal_address,
        "INVITES_RECORDINGS_DIR": str(settings.recordings_dir),
        "INVITES_MAILDIR": str(settings.maildir),
        "INVITES_SMTP_HOST": settings.smtp_host,
        "INVITES_SMTP_PORT": str(settings.smtp_port),
        "INVITES_LINK_SECRET": settings.link_secret.get_secret_value(),
        "INVITES_PUBLIC_BASE_URL": settings.public_base_url,
        "INVITES_DATA_DIR": str(Path(settings.recordings_dir).parent),
    })
    return env


@contextmanager
def worker_processes(settings: Settings, temporal_address: str, n: int = 2,
                     logs: Path | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`n` production worker processes on settings.task_queue; killed on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(n):
            env = worker_env(settings, temporal_address)
            env["INVITES_METRICS_PORT"] = str(free_port())
            out = open(logs / f"worker-{i}.log", "wb") if logs else subprocess.DEVNULL  # noqa: SIM115
            procs.append(subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT, env=env,
                                          stdout=out, stderr=subprocess.STDOUT))
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(timeout=30)


async def wait_for_pollers(client: Client, task_queue: str, n: int, within: float = 60) -> None:
    """Until `n` distinct workers poll the queue for workflow and activity tasks."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        seen = []
        for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                     TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
            resp = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                namespace=client.namespace, task_queue=TaskQueue(name=task_queue),
                task_queue_type=kind))
            seen.append(len({p.identity for p in resp.pollers}))
        if min(seen) >= n:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{n} workers never polled {task_queue}")


def exceptions(results: Sequence[Any]) -> list[BaseException]:
    return [r for r in results if isinstance(r, BaseException)]
