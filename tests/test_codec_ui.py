"""The Web UI decodes encrypted payloads through our codec endpoint, as `make run` wires it:
a dev server started with --ui-codec-endpoint pointing at the link handler (a real uvicorn
process) with the codec token in the path. Chromium opens a blocked invitation and reads
its summary and current details in clear, which the server holds only encrypted
(tests/test_codec.py)."""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from config import ROOT, Settings, data_converter
from invitations import InvitationsClient
from messages import search_attributes
from messages.payloads import AcceptRequest
from payload_codec import new_key_spec
from tests.browsing import chromium
from tests.conftest import ARTIFACTS, _binary, free_port, new_worker
from tests.test_codec import TOKEN
from tests.test_hardening import individual
from tests.test_linkhandler import seed, until
from tests.test_security import clean_env

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]



@pytest.fixture
async def stack(settings: Settings, engine: Engine,
                smtp: Path) -> AsyncIterator[tuple[WorkflowEnvironment, Settings, str]]:
    """A dev server of its own (its UI wired to our codec), and the link handler serving
    the codec endpoint; the settings every process shares and the UI's address."""
    ui_port, http_port = free_port(), free_port()
    ui = f"http://127.0.0.1:{ui_port}"
    keys = new_key_spec("ui1")
    shared = settings.model_copy(update={"payload_keys": SecretStr(keys),
                                         "codec_auth_token": SecretStr(TOKEN)})
    env = await WorkflowEnvironment.start_local(
        data_converter=data_converter(shared), dev_server_existing_path=_binary("temporal"),
        ip="127.0.0.1", port=free_port(), search_attributes=search_attributes.ALL, ui=True,
        ui_port=ui_port, dev_server_extra_args=[
            "--ui-codec-endpoint", f"http://127.0.0.1:{http_port}/codec/{TOKEN}"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "linkhandler.app:create_app",
         "--host", "127.0.0.1", "--port", str(http_port), "--no-server-header"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(
            INVITES_DATABASE_URL=settings.database_url,
            INVITES_LINK_SECRET=settings.link_secret.get_secret_value(),
            INVITES_TEMPORAL_ADDRESS=env.client.service_client.config.target_host,
            INVITES_PAYLOAD_KEYS=keys, INVITES_CODEC_AUTH_TOKEN=TOKEN,
            INVITES_CODEC_CORS_ORIGINS=f"{ui},http://localhost:{ui_port}"))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
            async def up() -> bool:
                assert proc.poll() is None, "link handler exited"
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False
            await until(up)
        yield env, shared, ui
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        await env.shutdown()


async def test_the_web_ui_shows_decoded_progress(
    stack: tuple[WorkflowEnvironment, Settings, str], engine: Engine,
) -> None:
    from playwright.async_api import Error as PlaywrightError

    env, shared, ui = stack
    rita = f"rita.{uuid.uuid4().hex[:8]}@example.com"
    org = seed(engine, shared, "owner.unused@example.com", no_account=True)
    individual(engine, shared, rita, rooms=("Rita's Codec Room",))
    invitations = InvitationsClient(env.client, shared, engine)
    async with new_worker(env.client, shared, engine):
        wid = (await invitations.invite(org, "admin@acme.test", rita)).invitation_id
        assert (await invitations.accept(wid, AcceptRequest())).outcome == "blocked"
        url = f"{ui}/namespaces/default/workflows/{urllib.parse.quote(wid)}"
        ARTIFACTS.mkdir(exist_ok=True)
        async with chromium() as browser:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            await page.goto(url)

            async def decoded() -> bool:
                texts = []
                for frame in page.frames:
                    try:
                        texts.append(await frame.inner_text("body", timeout=1_000))
                    except PlaywrightError:
                        continue
                text = "\n".join(texts).replace("’", "'")
                # Summary and current details: encrypted payloads, shown decoded.
                return f"Invite {rita} to Acme" in text and "Rita's Codec Room" in text
            try:
                await page.get_by_text("User Metadata").first.click(timeout=30_000)
                await until(decoded, seconds=60)
            finally:
                await page.screenshot(path=str(ARTIFACTS / "temporal-ui-decoded.png"),
                                      full_page=True)
        await invitations.revoke(wid)
