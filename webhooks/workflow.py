"""WebhookDeliveryWorkflow: one per endpoint, draining its outbox for as long as it exists.

It looks for pending events (every `poll_seconds` while idle, at once when woken by the
`wake` signal or when an invitation's lane finishes), and delivers each invitation's events
in a lane of their own, strictly one after the other in the order they happened; lanes of
different invitations run side by side. An event is retried with capped exponential backoff
until a day after it was recorded, then marked failed, and the lane moves on to the
invitation's next event. Once the endpoint is removed the workflow ends.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from webhooks.delivery import WebhookActivities
    from webhooks.payloads import DeliverRequest, DeliveryPlan, GiveUp, PendingItem, PendingRequest

LOCAL: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=30),
         "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=500),
                                     maximum_interval=timedelta(seconds=30))}


@workflow.defn(name="WebhookDeliveryWorkflow")
class WebhookDeliveryWorkflow:
    def __init__(self) -> None:
        self._woken = False
        self._lanes: dict[str, asyncio.Task[None]] = {}

    @workflow.signal(name="wake")
    def wake(self) -> None:
        """New events may be waiting: look now rather than at the next poll."""
        self._woken = True

    @workflow.run
    async def run(self, plan: DeliveryPlan) -> None:
        while True:
            self._woken = False
            pending = await workflow.execute_local_activity_method(
                WebhookActivities.pending,
                PendingRequest(endpoint_id=plan.endpoint_id, busy=sorted(self._lanes),
                               limit=plan.batch),
                summary="Look for events to deliver", **LOCAL)
            if not pending.endpoint_exists:
                await self._stop_lanes()
                return
            self._open_lanes(plan, pending.items)
            if self._history_is_long(plan):
                # Lanes stopped here resume in the next run from the outbox, with the
                # same deadline (counted from each event's creation).
                await self._stop_lanes()
                workflow.continue_as_new(plan)
            try:
                await workflow.wait_condition(lambda: self._woken,
                                              timeout=timedelta(seconds=plan.poll_seconds),
                                              timeout_summary="Next look at the outbox")
            except TimeoutError:
                pass

    def _open_lanes(self, plan: DeliveryPlan, items: list[PendingItem]) -> None:
        by_invitation: dict[str, list[PendingItem]] = {}
        for item in items:  # oldest first, so each lane is in the order events happened
            by_invitation.setdefault(item.invitation_id, []).append(item)
        for invitation, queue in by_invitation.items():
            if len(self._lanes) >= plan.max_lanes:
                break
            if invitation not in self._lanes:
                self._lanes[invitation] = asyncio.create_task(
                    self._lane(plan, invitation, queue))

    async def _lane(self, plan: DeliveryPlan, invitation: str, queue: list[PendingItem]) -> None:
        try:
            for item in queue:
                await self._deliver(plan, item)
        finally:
            del self._lanes[invitation]
            self._woken = True  # the invitation may have more events by now

    async def _deliver(self, plan: DeliveryPlan, item: PendingItem) -> None:
        give_up = timedelta(seconds=plan.give_up_seconds)
        # Until a day after the event was recorded; an older one still gets a short try.
        window = max(item.created_at + give_up - workflow.now(),
                     min(give_up, timedelta(minutes=1)))
        try:
            await workflow.execute_activity_method(
                WebhookActivities.deliver, DeliverRequest(delivery_id=item.delivery_id),
                start_to_close_timeout=timedelta(seconds=plan.attempt_timeout_seconds),
                schedule_to_close_timeout=window,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=plan.first_retry_seconds),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=plan.max_retry_seconds)),
                summary=f"Deliver {item.event_type} of {item.invitation_id}")
        except ActivityError:
            await workflow.execute_local_activity_method(
                WebhookActivities.give_up,
                GiveUp(delivery_id=item.delivery_id,
                       reason=f"not delivered within {plan.give_up_seconds:g} s of the event"),
                summary="Give up this event", **LOCAL)

    async def _stop_lanes(self) -> None:
        lanes = list(self._lanes.values())
        for lane in lanes:
            lane.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)

    @staticmethod
    def _history_is_long(plan: DeliveryPlan) -> bool:
        info = workflow.info()
        return (info.get_current_history_length() >= plan.history_limit
                or info.is_continue_as_new_suggested())
