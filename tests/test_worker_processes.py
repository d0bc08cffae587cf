"""`python worker.py --processes N`: one worker process per CPU on one machine (a Python
worker runs its workflows and local activities on one CPU). The first process starts the
others; they poll the same task queue, serve metrics on the next ports, and never outlive
it: stopped with it, and gone when it is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from config import Settings
from tests.concurrency_helpers import ROOT, wait_for_pollers, worker_env
from tests.conftest import free_port
from tests.workflow_helpers import eventually


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _gone(pids: list[int], within: float = 30) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        await asyncio.sleep(0.1)
    return False


def _start(settings: Settings, env_address: str, *args: str,
           default: bool = False) -> subprocess.Popen[bytes]:
    env = worker_env(settings, env_address)
    env["INVITES_METRICS_PORT"] = str(free_port())
    if default:  # as a deployment runs it: no count given
        env.pop("INVITES_WORKER_PROCESSES", None)
    return subprocess.Popen([sys.executable, "worker.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


@contextmanager
def _worker(env: WorkflowEnvironment, settings: Settings, *args: str,
            default: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """`python worker.py ARGS`, stopped at the end (SIGTERM, then SIGKILL) if still up."""
    first = _start(settings, _address(env), *args, default=default)
    try:
        yield first
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
            try:
                first.wait(timeout=60)
            except subprocess.TimeoutExpired:
                first.kill()
                first.wait(timeout=30)


async def test_processes_poll_one_queue_and_die_with_the_first(
    dev_env: WorkflowEnvironment, settings: Settings,
) -> None:
    with _worker(dev_env, settings, "--processes", "2") as first:
        await wait_for_pollers(dev_env.client, settings.task_queue, 2)
        siblings = _children(first.pid)
        assert len(siblings) == 1, siblings
        first.send_signal(signal.SIGKILL)  # no clean stop: the sibling must go anyway
        first.wait(timeout=30)
        assert await _gone(siblings), "a worker process outlived the one that started it"


async def test_a_process_that_dies_is_started_again(
    dev_env: WorkflowEnvironment, settings: Settings,
) -> None:
    with _worker(dev_env, settings, "--processes", "2") as first:
        await wait_for_pollers(dev_env.client, settings.task_queue, 2)
        [sibling] = _children(first.pid)
        os.kill(sibling, signal.SIGKILL)
        assert await _gone([sibling])
        again = await eventually(
            lambda: [p for p in _children(first.pid) if p != sibling and _alive(p)],
            within=60, what="a new worker process")
        assert len(again) == 1


async def test_a_clean_stop_stops_every_process(
    dev_env: WorkflowEnvironment, settings: Settings,
) -> None:
    with _worker(dev_env, settings, "--processes", "3") as first:
        await wait_for_pollers(dev_env.client, settings.task_queue, 3)
        siblings = _children(first.pid)
        assert len(siblings) == 2, siblings
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
        assert await _gone(siblings)


async def test_by_default_one_process_per_usable_cpu(
    dev_env: WorkflowEnvironment, settings: Settings,
) -> None:
    usable = len(os.sched_getaffinity(0))
    with _worker(dev_env, settings, default=True) as first:
        await wait_for_pollers(dev_env.client, settings.task_queue, usable)
        assert len(_children(first.pid)) == usable - 1


def test_a_negative_count_is_refused() -> None:
    done = subprocess.run([sys.executable, "worker.py", "--processes", "-1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "INVITES_LINK_SECRET": "x" * 40})
    assert done.returncode == 2
    assert "--processes: must be 0 (one per CPU) or more" in done.stderr
