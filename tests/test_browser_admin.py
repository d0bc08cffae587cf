"""The admin's side in a real browser: Debian's chromium (Playwright) signs in from the
caught sign-in mail and drives the console served by a real uvicorn process (started the
way `make run` starts it), in front of the dev server and the production worker: add three
people (one invalid), see them pending, resend one, revoke one, and follow one to completed.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from admin.sessions import SIGNIN_MAIL_KIND
from config import Settings
from demo.seed import IndividualSpec, create_individual, create_org
from invitations.client import InvitationsClient
from mailcatcher import read_messages
from records.ids import invitation_id
from records.tables import SentEmail
from tests.browsing import chromium, uvicorn_app
from tests.conftest import ARTIFACTS, free_port, new_worker
from tests.workflow_helpers import eventually

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

ADMIN = "admin@acme.test"


@pytest.fixture
def console_site(dev_env: WorkflowEnvironment, settings: Settings, smtp: Path
                 ) -> Iterator[Settings]:
    """`uvicorn --factory admin.app:create_admin_app` on a free port, configured through
    INVITES_* like `make run`."""
    port = free_port()
    served = settings.model_copy(update={"admin_base_url": f"http://127.0.0.1:{port}"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVITES_", "TEMPORAL_"))}
    env.update({
        "INVITES_DATABASE_URL": served.database_url,
        "INVITES_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "INVITES_TASK_QUEUE": served.task_queue,
        "INVITES_LINK_SECRET": served.link_secret.get_secret_value(),
        "INVITES_PUBLIC_BASE_URL": served.public_base_url,
        "INVITES_ADMIN_BASE_URL": served.admin_base_url,
        "INVITES_SMTP_HOST": served.smtp_host,
        "INVITES_SMTP_PORT": str(served.smtp_port),
    })
    with uvicorn_app("admin.app:create_admin_app", port, env, f"{served.admin_base_url}/signin",
                     "admin app", "--no-server-header"):
        yield served


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def mails(settings: Settings, to: str, kind: str) -> list[str]:
    """Plain-text bodies of the caught mails of `kind` to `to`."""
    found = []
    for msg in read_messages(settings.maildir):
        if msg["To"] == to and msg["X-Email-Kind"] == kind:
            body = msg.get_body(("plain",))
            assert body is not None
            found.append(body.get_content())
    return found


async def test_admin_signs_in_invites_resends_revokes_and_follows_one_to_completion(
    dev_env: WorkflowEnvironment, console_site: Settings, engine: Engine, browser: Browser,
) -> None:
    site = console_site
    tag = uuid.uuid4().hex[:8]
    ada, bob = f"ada.{tag}@example.com", f"bob.{tag}@example.com"
    with Session(engine) as s:
        org = create_org(s, "Acme")
        for email, first in ((ada, "Ada"), (bob, "Bob")):
            create_individual(s, site.recordings_dir, IndividualSpec(
                email=email, first_name=first, meetings=2, chat=15, contacts=2))
        s.commit()
        assert org.id is not None
        acme = org.id

    async with new_worker(dev_env.client, site, engine):
        page = await browser.new_page()
        await page.goto(f"{site.admin_base_url}/users")  # not signed in: to the sign-in page
        await expect(page.locator("#signin-title")).to_have_text("Sign in")
        await page.fill("#email", ADMIN)
        await page.click("#send-link")
        await expect(page.locator("#signin-title")).to_have_text("Check your mail")
        [body] = await eventually(lambda: mails(site, ADMIN, SIGNIN_MAIL_KIND), within=20,
                                  what="the sign-in mail")
        [link] = re.findall(re.escape(site.admin_base_url) + r"/signin/[\w\-]+", body)
        await page.goto(link)
        await expect(page.locator("#confirm-email")).to_have_text(ADMIN)
        await shot(page, "admin-0-confirm-sign-in")
        await page.click("#confirm-signin")
        await expect(page.locator("#signed-in-as")).to_have_text(ADMIN)
        await expect(page.locator("#members")).to_contain_text("owner@acme.test")
        await shot(page, "admin-1-users")

        await page.click("#tab-add")
        await page.fill("#addresses", f"Ada Lovelace <{ada}>\nnot-an-address\n{bob}")
        await page.select_option("#user_type", "basic")
        await page.fill("#message", "We are moving everyone onto the Acme plan.")
        await page.click("#invite")
        await expect(page.locator("#summary")).to_have_text(
            "2 invited, 0 already pending, 1 not invited.")
        invalid = page.locator('tr[data-email="not-an-address"]')
        await expect(invalid).to_contain_text("email: 'not-an-address' is not a valid email")
        await expect(page.locator("#addresses")).to_have_value("not-an-address")  # to fix
        await shot(page, "admin-2-added")

        await page.click("#tab-pending")
        rows = page.locator("#pending tbody tr")
        await expect(rows).to_have_count(2)
        ada_row, bob_row = (page.locator(f'#pending tr[data-email="{e}"]') for e in (ada, bob))
        await expect(ada_row).to_contain_text("Pending")
        await expect(ada_row.locator(".reminders")).to_have_text("0")
        await eventually(lambda: len(mails(site, ada, "invitation")) == 1, within=30,
                         what="Ada's invitation mail")

        def recorded() -> bool:  # the mail's row is written once the server took it
            with Session(engine) as s:
                return s.exec(select(SentEmail).where(SentEmail.to == ada,
                                                      SentEmail.kind == "invitation")).first() \
                    is not None
        await eventually(recorded, within=30, what="Ada's invitation mail recorded")
        await page.reload()
        await expect(ada_row).not_to_contain_text("not yet")  # when the mail went out
        await shot(page, "admin-3-pending")

        await ada_row.locator('button[data-action="resend"]').click()
        await expect(page.locator("#notice")).to_contain_text(
            f"A new invitation email was sent to {ada}")
        await eventually(lambda: len(mails(site, ada, "invitation")) == 2, within=30,
                         what="Ada's second invitation mail")
        await bob_row.locator('summary[data-action="revoke"]').click()
        await bob_row.locator('input[name="reason"]').fill("Invited by mistake")
        await bob_row.locator('button[data-action="confirm-revoke"]').click()
        await expect(page.locator("#notice")).to_contain_text(
            f"The invitation of {bob} was revoked")
        await expect(bob_row).to_have_count(0)
        await expect(rows).to_have_count(1)
        await shot(page, "admin-4-resent-revoked")

        # Ada accepts (as the link handler would) and her data moves.
        inv = invitation_id(acme, ada)
        client = InvitationsClient(dev_env.client, site, engine)
        outcome = await client.accept(inv)
        assert outcome.outcome == "accepted", outcome
        await ada_row.locator("a").click()
        await expect(page.locator("#invitation-email")).to_have_text(ada)
        status = page.locator("#invitation-status")
        await expect(status).to_have_attribute("data-status", "completed", timeout=60_000)
        await expect(page.locator('#progress tr[data-category="chat"]')).to_contain_text(
            "15 / 15")
        await expect(page.locator('#progress tr[data-category="chat"]')).to_have_attribute(
            "data-state", "live")
        await shot(page, "admin-5-completed")

        await page.click("#sign-out")
        await expect(page.locator("#notice")).to_have_text("You are signed out.")
        await page.goto(f"{site.admin_base_url}/invitations/{inv}")
        await expect(page.locator("#signin-title")).to_have_text("Sign in")
