"""A process to kill: runs one chat transfer, either as a Temporal worker (a tiny workflow
that calls `transfer_chat` with a short heartbeat timeout, as the invitation workflow
does) or directly through ActivityEnvironment. Used by tests/test_transfer_resume.py and
bench/bench_resume.py:

    python -m tests.transfer_harness worker ADDRESS TASK_QUEUE DB_URL RECORDINGS_DIR
    python -m tests.transfer_harness activity DB_URL RECORDINGS_DIR TRANSFER_JSON
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from messages.activity_io import Transfer, Transferred

# What the invitation workflow uses for a transfer, with the shortest heartbeat timeout it
# would use: a dead worker is noticed within HEARTBEAT_TIMEOUT.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)


@workflow.defn(name="ChatTransferHarness")
class ChatTransferWorkflow:
    @workflow.run
    async def run(self, t: Transfer) -> Transferred:
        return await workflow.execute_activity(
            "transfer_chat", t, result_type=Transferred,
            start_to_close_timeout=timedelta(minutes=30), heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1),
                                     maximum_interval=timedelta(seconds=2)))


def make_worker(client, settings, engine):  # type: ignore[no-untyped-def]
    from temporalio.worker import Worker

    from activities.transfers import TransferActivities
    from worker import size_thread_pool

    size_thread_pool(54)
    return Worker(client, task_queue=settings.task_queue, workflows=[ChatTransferWorkflow],
                  activities=[TransferActivities(settings, engine).transfer_chat],
                  max_concurrent_activities=50)


async def _worker(address: str, task_queue: str, db_url: str, recordings: str) -> None:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from config import Settings
    from records.db import make_engine

    settings = Settings(database_url=db_url, recordings_dir=Path(recordings),
                        task_queue=task_queue, metrics_port=None)
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    async with make_worker(client, settings, make_engine(db_url)):
        print("ready", flush=True)
        await asyncio.Event().wait()  # until killed


async def _activity(db_url: str, recordings: str, transfer_json: str) -> None:
    from temporalio.testing import ActivityEnvironment

    from activities.transfers import TransferActivities
    from config import Settings
    from records.db import make_engine

    settings = Settings(database_url=db_url, recordings_dir=Path(recordings), metrics_port=None)
    acts = TransferActivities(settings, make_engine(db_url))
    print("ready", flush=True)
    done = await ActivityEnvironment().run(acts.transfer_chat,
                                           Transfer.model_validate_json(transfer_json))
    print(done.model_dump_json(), flush=True)


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    asyncio.run(_worker(*args) if role == "worker" else _activity(*args))
