"""The Temporal Schedule that runs DomainCheckWorkflow. `ensure_domain_check_schedule` is
idempotent: the first call creates it, later ones (every worker start) bring its interval
and task queue up to date with the settings."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from config import Settings
from domains.payloads import RecheckInput
from workflows.domain_check import DomainCheckWorkflow

SCHEDULE_ID = "domain-check"


def domain_check_schedule(settings: Settings, schedule_id: str = SCHEDULE_ID) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            DomainCheckWorkflow.run, RecheckInput(), id=f"{schedule_id}-run",
            task_queue=settings.task_queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(
            every=timedelta(seconds=settings.domain_recheck_interval_seconds))]),
        # One re-check at a time; a slow one makes the next wait, never pile up.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_domain_check_schedule(client: Client, settings: Settings,
                                       schedule_id: str = SCHEDULE_ID) -> ScheduleHandle:
    schedule = domain_check_schedule(settings, schedule_id)
    try:
        return await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(schedule_id)

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(replace)
        return handle
