"""The webhook tables: endpoints, and the outbox of deliveries (one row per event and
endpoint, written in the transaction that records the event)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from records.types import UTCDateTime


class DeliveryState:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # not delivered within the give-up window (a day)


class WebhookEndpoint(SQLModel, table=True):
    """Where one account's events go. `events` empty means every event. The delivery
    outcome columns are what `webhook list` shows: kept by the delivery activity."""

    __tablename__ = "webhook_endpoint"
    __table_args__ = (UniqueConstraint("account_id", "url", name="uq_webhook_endpoint_url"),)
    id: int | None = Field(default=None, primary_key=True)
    # Indexed: record_change asks "does this account have endpoints?" on every change.
    account_id: int = Field(foreign_key="account.id", index=True)
    url: str
    secret: str  # whsec_<base64>: the signing key, shown once at registration
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_by: str
    created_at: datetime = Field(sa_type=UTCDateTime)
    last_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_success_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_status: int | None = None  # HTTP status of the last attempt (None: no answer)
    last_error: str | None = None  # why the last attempt failed (None after a success)
    consecutive_failures: int = 0


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint. `id` order is the order events happened in, per
    invitation (one recording transaction after the other). `body` is frozen at insert:
    every retry sends the same bytes under the same `event_id` (the webhook-id)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_delivery_event"),
        Index("ix_webhook_delivery_queue", "endpoint_id", "state", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: int = Field(foreign_key="webhook_endpoint.id")
    event_id: str
    event_type: str
    invitation_id: str
    body: str = Field(sa_column=Column(Text, nullable=False))
    state: str = DeliveryState.PENDING
    created_at: datetime = Field(sa_type=UTCDateTime)
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
