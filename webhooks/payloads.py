"""Inputs and results of the delivery workflow and its activities (plain pydantic)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class DeliveryPlan(BaseModel):
    """How one endpoint's outbox is drained. Defaults: retries from 5 s doubling to 1 h,
    for a day from the event; outbox checked every `poll_seconds` while idle."""

    endpoint_id: int
    poll_seconds: float = 5.0
    first_retry_seconds: float = 5.0
    max_retry_seconds: float = 3600.0
    give_up_seconds: float = 86400.0
    attempt_timeout_seconds: float = 30.0  # the POST itself times out after 10 s
    max_lanes: int = 20  # invitations delivered side by side (each in order)
    batch: int = 200
    history_limit: int = 5000  # then continue as new


class PendingRequest(BaseModel):
    endpoint_id: int
    busy: list[str] = []  # invitations whose lane is running: their rows wait for it
    limit: int = 200


class PendingItem(BaseModel):
    delivery_id: int
    invitation_id: str
    event_type: str
    created_at: datetime


class Pending(BaseModel):
    endpoint_exists: bool
    items: list[PendingItem] = []  # oldest first


class DeliverRequest(BaseModel):
    delivery_id: int


class Delivered(BaseModel):
    outcome: Literal["delivered", "already_done", "endpoint_gone"]
    status: int | None = None


class GiveUp(BaseModel):
    delivery_id: int
    reason: str
