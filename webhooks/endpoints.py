"""The webhook endpoints of an account: register (the secret is returned once), list with
delivery state, remove. Used by `starter.py webhook ...` and `/api/v1/webhooks`. Every
check runs before anything is written, and raises a typed error naming the field."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import Engine, Table, delete, func, select
from sqlmodel import Session

from config import Settings
from invitations.validation import check_account_admin
from records.db import insert_for, write_transaction
from records.ids import normalise_email
from webhooks import signing
from webhooks.errors import (
    DuplicateWebhook,
    TooManyWebhooks,
    UnknownWebhookEvent,
    WebhookNotFound,
)
from webhooks.events import EVENT_TYPES, parse_events
from webhooks.tables import DeliveryState, WebhookDelivery, WebhookEndpoint
from webhooks.urls import validate_url

ENDPOINTS: Table = WebhookEndpoint.__table__  # type: ignore[attr-defined]
DELIVERIES: Table = WebhookDelivery.__table__  # type: ignore[attr-defined]
MAX_ENDPOINTS_PER_ACCOUNT = 10  # each one costs a row per event on the recording path


class EndpointView(BaseModel):
    """An endpoint as `webhook list` and the API show it (never its secret)."""

    id: int
    account_id: int
    url: str
    events: list[str]  # what it receives (every event when registered without a filter)
    created_by: str
    created_at: datetime
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    pending: int = 0
    delivered: int = 0
    failed: int = 0


class NewEndpoint(EndpointView):
    secret: str  # whsec_...: shown once, at registration


def check_admin(engine: Engine, account_id: int, by: str) -> None:
    with Session(engine) as session:
        check_account_admin(session, account_id, by, "manage its webhooks")


def add_endpoint(engine: Engine, settings: Settings, *, account_id: int, by: str, url: str,
                 events: list[str] | None = None) -> NewEndpoint:
    url = url.strip()
    try:
        wanted = parse_events(events)
    except ValueError as exc:
        raise UnknownWebhookEvent(f"events: {exc}") from exc
    check_admin(engine, account_id, by)
    validate_url(url, settings)
    secret = signing.new_secret()
    now = datetime.now(UTC)
    with write_transaction(engine) as conn:
        existing = conn.execute(select(ENDPOINTS.c.url).where(
            ENDPOINTS.c.account_id == account_id).with_for_update()).scalars().all()
        if url in existing:
            raise DuplicateWebhook(f"url {url} is already registered for account {account_id}")
        if len(existing) >= MAX_ENDPOINTS_PER_ACCOUNT:
            raise TooManyWebhooks(f"account {account_id} already has "
                                  f"{MAX_ENDPOINTS_PER_ACCOUNT} webhook endpoints; remove one")
        # ON CONFLICT: a concurrent registration of the same URL (PostgreSQL's FOR UPDATE
        # above locks no row when the account has none yet).
        endpoint_id = conn.execute(insert_for(conn, ENDPOINTS).values(
            account_id=account_id, url=url, secret=secret, events=wanted,
            created_by=normalise_email(by), created_at=now, consecutive_failures=0,
        ).on_conflict_do_nothing(index_elements=["account_id", "url"])
            .returning(ENDPOINTS.c.id)).scalar()
        if endpoint_id is None:
            raise DuplicateWebhook(f"url {url} is already registered for account {account_id}")
    return NewEndpoint(id=endpoint_id, account_id=account_id, url=url,
                       events=wanted or list(EVENT_TYPES), created_by=normalise_email(by),
                       created_at=now, secret=secret)


def list_endpoints(engine: Engine, account_id: int) -> list[EndpointView]:
    with engine.connect() as conn:
        rows = conn.execute(select(ENDPOINTS).where(ENDPOINTS.c.account_id == account_id)
                            .order_by(ENDPOINTS.c.id)).all()
        counts: dict[tuple[int, str], int] = {}
        if rows:
            for endpoint_id, state, n in conn.execute(select(
                    DELIVERIES.c.endpoint_id, DELIVERIES.c.state, func.count()).where(
                    DELIVERIES.c.endpoint_id.in_([r.id for r in rows])).group_by(
                    DELIVERIES.c.endpoint_id, DELIVERIES.c.state)).all():
                counts[(endpoint_id, state)] = n
    return [EndpointView(
        id=r.id, account_id=r.account_id, url=r.url, events=r.events or list(EVENT_TYPES),
        created_by=r.created_by, created_at=r.created_at, last_attempt_at=r.last_attempt_at,
        last_success_at=r.last_success_at, last_status=r.last_status,
        last_error=r.last_error, consecutive_failures=r.consecutive_failures,
        pending=counts.get((r.id, DeliveryState.PENDING), 0),
        delivered=counts.get((r.id, DeliveryState.DELIVERED), 0),
        failed=counts.get((r.id, DeliveryState.FAILED), 0)) for r in rows]


def get_endpoint(engine: Engine, account_id: int, endpoint_id: int) -> EndpointView:
    for view in list_endpoints(engine, account_id):
        if view.id == endpoint_id:
            return view
    # Another account's endpoint is "not found" too: ids of other accounts are not confirmed.
    raise WebhookNotFound(f"account {account_id} has no webhook endpoint {endpoint_id}")


def remove_endpoint(engine: Engine, account_id: int, endpoint_id: int) -> EndpointView:
    """Remove it and its undelivered events; its delivery workflow ends at its next look."""
    view = get_endpoint(engine, account_id, endpoint_id)
    with write_transaction(engine) as conn:
        conn.execute(delete(DELIVERIES).where(DELIVERIES.c.endpoint_id == endpoint_id))
        conn.execute(delete(ENDPOINTS).where(ENDPOINTS.c.id == endpoint_id,
                                             ENDPOINTS.c.account_id == account_id))
    return view
