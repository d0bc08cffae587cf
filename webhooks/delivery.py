"""The delivery activities: read the outbox, POST one event, give one up.

`deliver` is safe to run twice: a row already delivered (or failed, or gone with its
endpoint) is not sent again; a POST that reached the endpoint but whose outcome was not
recorded is sent again with the same webhook-id (at-least-once; receivers dedupe on it).
Every attempt updates the endpoint's visible state (last status, last error, consecutive
failures) in one statement.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine, Table, select, update
from temporalio import activity
from temporalio.exceptions import ApplicationError

from config import Settings
from records.db import write_transaction
from webhooks import signing
from webhooks.errors import InvalidWebhookUrl
from webhooks.payloads import (
    Delivered,
    DeliverRequest,
    GiveUp,
    Pending,
    PendingItem,
    PendingRequest,
)
from webhooks.tables import DeliveryState, WebhookDelivery, WebhookEndpoint
from webhooks.urls import pinned

ENDPOINTS: Table = WebhookEndpoint.__table__  # type: ignore[attr-defined]
DELIVERIES: Table = WebhookDelivery.__table__  # type: ignore[attr-defined]
POST_TIMEOUT_SECONDS = 10.0
ERROR_LIMIT = 500  # characters of an error kept on the rows
ERR_NOT_DELIVERED = "WebhookNotDelivered"


class WebhookActivities:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

    @activity.defn(name="webhook_pending")
    async def pending(self, req: PendingRequest) -> Pending:
        return await asyncio.to_thread(self._pending, req)

    def _pending(self, req: PendingRequest) -> Pending:
        with self.engine.connect() as conn:
            exists = conn.execute(select(ENDPOINTS.c.id).where(
                ENDPOINTS.c.id == req.endpoint_id)).first() is not None
            if not exists:
                return Pending(endpoint_exists=False)
            query = select(DELIVERIES.c.id, DELIVERIES.c.invitation_id,
                           DELIVERIES.c.event_type, DELIVERIES.c.created_at).where(
                DELIVERIES.c.endpoint_id == req.endpoint_id,
                DELIVERIES.c.state == DeliveryState.PENDING)
            if req.busy:
                query = query.where(DELIVERIES.c.invitation_id.not_in(req.busy))
            rows = conn.execute(query.order_by(DELIVERIES.c.id).limit(req.limit)).all()
        return Pending(endpoint_exists=True, items=[
            PendingItem(delivery_id=r.id, invitation_id=r.invitation_id,
                        event_type=r.event_type, created_at=r.created_at) for r in rows])

    @activity.defn(name="webhook_deliver")
    async def deliver(self, req: DeliverRequest) -> Delivered:
        row = await asyncio.to_thread(self._load, req.delivery_id)
        if row is None:
            return Delivered(outcome="endpoint_gone")
        if row.state != DeliveryState.PENDING:
            return Delivered(outcome="already_done")
        status: int | None = None
        try:
            # Checked again at every attempt (the name may resolve elsewhere by now), and
            # sent to the address checked, not to the name resolved once more.
            target = await asyncio.to_thread(pinned, row.url, self.settings)
            timestamp = int(time.time())
            headers = signing.headers(row.secret, row.event_id, timestamp, row.body)
            headers["Host"] = target.host_header
            extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else {}
            async with httpx.AsyncClient(timeout=POST_TIMEOUT_SECONDS,
                                         follow_redirects=False, trust_env=False) as http:
                answer = await http.post(target.url, content=row.body.encode(),
                                         headers=headers, extensions=extensions)
            status = answer.status_code
            error = None if 200 <= status < 300 else f"HTTP {status} from the endpoint"
        except InvalidWebhookUrl as exc:
            error = f"refused: {exc.message}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        await asyncio.to_thread(self._record_attempt, row, status, error)
        if error is not None:
            raise ApplicationError(error, type=ERR_NOT_DELIVERED)  # retried with backoff
        return Delivered(outcome="delivered", status=status)

    def _load(self, delivery_id: int) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(
                DELIVERIES.c.id, DELIVERIES.c.state, DELIVERIES.c.event_id, DELIVERIES.c.body,
                DELIVERIES.c.endpoint_id, ENDPOINTS.c.url, ENDPOINTS.c.secret,
            ).join(ENDPOINTS, ENDPOINTS.c.id == DELIVERIES.c.endpoint_id).where(
                DELIVERIES.c.id == delivery_id)).first()

    def _record_attempt(self, row: Any, status: int | None, error: str | None) -> None:
        now = datetime.now(UTC)
        error = error[:ERROR_LIMIT] if error else None
        delivery: dict[str, Any] = {"attempts": DELIVERIES.c.attempts + 1,
                                    "last_status": status, "last_error": error}
        endpoint: dict[str, Any] = {"last_attempt_at": now, "last_status": status,
                                    "last_error": error}
        if error is None:
            delivery |= {"state": DeliveryState.DELIVERED, "delivered_at": now}
            endpoint |= {"consecutive_failures": 0, "last_success_at": now}
        else:
            endpoint["consecutive_failures"] = ENDPOINTS.c.consecutive_failures + 1
        with write_transaction(self.engine) as conn:
            conn.execute(update(DELIVERIES).where(
                DELIVERIES.c.id == row.id,
                DELIVERIES.c.state == DeliveryState.PENDING).values(**delivery))
            conn.execute(update(ENDPOINTS).where(
                ENDPOINTS.c.id == row.endpoint_id).values(**endpoint))

    @activity.defn(name="webhook_give_up")
    async def give_up(self, req: GiveUp) -> None:
        await asyncio.to_thread(self._give_up, req)

    def _give_up(self, req: GiveUp) -> None:
        """Mark the event failed (visible in `webhook list`); later events still go."""
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(DELIVERIES.c.last_error).where(
                DELIVERIES.c.id == req.delivery_id)).first()
            if row is None:
                return
            reason = f"{req.reason}; last error: {row.last_error}" if row.last_error \
                else req.reason
            conn.execute(update(DELIVERIES).where(
                DELIVERIES.c.id == req.delivery_id,
                DELIVERIES.c.state == DeliveryState.PENDING,
            ).values(state=DeliveryState.FAILED, last_error=reason[:ERROR_LIMIT]))
