"""Dev-server tier: what operators see. Invitations in every waiting state and a finished
one, found by each custom search attribute; the static summary in describe(); the current
details; our counters on the worker's Prometheus endpoint; the Web UI in chromium."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment

from config import Settings
from demo.seed import IndividualSpec, create_individual, create_org
from invitations import InvitationsClient
from messages.payloads import (
    AcceptRequest,
    InvitationStatus,
    RefundChoice,
    RefundDestination,
    UserType,
)
from records.ids import invitation_id
from tests.conftest import ARTIFACTS, free_port, new_worker
from workflows.invitation import InvitationWorkflow

NAMES = ("fran", "paula", "rita", "oscar")


@dataclass
class World:
    org_id: int
    client: Client  # the worker's client (Prometheus runtime)
    invitations: InvitationsClient
    metrics_url: str
    settings: Settings
    # Workflow ids are (account, email) and the dev server is shared by the session: a
    # domain of its own per test keeps these invitations apart from other tests'.
    domain: str

    def email(self, name: str) -> str:
        return f"{name}@{self.domain}"

    def handle(self, email: str) -> WorkflowHandle:  # type: ignore[type-arg]
        return self.client.get_workflow_handle_for(  # typed: results come back as models
            InvitationWorkflow.run, invitation_id(self.org_id, email))


@pytest.fixture
async def world(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> AsyncIterator[World]:
    now = datetime.now(UTC)
    domain = f"ops-{uuid.uuid4().hex[:8]}.example.com"
    with Session(engine) as s:
        org = create_org(s, "Acme")
        for name, spec in {
            "fran": {},
            "paula": {"price_minor": 1499, "period_start": now - timedelta(days=12),
                    "period_end": now + timedelta(days=18), "chat": 300},
            "rita": {"rooms": ("Rita's Boardroom",)},
            "oscar": {},
        }.items():
            create_individual(s, settings.recordings_dir,
                              IndividualSpec(email=f"{name}@{domain}", **spec))
        s.commit()
        assert org.id is not None
        org_id = org.id
    metrics_port = free_port()
    runtime = Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(bind_address=f"127.0.0.1:{metrics_port}")))
    client = await Client.connect(dev_env.client.service_client.config.target_host,
                                  namespace="default", runtime=runtime,
                                  data_converter=pydantic_data_converter)
    invitations = InvitationsClient(client, settings, engine, search_attributes=True)
    async with new_worker(client, settings, engine):
        yield World(org_id, client, invitations, f"http://127.0.0.1:{metrics_port}/metrics",
                    settings, domain)


async def wait_for(what: str, check, within: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: still {last!r} after {within}s")


async def ids_for(w: World, query: str) -> set[str]:
    scoped = f'TaskQueue = "{w.settings.task_queue}" AND ({query})'
    return {wf.id async for wf in w.client.list_workflows(scoped)}


async def settle(w: World, query: str, expected: set[str]) -> None:
    async def check() -> bool:
        return await ids_for(w, query) == expected
    try:
        await wait_for(query, check)
    except AssertionError:
        raise AssertionError(f"{query}: {await ids_for(w, query)} != {expected}") from None


async def invite(w: World, emails: list[str], user_type: UserType) -> None:
    for email in emails:
        result = await w.invitations.invite(w.org_id, "admin@acme.test", email,
                                            user_type=user_type)
        assert result.outcome == "started", result


async def status_of(w: World, email: str) -> InvitationStatus:
    return (await w.handle(email).query(InvitationWorkflow.progress)).status  # type: ignore[no-any-return]


async def test_every_search_attribute_finds_the_right_invitations(world: World) -> None:
    w = world
    FRAN, PAULA, RITA, OSCAR = (w.email(n) for n in NAMES)
    await invite(w, [FRAN, PAULA, RITA], UserType.LICENSED)
    await invite(w, [OSCAR], UserType.BASIC)
    fran, paula, rita, oscar = (invitation_id(w.org_id, e) for e in (FRAN, PAULA, RITA, OSCAR))

    outcome = await w.handle(RITA).execute_update(InvitationWorkflow.accept, AcceptRequest())
    assert outcome.outcome == "blocked" and outcome.error_code == 1009
    outcome = await w.handle(PAULA).execute_update(InvitationWorkflow.accept, AcceptRequest())
    assert outcome.outcome == "refund_choice_needed" and outcome.quote is not None
    quoted = outcome.quote.amount_minor
    outcome = await w.handle(FRAN).execute_update(InvitationWorkflow.accept, AcceptRequest())
    assert outcome.outcome == "accepted"
    assert (await w.handle(FRAN).result()).status == InvitationStatus.COMPLETED

    await settle(w, 'InvitationStatus = "blocked"', {rita})
    await settle(w, 'InvitationStatus = "awaiting_refund_choice"', {paula})
    await settle(w, 'InvitationStatus = "pending"', {oscar})
    await settle(w, 'InvitationStatus = "completed"', {fran})
    await settle(w, f'InvitationAccountId = "{w.org_id}"', {fran, paula, rita, oscar})
    await settle(w, f'InviteeEmail = "{RITA}"', {rita})
    await settle(w, 'InvitationUserType = "basic"', {oscar})
    await settle(w, 'InvitationUserType = "licensed"', {fran, paula, rita})
    await settle(w, "InvitationRefundMinor > 0", {paula})  # the quote, while she chooses
    await settle(w, f"InvitationRefundMinor = {quoted}", {paula})

    outcome = await w.handle(PAULA).execute_update(
        InvitationWorkflow.choose_refund,
        RefundChoice(destination=RefundDestination.ORIGINAL_PAYMENT_METHOD))
    assert outcome.outcome == "accepted"
    result = await w.handle(PAULA).result()
    assert result.status == InvitationStatus.COMPLETED
    assert result.progress.payment is not None and result.progress.payment.amount_minor > 0
    assert result.progress.payment.amount_minor == quoted  # paid what was quoted
    await settle(w, f"InvitationRefundMinor = {quoted}", {paula})
    await settle(w, 'InvitationStatus = "completed"', {fran, paula})

    # describe(): the static summary and details; the current details: live progress.
    desc = await w.handle(PAULA).describe()
    assert await _maybe(desc.static_summary()) == f"Invite {PAULA} to Acme as Licensed"
    assert "admin@acme.test" in (await _maybe(desc.static_details()) or "")
    meta = await w.handle(RITA).query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert "Rita's Boardroom" in meta.current_details
    assert "1009" in meta.current_details
    meta = await w.handle(PAULA).query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    for category in ("profile", "meetings", "recordings", "chat", "contacts", "settings"):
        assert category in meta.current_details.lower()
    assert "300" in meta.current_details  # the chat rows moved

    # Our counters, through the Temporal runtime's Prometheus exporter.
    def scrape() -> str:
        with urllib.request.urlopen(w.metrics_url, timeout=5) as resp:  # noqa: S310
            return resp.read().decode()

    async def counters() -> dict[str, float] | None:
        text = await asyncio.to_thread(scrape)
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("invitation") and " " in line:
                name_labels, value = line.rsplit(" ", 1)
                name = name_labels.split("{", 1)[0].removesuffix("_total")
                if name == "invitation_transfer_rows" and 'category="chat"' in name_labels:
                    name = "chat_rows"
                values[name] = values.get(name, 0) + float(value)
        return values if values.get("invitations_completed", 0) >= 2 else None

    got = await wait_for("metrics", counters)
    assert got["invitations_started"] >= 4
    assert got["invitations_accepted"] >= 2
    assert got["invitations_blocked"] >= 1
    assert got["invitation_refund_minor_paid"] == result.progress.payment.amount_minor
    assert got["chat_rows"] >= 300


async def test_web_ui_lists_blocked_invitations(world: World, dev_ui_url: str) -> None:
    pytest.importorskip("playwright")
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    w = world
    RITA, OSCAR = w.email("rita"), w.email("oscar")
    await invite(w, [RITA, OSCAR], UserType.LICENSED)
    outcome = await w.handle(RITA).execute_update(InvitationWorkflow.accept, AcceptRequest())
    assert outcome.outcome == "blocked"
    rita = invitation_id(w.org_id, RITA)
    await settle(w, 'InvitationStatus = "blocked"', {rita})

    query = f'InvitationStatus="blocked" AND TaskQueue="{w.settings.task_queue}"'
    url = f"{dev_ui_url}/namespaces/default/workflows?query={urllib.parse.quote(query)}"
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(url)
            await page.get_by_text(rita).first.wait_for(timeout=30_000)
            # The other invitation (pending) is filtered out.
            assert await page.get_by_text(invitation_id(w.org_id, OSCAR)).count() == 0
            await page.screenshot(path=str(ARTIFACTS / "temporal-ui-blocked.png"), full_page=True)
            await page.locator(f'a:has-text("{rita}")').first.click()
            await page.wait_for_url(f"**/workflows/{urllib.parse.quote(rita)}/**")
            # Summary and details: "User Metadata" (up to the block, every step was a local
            # activity: no activity rows in the timeline).
            await page.get_by_text("User Metadata").first.wait_for(timeout=30_000)
            await page.get_by_text("User Metadata").first.click()
            try:
                # The UI renders summary and details as markdown in sandboxed iframes.
                async def shown() -> str | None:
                    texts = []
                    for frame in page.frames:
                        try:
                            texts.append(await frame.inner_text("body", timeout=1_000))
                        except PlaywrightError:
                            continue
                    text = "\n".join(texts)
                    wanted = (f"Invite {RITA} to Acme as Licensed", "Rita’s Boardroom")
                    return text if all(
                        w.replace("’", "'") in text.replace("’", "'") for w in wanted) else None
                await wait_for("summary and current details in the UI", shown)
            finally:
                await page.screenshot(path=str(ARTIFACTS / "temporal-ui-invitation.png"),
                                      full_page=True)
        finally:
            await browser.close()
    assert (ARTIFACTS / "temporal-ui-blocked.png").stat().st_size > 10_000


async def _maybe(value):  # type: ignore[no-untyped-def]
    """describe()'s static_summary()/static_details() are coroutines in some SDK versions."""
    if asyncio.iscoroutine(value):
        return await value
    return value
