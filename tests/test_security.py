"""Links people can trust (issue #12): one live link per invitation, production secrets that
rotate, and the refusals a forged, stale, revoked-then-reinvited or expired link gets.
The link handler runs over HTTP (httpx against the ASGI app) with the dev server and the
production worker behind it; the start-up refusals run the real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from config import (
    DEV_LINK_SECRET,
    ROOT,
    InsecureConfiguration,
    Settings,
    require_production_secrets,
)
from invitations import InvitationsClient
from linkhandler.app import create_app
from linkhandler.invitee import Gone, check_live
from messages.payloads import (
    AcceptOutcome,
    AcceptRequest,
    InvitationStatus,
    Progress,
    ResendRequest,
    RevokeRequest,
    UserType,
)
from records.ids import invitation_id
from rules.links import LinkClaims, sign
from tests.conftest import free_port, new_worker
from tests.test_linkhandler import JSON, addr, form_in, invite, live_token, seed

STRONG = "s" * 40
OLD_SECRET = "previous-link-secret-" + "o" * 20


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVITES_", "TEMPORAL_"))}
    return {**env, **extra}


async def next_second(after: datetime) -> None:
    """Tokens carry whole seconds: a new issuance is told apart once the second changed."""
    wait = int(after.timestamp()) + 1 - time.time()
    if wait > 0:
        await asyncio.sleep(wait)


async def issued_at(handle: WorkflowHandle[Any, Any]) -> datetime:
    return datetime.fromisoformat((await handle.query("progress"))["link_issued_at"])


@pytest.fixture
def rotated(settings: Settings) -> Settings:
    """Settings after a rotation: OLD_SECRET signed the links people already have."""
    return settings.model_copy(update={"link_secrets_previous": SecretStr(f" {OLD_SECRET} ,")})


@pytest.fixture
async def http(dev_env: WorkflowEnvironment, rotated: Settings, engine: Engine,
               smtp: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(rotated, dev_env.client, engine)
    async with new_worker(dev_env.client, rotated, engine), app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                              base_url="http://links.test") as client:
        yield client


# --- one live link per invitation ------------------------------------------------------

async def test_a_resend_kills_the_earlier_link(
    http: httpx.AsyncClient, rotated: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    rose = addr("rose")
    org = seed(engine, rotated, rose)
    handle, first = await invite(dev_env.client, rotated, org, rose)
    form = form_in((await http.get(f"/i/{first}")).text)
    await next_second(await issued_at(handle))
    await handle.execute_update("resend", ResendRequest())
    second = await live_token(handle, rotated)
    assert second != first
    old = await http.get(f"/i/{first}")
    assert old.status_code == 410 and "A newer invitation email was sent" in old.text
    assert "only the link in that email works now" in old.text
    body = (await http.get(f"/i/{first}", headers=JSON)).json()
    assert (body["outcome"], body["status"], body["error_code"]) == (
        "superseded", "pending", "superseded")
    for path in ("/status", "/reports.csv"):
        assert (await http.get(f"/i/{first}{path}")).status_code == 410
    # A form shown with the old link cannot accept either.
    assert (await http.post(f"/i/{first}/accept", data=form)).status_code == 410
    assert (await handle.query("progress"))["status"] == "pending"
    assert (await http.get(f"/i/{second}")).status_code == 200
    # The client hands out the current link, not a fresh issue time.
    client = InvitationsClient(dev_env.client, rotated, engine)
    link = await client.link(handle.id)
    assert link.url.endswith(f"/i/{second}")
    assert int(link.issued_at.timestamp()) == int((await issued_at(handle)).timestamp())
    await handle.execute_update("revoke", RevokeRequest())


async def test_the_accept_update_itself_refuses_a_stale_or_foreign_link(
    http: httpx.AsyncClient, rotated: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    """The link handler accepts in one round trip: the update's validator is what checks
    the link then. Refused there, nothing is written and the invitation stays pending."""
    tess = addr("tess")
    org = seed(engine, rotated, tess, price_minor=1_500)  # paid: the accept asks where to
    handle, _ = await invite(dev_env.client, rotated, org, tess)
    issued = await issued_at(handle)
    refusals = {
        "LinkSuperseded": AcceptRequest(link_issued_at=issued - timedelta(seconds=1),
                                        link_email=tess),
        "LinkMismatch": AcceptRequest(link_issued_at=issued, link_email=addr("someone")),
    }
    for kind, req in refusals.items():
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("accept", req)
        assert isinstance(refused.value.cause, ApplicationError)
        assert refused.value.cause.type == kind
    assert (await handle.query("progress"))["status"] == "pending"
    history = [e.event_type for e in (await handle.fetch_history()).events]
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED not in history
    # The live link's own values pass, and the answer carries the progress it left.
    outcome = await handle.execute_update(
        "accept", AcceptRequest(link_issued_at=issued, link_email=tess.upper()),
        result_type=AcceptOutcome)
    assert outcome.outcome == "refund_choice_needed" and outcome.progress is not None
    assert (outcome.progress.email, outcome.progress.status) == (
        tess, InvitationStatus.AWAITING_REFUND_CHOICE)
    await handle.execute_update("revoke", RevokeRequest())
    await handle.result()


async def test_revoke_then_reinvite_keeps_the_old_link_dead(
    http: httpx.AsyncClient, rotated: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    remy = addr("remy")
    org = seed(engine, rotated, remy)
    handle, old = await invite(dev_env.client, rotated, org, remy)
    await handle.execute_update("revoke", RevokeRequest(by="admin@acme.test"))
    assert (await http.get(f"/i/{old}")).status_code == 410
    await next_second(await issued_at(handle))
    again, new = await invite(dev_env.client, rotated, org, remy)  # a new run, same id
    assert again.id == handle.id and new != old
    r = await http.get(f"/i/{old}", headers=JSON)
    assert (r.status_code, r.json()["outcome"]) == (410, "superseded")
    assert "newer invitation email" in (await http.get(f"/i/{old}")).text
    assert (await http.get(f"/i/{new}")).status_code == 200
    await again.execute_update("revoke", RevokeRequest())


def _progress(**kw: Any) -> Progress:
    now = datetime(2026, 1, 10, 12, 0, 0, 500_000, tzinfo=UTC)
    base = Progress(invitation_id="invitation-1-x@example.com", status=InvitationStatus.PENDING,
                    account_id=1, email="x@example.com", user_type=UserType.BASIC,
                    invited_at=now, expires_at=now + timedelta(days=3), link_issued_at=now)
    return base.model_copy(update=kw)


def test_a_link_stops_at_the_expiry_and_matches_to_the_second() -> None:
    p = _progress()
    assert p.link_issued_at is not None
    claims = LinkClaims(p.invitation_id, p.email, p.link_issued_at.replace(microsecond=0))
    check_live(claims, p, p.expires_at - timedelta(seconds=1))  # the same second: live
    with pytest.raises(Gone) as gone:
        check_live(claims, p, p.expires_at)  # before the workflow's timer ends it
    assert gone.value.reason == "expired"
    accepted = p.model_copy(update={"status": InvitationStatus.TRANSFERRING})
    check_live(claims, accepted, p.expires_at + timedelta(days=1))  # status page still works
    earlier = LinkClaims(p.invitation_id, p.email, p.link_issued_at - timedelta(seconds=1))
    with pytest.raises(Gone) as gone:
        check_live(earlier, p, p.invited_at)
    assert gone.value.reason == "superseded"
    legacy = p.model_copy(update={"link_issued_at": None})  # started before the field existed
    check_live(earlier, legacy, p.invited_at)


# --- secrets -----------------------------------------------------------------------------

async def test_a_link_signed_with_a_previous_secret_still_works_and_an_unknown_one_is_400(
    http: httpx.AsyncClient, rotated: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    otto = addr("otto")
    org = seed(engine, rotated, otto)
    handle, current = await invite(dev_env.client, rotated, org, otto)
    p = await handle.query("progress")
    issued = datetime.fromisoformat(p["link_issued_at"])
    by_old_key = sign(OLD_SECRET, handle.id, otto, issued)
    page = await http.get(f"/i/{by_old_key}")
    assert page.status_code == 200 and "invited you to join" in page.text
    forged = sign(DEV_LINK_SECRET, handle.id, otto, issued)
    for token in (forged, sign("another-secret-" + "x" * 30, handle.id, otto, issued)):
        r = await http.get(f"/i/{token}", headers=JSON)
        assert (r.status_code, r.json()["outcome"]) == (400, "invalid_link")
        assert "Acme" not in r.text and otto not in r.text
    # Forms signed before the rotation still post (the old key verifies them).
    old_form = form_in(page.text)
    assert (await http.post(f"/i/{current}/decline", data=old_form)).status_code == 403
    r = await http.post(f"/i/{by_old_key}/decline", data=old_form)
    assert r.status_code == 200 and "You declined" in r.text


def test_the_dev_secret_is_refused_outside_dev_mode(settings: Settings) -> None:
    default = settings.model_copy(update={"link_secret": SecretStr(DEV_LINK_SECRET)})
    with pytest.raises(InsecureConfiguration, match="INVITES_LINK_SECRET is the development"):
        require_production_secrets(default, "the worker")
    for short in ("", "tiny"):
        with pytest.raises(InsecureConfiguration, match="INVITES_LINK_SECRET is empty or short"):
            require_production_secrets(
                settings.model_copy(update={"link_secret": SecretStr(short)}), "the worker")
    with pytest.raises(InsecureConfiguration, match="INVITES_LINK_SECRETS_PREVIOUS"):
        require_production_secrets(settings.model_copy(update={
            "link_secret": SecretStr(STRONG),
            "link_secrets_previous": SecretStr(DEV_LINK_SECRET)}), "the worker")
    with pytest.raises(InsecureConfiguration, match="INVITES_CODEC_AUTH_TOKEN"):
        require_production_secrets(settings.model_copy(update={
            "link_secret": SecretStr(STRONG), "codec_auth_token": SecretStr("abc")}), "x")
    require_production_secrets(default.model_copy(update={"dev_mode": True}), "the worker")
    require_production_secrets(settings.model_copy(update={"link_secret": SecretStr(STRONG)}),
                               "the worker")


def test_worker_and_link_handler_processes_refuse_to_start_with_the_dev_secret() -> None:
    env = clean_env(INVITES_PUBLIC_BASE_URL="https://invites.example.com")
    worker = subprocess.run([sys.executable, "worker.py"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert worker.returncode != 0
    assert "the worker refuses to start: INVITES_LINK_SECRET is the development default" \
        in worker.stderr
    assert "INVITES_DEV_MODE=1" in worker.stderr
    port = free_port()
    handler = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--factory", "linkhandler.app:create_app",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env={**env, "INVITES_LINK_SECRET": "short"}, capture_output=True, text=True,
        timeout=60)
    assert handler.returncode != 0
    assert "the link handler refuses to start: INVITES_LINK_SECRET is empty or shorter " \
        "than 32 characters" in handler.stderr


async def test_dev_mode_lets_the_link_handler_start_with_the_dev_secret(
    dev_env: WorkflowEnvironment, settings: Settings,
) -> None:
    port = free_port()
    env = clean_env(INVITES_DEV_MODE="1", INVITES_DATABASE_URL=settings.database_url,
                    INVITES_TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "linkhandler.app:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--no-server-header"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(300):
                try:
                    r = await client.get("/healthz")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                    await asyncio.sleep(0.1)
            assert r.status_code == 200 and r.json()["outcome"] == "ok"
            forged = sign(DEV_LINK_SECRET, invitation_id(1, "x@example.com"), "x@example.com",
                          datetime.now(UTC))
            # Dev mode: the dev secret signs, so its links verify (unknown invitation: 410).
            assert (await client.get(f"/i/{forged}")).status_code == 410
    finally:
        proc.terminate()
        proc.wait(timeout=10)
