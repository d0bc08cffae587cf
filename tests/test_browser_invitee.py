"""The invitee's side in a real browser: Debian's chromium (Playwright) reads the link from
the caught invitation mail and walks the pages served by a real uvicorn process, started
the way `make run` starts it, in front of the dev server and the production worker.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from config import Settings
from content.labels import BASIC_LIMITS
from demo.seed import IndividualSpec, create_individual, create_org
from mailcatcher import read_messages
from messages.payloads import InvitationInput, UserType
from records.ids import invitation_id
from records.tables import Room, User
from tests.browsing import chromium, uvicorn_app
from tests.conftest import ARTIFACTS, free_port, new_worker

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]



@pytest.fixture
def site(dev_env: WorkflowEnvironment, settings: Settings, smtp: Path) -> Iterator[Settings]:
    """`uvicorn --factory linkhandler.app:create_app` on a free port, configured through
    INVITES_* like `make run`; the settings (public URL included) the worker must share."""
    port = free_port()
    served = settings.model_copy(update={"public_base_url": f"http://127.0.0.1:{port}"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVITES_", "TEMPORAL_"))}
    env.update({
        "INVITES_DATABASE_URL": served.database_url,
        "INVITES_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "INVITES_LINK_SECRET": served.link_secret.get_secret_value(),
        "INVITES_PUBLIC_BASE_URL": served.public_base_url,
    })
    with uvicorn_app("linkhandler.app:create_app", port, env, f"{served.public_base_url}/healthz",
                     "link handler"):
        yield served


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


def seed(engine: Engine, settings: Settings, email: str, spec: IndividualSpec) -> int:
    with Session(engine) as s:
        org = create_org(s)
        create_individual(s, settings.recordings_dir, spec)
        s.commit()
        assert org.id is not None
        return org.id


async def invite(dev_env: WorkflowEnvironment, settings: Settings, org: int, email: str,
                 user_type: UserType) -> None:
    await dev_env.client.start_workflow(
        "InvitationWorkflow",
        InvitationInput(account_id=org, invited_by="admin@acme.test", email=email,
                        first_name="Paula", user_type=user_type,
                        message="Hi! We are moving everyone onto the Acme plan."),
        id=invitation_id(org, email), task_queue=settings.task_queue)


async def mail_to(settings: Settings, email: str, kind: str) -> EmailMessage:
    for _ in range(300):
        for msg in read_messages(settings.maildir):
            if msg["To"] == email and msg["X-Email-Kind"] == kind:
                return msg
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {kind} mail to {email}")


async def link_in_invitation(settings: Settings, email: str) -> str:
    msg = await mail_to(settings, email, "invitation")
    assert "invited you to join Acme" in msg["Subject"]
    body = msg.get_body(("plain",))
    assert body is not None
    found = re.findall(re.escape(settings.public_base_url) + r"/i/[A-Za-z0-9_\-.]+",
                       body.get_content())
    assert found, "no link in the invitation mail"
    return str(found[0])


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_paid_invitee_previews_accepts_chooses_refund_and_sees_completion(
    dev_env: WorkflowEnvironment, site: Settings, engine: Engine, browser: Browser,
) -> None:
    email = f"paula.{uuid.uuid4().hex[:8]}@example.com"
    org = seed(engine, site, email, IndividualSpec(
        email=email, first_name="Paula", last_name="Paid", price_minor=1499, meetings=3,
        webinars=1, recordings=1, chat=30, contacts=4, reports=2,
        settings={"cloud_recording": False, "waiting_room": False, "language_pref": "de"}))
    async with new_worker(dev_env.client, site, engine):
        await invite(dev_env, site, org, email, UserType.BASIC)
        link = await link_in_invitation(site, email)
        page = await browser.new_page(accept_downloads=True)
        await page.goto(link)

        await expect(page.locator("h1")).to_contain_text("admin@acme.test invited you to join")
        await expect(page.locator("#message")).to_contain_text("moving everyone")
        await expect(page.locator("#basic-warning")).to_contain_text(BASIC_LIMITS)
        chat = page.locator('tr[data-category="chat"] td.num')
        await expect(chat).to_have_text("30")
        await expect(page.locator('tr[data-setting="waiting_room"]')).to_contain_text(
            "locked by account Acme")
        formula = await page.locator("#refund-formula").inner_text()
        assert re.fullmatch(r"USD \d+\.\d\d = floor\(1499 × \d+ ÷ \d+\)", formula), formula
        await shot(page, "invitee-1-preview")
        async with page.expect_download() as download_info:
            await page.click("#download-reports")
        downloaded = Path(await (await download_info.value).path())
        csv = await asyncio.to_thread(downloaded.read_text)
        assert len(csv.strip().splitlines()) == 3  # header and 2 reports

        await page.click("#accept")
        await expect(page.locator("h1")).to_have_text("Where should your refund go?")
        await expect(page.locator("#refund-formula")).to_contain_text("floor(1499 × ")
        amount = await page.locator("#refund-amount").inner_text()
        await page.check('input[value="account_credit"]')
        await shot(page, "invitee-2-refund")
        await page.click("#confirm-refund")

        await expect(page).to_have_url(re.compile(r"/status$"))
        await expect(page.locator("#status-title")).to_have_text("Welcome to Acme",
                                                                 timeout=60_000)
        await expect(page.locator("#payment")).to_contain_text(amount)
        await expect(page.locator("#payment")).to_contain_text(
            "as credit to the organisation account")
        await expect(page.locator("#reports")).to_contain_text("2 reports stayed behind")
        recordings = page.locator('tr[data-category="recordings"]')
        await expect(recordings).to_have_attribute("data-state", "live")
        await expect(recordings).to_contain_text("Done")
        await shot(page, "invitee-3-completed")
        receipt = await mail_to(site, email, "refund_receipt")
        assert amount in receipt["Subject"]
        await mail_to(site, email, "completion")
        await page.goto(link)  # the link is used up: 410, and says so
        await expect(page.locator("#gone-title")).to_have_text(
            "This invitation has already been used")


async def test_blocked_invitee_sees_what_to_fix_and_tries_again(
    dev_env: WorkflowEnvironment, site: Settings, engine: Engine, browser: Browser,
) -> None:
    email = f"rita.{uuid.uuid4().hex[:8]}@example.com"
    colleague = f"olga.{uuid.uuid4().hex[:8]}@example.com"
    org = seed(engine, site, email, IndividualSpec(
        email=email, first_name="Rita", last_name="Room", rooms=("Rita's Boardroom",),
        other_users=(colleague,)))
    async with new_worker(dev_env.client, site, engine):
        await invite(dev_env, site, org, email, UserType.LICENSED)
        page = await browser.new_page()
        await page.goto(await link_in_invitation(site, email))
        await expect(page.locator("#blocking")).to_contain_text("Rita's Boardroom")
        await page.click("#accept")

        await expect(page.locator(".error-code")).to_have_text("Error 1009")
        items = page.locator("#blocking li")
        await expect(items).to_have_count(2)
        await expect(items.nth(0)).to_contain_text(f"Remove {colleague} from your account")
        await expect(items.nth(1)).to_contain_text(re.compile(r"Delete the room .Rita's Boardroom"))
        await shot(page, "invitee-4-blocked-1009")
        await page.click("#try-again")  # nothing fixed yet: blocked again, still open
        await expect(page.locator(".error-code")).to_have_text("Error 1009")

        with Session(engine) as s:  # the invitee fixes both
            for room in s.exec(select(Room)).all():
                s.delete(room)
            other = s.exec(select(User).where(User.email == colleague)).one()
            other.account_id = org
            s.add(other)
            s.commit()
        await page.click("#try-again")
        await expect(page.locator("#status-title")).to_have_text("Welcome to Acme",
                                                                 timeout=60_000)
        await shot(page, "invitee-5-completed-after-1009")
