"""Webhooks (issue #15): the outbox written with each recorded change, signed deliveries to
a real HTTP receiver on 127.0.0.1 (signature checked here with the Standard Webhooks
algorithm, independently of webhooks/signing.py), order per invitation, stable ids,
redelivery after an outage, giving up after the window, SSRF checks, and an invitation
accepted and completed by the real worker."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from config import Settings
from demo.seed import create_org
from invitations.errors import InvitationError, NotAnAdmin, UnknownAccount
from messages.activity_io import AuditNote, StatusChange
from messages.payloads import AcceptRequest, InvitationStatus
from records.changes import record_change, upsert_invitation
from records.db import write_transaction
from rules.platform import is_admin_of
from tests.conftest import free_port, new_worker
from tests.workflow_helpers import (
    ADMIN,
    World,
    eventually,
    invitation_input,
    make_world,
    start,
)
from webhooks import endpoints, signing
from webhooks.errors import DuplicateWebhook, InvalidWebhookUrl, UnknownWebhookEvent
from webhooks.events import EVENT_TYPES, event_id
from webhooks.outbox import DELIVERIES as D
from webhooks.outbox import ENDPOINTS, enqueue_event
from webhooks.payloads import DeliveryPlan
from webhooks.starting import ensure_delivery, workflow_id
from webhooks.urls import pinned, validate_url
from workflows.invitation import InvitationWorkflow

S = InvitationStatus
T0 = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)


# -- a real receiver ---------------------------------------------------------------------

@dataclass
class Received:
    id: str
    timestamp: str
    signature: str
    body: bytes
    answered: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1: answers 500 to the ids in `failing` and to the next
    `fail_next` requests, 200 otherwise; can be stopped and started again on its port."""

    port: int = field(default_factory=free_port)
    got: list[Received] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)
    fail_next: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                msg_id = self.headers.get("webhook-id", "")
                status = 200
                if msg_id in receiver.failing or receiver.fail_next > 0:
                    receiver.fail_next = max(0, receiver.fail_next - 1)
                    status = 500
                receiver.got.append(Received(msg_id, self.headers.get("webhook-timestamp", ""),
                                             self.headers.get("webhook-signature", ""), body,
                                             status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self) -> list[Received]:
        """Each event's successful request, in arrival order."""
        return [r for r in list(self.got) if r.answered == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


def verify(secret: str, r: Received) -> bool:
    """The Standard Webhooks check, written from the spec (not with webhooks.signing)."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{r.id}.{r.timestamp}.".encode() + r.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(v == "v1" and hmac.compare_digest(s, expected)
               for v, _, s in (p.partition(",") for p in r.signature.split()))


# -- world -------------------------------------------------------------------------------

@pytest.fixture
def hooks(settings: Settings) -> Settings:
    """Webhooks to the receiver on 127.0.0.1 allowed, as `INVITES_WEBHOOK_ALLOW_PRIVATE=1`
    and `INVITES_WEBHOOK_HTTP_HOSTS=127.0.0.1` do."""
    return settings.model_copy(update={"webhook_allow_private": True,
                                       "webhook_http_hosts": "127.0.0.1",
                                       "webhook_poll_seconds": 0.2})


def fast(endpoint_id: int, **kw: Any) -> DeliveryPlan:
    """Retries from 0.2 s doubling to 1 s: the production plan (5 s to 1 h, for a day) made
    short enough for a test."""
    return DeliveryPlan(endpoint_id=endpoint_id, poll_seconds=0.2, first_retry_seconds=0.2,
                        max_retry_seconds=1, **kw)


def open_invitation(engine: Engine, world: World, email: str | None = None, *,
                    account_id: int | None = None, by: str = ADMIN) -> str:
    """An Invitation row as register_invitation writes it; returns its id."""
    account_id = account_id or world.org_id
    inp = invitation_input(world).model_copy(update={
        "email": email or world.email, "account_id": account_id, "invited_by": by})
    inv = f"invitation-{account_id}-{inp.email}"
    with Session(engine) as session:
        admin = is_admin_of(session, by, account_id)
        assert admin is not None and admin.id is not None
        upsert_invitation(session, inv, inp, invited_by_user_id=admin.id, invited_at=T0,
                          expires_at=T0 + timedelta(days=30))
        session.commit()
    return inv


def record(engine: Engine, inv: str, status: S, event: str, at: datetime,
           *earlier: tuple[S, str, datetime]) -> None:
    with write_transaction(engine) as conn:
        record_change(conn, StatusChange(
            invitation_id=inv, status=status, at=at, event=event,
            earlier=[AuditNote(status=s, event=e, at=t) for s, e, t in earlier]))


def outbox(engine: Engine, endpoint_id: int) -> list[tuple[str, str, str]]:
    """(invitation, event type, event id) of the endpoint's rows, in id order."""
    with engine.connect() as conn:
        rows = conn.execute(select(D.c.invitation_id, D.c.event_type, D.c.event_id).where(
            D.c.endpoint_id == endpoint_id).order_by(D.c.id)).all()
    return [(r.invitation_id, r.event_type, r.event_id) for r in rows]


def add(engine: Engine, settings: Settings, world: World, url: str,
        events: list[str] | None = None) -> endpoints.NewEndpoint:
    return endpoints.add_endpoint(engine, settings, account_id=world.org_id, by=ADMIN,
                                  url=url, events=events)


# -- signing and URLs ----------------------------------------------------------------------

def test_signature_is_the_standard_webhooks_one() -> None:
    # The Standard Webhooks reference test vector.
    assert signing.signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                             "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                             '{"test": 2432232314}') == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    h = signing.headers(secret, "evt_1", 1700000000, '{"a":1}')
    assert verify(secret, Received("evt_1", "1700000000", h["webhook-signature"], b'{"a":1}', 0))
    assert not verify(secret, Received("evt_1", "1700000001", h["webhook-signature"],
                                       b'{"a":1}', 0))


@pytest.mark.parametrize(("url", "why"), [
    ("https://127.0.0.1/hooks", "loopback"),
    ("https://localhost:8443/hooks", "loopback"),  # a name is resolved, then checked
    ("https://[::1]/hooks", "loopback"),
    ("https://10.1.2.3/hooks", "private"),
    ("https://192.168.0.7/hooks", "private"),
    ("https://[::ffff:172.16.0.1]/hooks", "private"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://0.0.0.0/", "unspecified"),
    ("http://93.184.216.34/hooks", "plain http"),
    ("ftp://93.184.216.34/hooks", "absolute https"),
    ("https://user:pw@93.184.216.34/hooks", "credentials"),
    ("hooks.example.com/x", "absolute https"),
])
def test_endpoint_urls_are_refused_with_a_clear_reason(url: str, why: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(InvalidWebhookUrl, match=why) as refused:
        validate_url(url, settings)
    assert refused.value.field == "url" and refused.value.code == "invalid_webhook_url"


def test_private_and_http_endpoints_only_where_settings_allow(tmp_path: Path) -> None:
    dev = Settings(data_dir=tmp_path, webhook_allow_private=True, webhook_http_hosts="127.0.0.1")
    assert validate_url("http://127.0.0.1:9/x", dev)
    assert validate_url("https://10.1.2.3/x", dev)
    with pytest.raises(InvalidWebhookUrl, match="plain http"):
        validate_url("http://10.1.2.3/x", dev)  # private allowed, but http only to 127.0.0.1
    assert validate_url("https://93.184.216.34/hooks", Settings(data_dir=tmp_path))


def test_a_delivery_goes_to_the_address_it_checked(tmp_path: Path) -> None:
    """Resolved once, checked, connected to: the name rides in Host (and SNI for https)."""
    dev = Settings(data_dir=tmp_path, webhook_allow_private=True, webhook_http_hosts="localhost")
    target = pinned("http://localhost:8123/hooks?x=1", dev)
    assert target.url in ("http://127.0.0.1:8123/hooks?x=1", "http://[::1]:8123/hooks?x=1")
    assert (target.host_header, target.sni_hostname) == ("localhost:8123", None)
    v6 = pinned("https://[::1]:8443/h", dev)
    assert (v6.url, v6.host_header) == ("https://[::1]:8443/h", "[::1]:8443")
    tls = pinned("https://93.184.216.34/h", Settings(data_dir=tmp_path))
    assert (tls.url, tls.host_header, tls.sni_hostname) == (
        "https://93.184.216.34/h", "93.184.216.34", "93.184.216.34")
    with pytest.raises(InvalidWebhookUrl, match="loopback"):
        pinned("https://localhost/h", Settings(data_dir=tmp_path))
    # IPv4 inside IPv6 is judged as itself: 6to4 of 169.254.169.254 and of 127.0.0.1.
    for inner in ("2002:a9fe:a9fe::1", "2002:7f00:1::1"):
        with pytest.raises(InvalidWebhookUrl):
            validate_url(f"https://[{inner}]/h", Settings(data_dir=tmp_path))


@pytest.mark.sqlite_only
def test_registration_refuses_bad_input_and_writes_nothing(engine: Engine, settings: Settings,
                                                           hooks: Settings) -> None:
    world = make_world(engine, settings)
    cases: list[tuple[dict[str, Any], type[InvitationError], str]] = [
        ({"url": "https://127.0.0.1/h"}, InvalidWebhookUrl, "url"),  # not allowed by default
        ({"events": ["accepted", "exploded"]}, UnknownWebhookEvent, "events"),
        ({"by": "nobody@acme.test"}, NotAnAdmin, "by"),
        ({"account_id": 999}, UnknownAccount, "account"),
    ]
    for change, error, fieldname in cases:
        args: dict[str, Any] = {"account_id": world.org_id, "by": ADMIN,
                                "url": "http://127.0.0.1:9/h"} | change
        cfg = settings if "url" in change else hooks
        with pytest.raises(error) as refused:
            endpoints.add_endpoint(engine, cfg, **args)
        assert refused.value.field == fieldname
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ENDPOINTS)).scalar() == 0
    new = add(engine, hooks, world, "http://127.0.0.1:9/h", ["invitation.completed"])
    assert new.events == ["completed"] and new.secret.startswith("whsec_")
    with pytest.raises(DuplicateWebhook):
        add(engine, hooks, world, "http://127.0.0.1:9/h")
    [listed] = endpoints.list_endpoints(engine, world.org_id)
    assert "secret" not in listed.model_dump()


# -- the outbox (both databases) -------------------------------------------------------------

def test_outbox_rows_are_written_with_the_change_once_in_order(engine: Engine,
                                                                hooks: Settings) -> None:
    world = make_world(engine, hooks)
    with Session(engine) as session:  # another account, without endpoints
        quiet = create_org(session, "Globex", owner="ceo@globex.test", admins=())
        session.commit()
        assert quiet.id is not None
        quiet_id = quiet.id
    every = add(engine, hooks, world, "http://127.0.0.1:9/all")
    endings = add(engine, hooks, world, "http://127.0.0.1:9/end", ["completed", "failed"])
    inv = open_invitation(engine, world)
    other = open_invitation(engine, world, account_id=quiet_id, by="ceo@globex.test")
    t1, t2 = T0 + timedelta(seconds=5), T0 + timedelta(seconds=9)
    with write_transaction(engine) as conn:
        enqueue_event(conn, invitation_id=inv, account_id=world.org_id, kind="invited", at=T0,
                      detail={})
    for _ in range(2):  # a retried recording writes the same rows once
        record(engine, inv, S.BLOCKED, "blocked", T0 + timedelta(seconds=1))
        record(engine, inv, S.TRANSFERRING, "transferring", t1, (S.ACCEPTED, "accepted", t1))
        record(engine, inv, S.TRANSFERRING, "resent", t1 + timedelta(seconds=1))  # bookkeeping
        record(engine, inv, S.COMPLETED, "completed", t2)
        record(engine, other, S.DECLINED, "declined", t2)
    expected = [("created", "invited", T0), ("blocked", "blocked", T0 + timedelta(seconds=1)),
                ("accepted", "accepted", t1), ("transfer_started", "transferring", t1),
                ("completed", "completed", t2)]
    assert outbox(engine, every.id) == [(inv, e, event_id(inv, k, at)) for e, k, at in expected]
    assert outbox(engine, endings.id) == [(inv, "completed", event_id(inv, "completed", t2))]
    with engine.connect() as conn:  # the account without endpoints: nothing at all
        assert conn.execute(select(func.count()).select_from(D).where(
            D.c.invitation_id == other)).scalar() == 0
        body = json.loads(conn.execute(select(D.c.body).where(
            D.c.endpoint_id == endings.id)).scalar_one())
    assert body["type"] == "invitation.completed"
    assert body["data"]["invitation_id"] == inv and body["data"]["email"] == world.email
    assert body["data"]["id"] == event_id(inv, "completed", t2)
    assert body["timestamp"] == t2.isoformat().replace("+00:00", "Z")


def settled(engine: Engine, org_id: int) -> endpoints.EndpointView | None:
    """The endpoint once one event failed and one was delivered (each marked after its
    answer, so the receiver may see it a moment before the database says so)."""
    [view] = endpoints.list_endpoints(engine, org_id)
    return view if (view.failed, view.delivered, view.pending) == (1, 1, 0) else None


async def test_deliveries_are_signed_in_order_and_redelivered_after_an_outage(
    dev_env: WorkflowEnvironment, engine: Engine, hooks: Settings,
) -> None:
    receiver = Receiver()  # not started: the endpoint is down
    world = make_world(engine, hooks)
    endpoint = add(engine, hooks, world, receiver.url)
    invs = [open_invitation(engine, world), open_invitation(engine, world,
                                                            f"b.{world.email}")]
    for n, inv in enumerate(invs):
        at = T0 + timedelta(minutes=n)
        record(engine, inv, S.BLOCKED, "blocked", at)
        record(engine, inv, S.TRANSFERRING, "transferring", at + timedelta(seconds=1),
               (S.ACCEPTED, "accepted", at + timedelta(seconds=1)))
        record(engine, inv, S.COMPLETED, "completed", at + timedelta(seconds=2))
    recorded = {inv: [(t, i) for i_, t, i in outbox(engine, endpoint.id) if i_ == inv]
                for inv in invs}
    async with new_worker(dev_env.client, hooks, engine):
        await ensure_delivery(dev_env.client, hooks, endpoint.id, fast(endpoint.id))

        def down() -> endpoints.EndpointView | None:
            [view] = endpoints.list_endpoints(engine, world.org_id)
            return view if view.consecutive_failures >= 2 else None

        seen = await eventually(down, within=30, what="failed attempts while down")
        assert seen.last_status is None and "ConnectError" in (seen.last_error or "")
        assert seen.pending == 8 and seen.delivered == 0
        receiver.fail_next = 2  # back, but answering 500 twice first
        receiver.start()
        try:
            await eventually(lambda: len(receiver.delivered()) == 8, within=30,
                             what="all eight events delivered")

            def marked() -> endpoints.EndpointView | None:  # written after each answer
                [view] = endpoints.list_endpoints(engine, world.org_id)
                return view if view.delivered == 8 else None

            view = await eventually(marked, within=30, what="all eight marked delivered")
        finally:
            receiver.stop()
        await dev_env.client.get_workflow_handle(workflow_id(hooks, endpoint.id)).terminate()
    assert view.delivered == 8 and view.pending == 0 and view.consecutive_failures == 0
    assert view.last_status == 200 and view.last_error is None
    assert all(verify(endpoint.secret, r) for r in receiver.got)
    refused = [r for r in receiver.got if r.answered == 500]
    assert len(refused) == 2
    for r in refused:  # the same event (id and bytes) came again and was then taken
        assert any(ok.id == r.id and ok.body == r.body for ok in receiver.delivered())
    for inv in invs:
        mine = [r for r in receiver.got if r.json["data"]["invitation_id"] == inv]
        # In order: no event of an invitation before the one before it was taken.
        firsts = list(dict.fromkeys(r.id for r in mine))
        assert [(r.json["data"]["event"], r.id) for r in receiver.delivered()
                if r.json["data"]["invitation_id"] == inv] == recorded[inv]
        assert firsts == [i for _, i in recorded[inv]]
        assert [e for e, _ in recorded[inv]] == ["blocked", "accepted", "transfer_started",
                                                 "completed"]


@pytest.mark.sqlite_only
async def test_an_event_not_delivered_in_its_window_fails_and_later_ones_still_go(
    dev_env: WorkflowEnvironment, engine: Engine, hooks: Settings, receiver: Receiver,
) -> None:
    world = make_world(engine, hooks)
    endpoint = add(engine, hooks, world, receiver.url)
    inv = open_invitation(engine, world)
    record(engine, inv, S.BLOCKED, "blocked", T0)
    record(engine, inv, S.DECLINED, "declined", T0 + timedelta(seconds=1))
    receiver.failing.add(event_id(inv, "blocked", T0))
    async with new_worker(dev_env.client, hooks, engine):
        await ensure_delivery(dev_env.client, hooks, endpoint.id,
                              fast(endpoint.id, give_up_seconds=2))
        await eventually(lambda: [r.json["data"]["event"] for r in receiver.delivered()]
                         == ["declined"], within=30, what="the later event delivered")
        view = await eventually(lambda: settled(engine, world.org_id), within=30,
                                what="one failed, one delivered, none pending")
        await dev_env.client.get_workflow_handle(workflow_id(hooks, endpoint.id)).terminate()
    assert (view.failed, view.delivered, view.pending) == (1, 1, 0)
    with engine.connect() as conn:
        failed = conn.execute(select(D).where(D.c.state == "failed")).one()
    assert failed.event_type == "blocked" and failed.attempts >= 2
    assert "not delivered within 2 s" in (failed.last_error or "")
    assert "HTTP 500" in (failed.last_error or "")


@pytest.mark.sqlite_only
async def test_delivery_checks_the_address_again_and_refuses_loopback(
    dev_env: WorkflowEnvironment, engine: Engine, hooks: Settings, receiver: Receiver,
) -> None:
    world = make_world(engine, hooks)
    endpoint = add(engine, hooks, world, receiver.url)  # allowed when it was registered
    inv = open_invitation(engine, world)
    record(engine, inv, S.DECLINED, "declined", T0)
    strict = hooks.model_copy(update={"webhook_allow_private": False})
    async with new_worker(dev_env.client, strict, engine):
        await ensure_delivery(dev_env.client, strict, endpoint.id,
                              fast(endpoint.id, give_up_seconds=1))

        def given_up() -> endpoints.EndpointView | None:
            [view] = endpoints.list_endpoints(engine, world.org_id)
            return view if view.failed == 1 else None

        view = await eventually(given_up, within=30, what="the event given up")
        await dev_env.client.get_workflow_handle(workflow_id(hooks, endpoint.id)).terminate()
    assert receiver.got == []
    assert "127.0.0.1, a loopback address" in (view.last_error or "")


# -- end to end ------------------------------------------------------------------------------

@pytest.mark.sqlite_only
async def test_an_accepted_invitation_sends_signed_accepted_and_completed_webhooks(
    dev_env: WorkflowEnvironment, engine: Engine, hooks: Settings, receiver: Receiver,
    smtp: Path,
) -> None:
    world = make_world(engine, hooks, meetings=1, contacts=2)
    endpoint = add(engine, hooks, world, receiver.url)
    async with new_worker(dev_env.client, hooks, engine):
        await ensure_delivery(dev_env.client, hooks, endpoint.id)  # the production plan
        handle = await start(dev_env.client, hooks, invitation_input(world),
                             with_search_attributes=True)
        outcome = await handle.execute_update(InvitationWorkflow.accept, AcceptRequest())
        assert outcome.outcome == "accepted"
        result = await handle.result()
        assert result.status == S.COMPLETED
        await eventually(lambda: "completed" in [r.json["data"]["event"]
                                                 for r in receiver.delivered()],
                         within=30, what="the completed webhook")
        await dev_env.client.get_workflow_handle(workflow_id(hooks, endpoint.id)).terminate()
    events = [r.json["data"]["event"] for r in receiver.delivered()]
    assert events[-3:] == ["accepted", "transfer_started", "completed"]
    assert set(events) <= set(EVENT_TYPES)
    assert all(verify(endpoint.secret, r) for r in receiver.got)
    assert all(r.json["data"]["invitation_id"] == world.invitation for r in receiver.got)
    assert len({r.id for r in receiver.delivered()}) == len(receiver.delivered())


# -- the command line ------------------------------------------------------------------------

@pytest.mark.sqlite_only
async def test_starter_webhook_add_list_remove(
    dev_env: WorkflowEnvironment, engine: Engine, hooks: Settings, receiver: Receiver,
) -> None:
    from tests.test_starter import Starter

    world = make_world(engine, hooks)
    starter = Starter(hooks, dev_env.client.service_client.config.target_host)
    starter.env |= {"INVITES_WEBHOOK_ALLOW_PRIVATE": "1",
                    "INVITES_WEBHOOK_HTTP_HOSTS": "127.0.0.1",
                    "INVITES_WEBHOOK_POLL_SECONDS": "0.2"}
    refused = await starter("webhook", "add", "--account", str(world.org_id), "--by", ADMIN,
                            "http://10.0.0.1/x", "--json")
    assert refused.code == 1 and refused.json["error"]["field"] == "url"
    assert refused.json["error"]["code"] == "invalid_webhook_url"
    assert endpoints.list_endpoints(engine, world.org_id) == []  # nothing written

    added = await starter("webhook", "add", "--account", str(world.org_id), "--by", ADMIN,
                          receiver.url, "--events", "declined", "completed", "--json")
    assert added.code == 0, added.err
    secret, hook_id = added.json["secret"], added.json["id"]
    assert secret.startswith("whsec_") and added.json["events"] == ["completed", "declined"]
    inv = open_invitation(engine, world)
    async with new_worker(dev_env.client, hooks, engine):
        record(engine, inv, S.DECLINED, "declined", T0)
        await eventually(lambda: receiver.delivered(), within=30, what="the declined webhook")
        await eventually(lambda: endpoints.list_endpoints(engine, world.org_id)[0].delivered,
                         within=30, what="the delivery recorded")  # written after the answer
        listed = await starter("webhook", "list", "--account", str(world.org_id), "--json")
        human = await starter("webhook", "list", "--account", str(world.org_id))
        removed = await starter("webhook", "remove", "--account", str(world.org_id),
                                "--by", ADMIN, str(hook_id), "--json")
        handle = dev_env.client.get_workflow_handle(workflow_id(hooks, hook_id))
        await asyncio.wait_for(handle.result(), 30)  # it sees the endpoint gone and ends
    assert verify(secret, receiver.delivered()[0])
    [shown] = listed.json["webhooks"]
    assert "secret" not in shown and secret not in listed.out + human.out
    assert (shown["last_status"], shown["delivered"], shown["consecutive_failures"]) == (200, 1, 0)
    assert receiver.url in human.out and "200" in human.out
    assert removed.code == 0 and removed.json["id"] == hook_id
    assert endpoints.list_endpoints(engine, world.org_id) == []


# -- the REST API ----------------------------------------------------------------------------

@pytest.mark.sqlite_only
async def test_api_webhooks_create_list_delete(
    dev_env: WorkflowEnvironment, engine: Engine, hooks: Settings, receiver: Receiver,
) -> None:
    import httpx

    import webhooks.routes
    from admin.app import create_admin_app
    from admin.principal import Principal

    world = make_world(engine, hooks)
    app = create_admin_app(hooks, dev_env.client, engine, search_attributes=False)
    app.dependency_overrides[webhooks.routes.api_principal] = lambda: Principal(
        account_id=world.org_id, email=ADMIN, via="token", token_id=1)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://admin.test") as api:
        refused = await api.post("/api/v1/webhooks", json={"url": "http://10.0.0.1/h"})
        assert refused.status_code == 422
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "invalid_webhook_url"
        assert refused.json()["errors"][0]["field"] == "url"
        unknown = await api.post("/api/v1/webhooks", json={"url": receiver.url,
                                                           "events": ["nope"]})
        assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "events"
        assert (await api.get("/api/v1/webhooks")).json() == {"webhooks": []}

        created = await api.post("/api/v1/webhooks", json={"url": receiver.url,
                                                           "events": ["completed"]})
        assert created.status_code == 201, created.text
        hook = created.json()
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["completed"]
        listed = (await api.get("/api/v1/webhooks")).json()["webhooks"]
        assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
        assert (await api.get(f"/api/v1/webhooks/{hook['id']}")).json()["url"] == receiver.url
        assert (await api.get(f"/api/v1/webhooks/{hook['id'] + 1}")).status_code == 404
        assert (await api.post("/api/v1/webhooks", json={"url": receiver.url})).status_code \
            == 409
        assert (await api.delete(f"/api/v1/webhooks/{hook['id']}")).status_code == 204
        assert (await api.delete(f"/api/v1/webhooks/{hook['id']}")).status_code == 404
    await dev_env.client.get_workflow_handle(workflow_id(hooks, hook["id"])).terminate()


@pytest.mark.sqlite_only
async def test_the_production_plan_retries_for_a_day_then_moves_on(
    ts_env: WorkflowEnvironment, engine: Engine, hooks: Settings, receiver: Receiver,
) -> None:
    """5 s doubling to 1 h, for a day: the time-skipping server makes the day pass."""
    world = make_world(engine, hooks)
    endpoint = add(engine, hooks, world, receiver.url)
    inv = open_invitation(engine, world)
    record(engine, inv, S.BLOCKED, "blocked", T0)
    record(engine, inv, S.DECLINED, "declined", T0 + timedelta(seconds=1))
    receiver.failing.add(event_id(inv, "blocked", T0))
    # The production retry plan; the outbox looked at hourly (every poll is a workflow
    # task, and a skipped day would otherwise hold 17,280 of them).
    plan = DeliveryPlan(endpoint_id=endpoint.id, poll_seconds=3600)
    assert (plan.first_retry_seconds, plan.max_retry_seconds, plan.give_up_seconds) == \
        (5, 3600, 86400)
    async with new_worker(ts_env.client, hooks, engine):
        await ensure_delivery(ts_env.client, hooks, endpoint.id, plan)
        await eventually(lambda: receiver.got, within=30, what="a first attempt")
        await ts_env.sleep(timedelta(hours=25))
        await eventually(lambda: receiver.delivered(), within=60, what="the later event")
        await eventually(lambda: settled(engine, world.org_id), within=30,
                         what="one failed, one delivered, none pending")
        await ts_env.client.get_workflow_handle(workflow_id(hooks, endpoint.id)).terminate()
    attempts = [r for r in receiver.got if r.answered == 500]
    # Retried (how many times depends on how the server's clock jumps over the day: a
    # jump of hours fires the pending retry once), then given up after the day.
    assert len(attempts) >= 2 and len({r.id for r in attempts}) == 1
    [view] = endpoints.list_endpoints(engine, world.org_id)
    assert (view.failed, view.delivered, view.pending) == (1, 1, 0)
    assert [r.json["data"]["event"] for r in receiver.delivered()] == ["declined"]
