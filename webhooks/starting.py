"""Starting an endpoint's delivery workflow (at registration, and at every worker start for
each endpoint, in case a start was missed): idempotent, one workflow per endpoint."""

from __future__ import annotations

import logging

from sqlalchemy import Engine, select
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from config import Settings
from webhooks.payloads import DeliveryPlan
from webhooks.tables import WebhookEndpoint
from webhooks.workflow import WebhookDeliveryWorkflow

log = logging.getLogger(__name__)


def workflow_id(settings: Settings, endpoint_id: int) -> str:
    # The task queue names the stack: two stacks (two databases) sharing a namespace
    # both have an endpoint 1.
    return f"webhooks-{settings.task_queue}-{endpoint_id}"


def plan_for(settings: Settings, endpoint_id: int) -> DeliveryPlan:
    return DeliveryPlan(endpoint_id=endpoint_id, poll_seconds=settings.webhook_poll_seconds)


async def ensure_delivery(client: Client, settings: Settings, endpoint_id: int,
                          plan: DeliveryPlan | None = None) -> None:
    await client.start_workflow(
        WebhookDeliveryWorkflow.run, plan or plan_for(settings, endpoint_id),
        id=workflow_id(settings, endpoint_id), task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Deliver webhooks to endpoint {endpoint_id}")


async def ensure_delivery_or_later(client: Client, settings: Settings,
                                   endpoint_id: int) -> bool:
    """After a registration (committed, its secret about to be shown once): start the
    delivery workflow, or, if Temporal refuses now, leave it to the worker, which starts
    one for every endpoint when it starts (`ensure_all`). Never fails the registration."""
    try:
        await ensure_delivery(client, settings, endpoint_id)
        return True
    except Exception as exc:  # noqa: BLE001 (RPCError, a client that never connected)
        log.warning("webhook endpoint %s registered; its delivery starts with the next "
                    "worker start (Temporal refused now: %s)", endpoint_id, exc)
        return False


async def wake(client: Client, settings: Settings, endpoint_id: int) -> None:
    """Best effort: the workflow finds new events at its next poll anyway."""
    try:
        await client.get_workflow_handle(workflow_id(settings, endpoint_id)).signal(
            WebhookDeliveryWorkflow.wake)
    except Exception:  # noqa: BLE001 (not running: nothing to wake)
        pass


async def ensure_all(client: Client, settings: Settings, engine: Engine) -> int:
    with engine.connect() as conn:
        ids = list(conn.execute(select(WebhookEndpoint.id)).scalars())  # type: ignore[call-overload]
    for endpoint_id in ids:
        await ensure_delivery(client, settings, endpoint_id)
    return len(ids)
