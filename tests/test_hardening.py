"""Hardened pages (issue #12): every response carries the security headers, no page has
inline script or style, invalid links are rate limited per client, reports are handed out
only while the invitation is open, and no log line ever shows a token, whatever its shape
(a real uvicorn process, its access log included)."""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from config import ROOT, Settings
from demo.seed import IndividualSpec, create_individual
from linkhandler.app import create_app
from linkhandler.hardening import BadLinkLimiter
from messages.payloads import RevokeRequest
from tests.conftest import free_port, new_worker
from tests.test_linkhandler import JSON, PAULA, addr, form_in, invite, seed, until
from tests.test_security import clean_env

EXPECTED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_hardened(r: httpx.Response, what: str, https: bool = False) -> None:
    csp = r.headers.get("content-security-policy", "")
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, what
    assert "unsafe-inline" not in csp, what
    for name, value in EXPECTED.items():
        assert r.headers.get(name) == value, f"{what}: {name}"
    assert ("strict-transport-security" in r.headers) is https, what
    assert "server" not in r.headers, what
    if r.headers.get("content-type", "").startswith("text/html"):
        assert "<script" not in r.text and "<style" not in r.text, what
        assert "style=" not in r.text and " on" + "click=" not in r.text, what


def individual(engine: Engine, settings: Settings, email: str, **spec: object) -> None:
    """Another invitee for the Acme that `seed` made."""
    with Session(engine) as s:
        create_individual(s, settings.recordings_dir, IndividualSpec(email=email, **spec))
        s.commit()


@pytest.fixture
async def http(dev_env: WorkflowEnvironment, settings: Settings, engine: Engine,
               smtp: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, dev_env.client, engine)
    async with new_worker(dev_env.client, settings, engine), app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("198.51.100.7", 1)),
                              base_url="http://links.test") as client:
        yield client


async def test_every_page_carries_the_security_headers(
    http: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    paula, rita, fran, dora = addr("paula"), addr("rita"), addr("fran"), addr("dora")
    org = seed(engine, settings, paula, **PAULA)
    individual(engine, settings, rita, rooms=("Rita's Boardroom",))
    individual(engine, settings, fran)
    individual(engine, settings, dora)
    pages: dict[str, httpx.Response] = {}
    _, tp = await invite(dev_env.client, settings, org, paula)
    pages["preview"] = preview = await http.get(f"/i/{tp}")
    pages["refund"] = await http.post(f"/i/{tp}/accept", data=form_in(preview.text))
    _, tr = await invite(dev_env.client, settings, org, rita)
    pages["blocked"] = await http.post(f"/i/{tr}/accept",
                                       data=form_in((await http.get(f"/i/{tr}")).text))
    fh, tf = await invite(dev_env.client, settings, org, fran)
    pages["accepted (303)"] = await http.post(f"/i/{tf}/accept",
                                              data=form_in((await http.get(f"/i/{tf}")).text))
    pages["status"] = await http.get(f"/i/{tf}/status")
    dh, td = await invite(dev_env.client, settings, org, dora)
    pages["declined"] = await http.post(f"/i/{td}/decline",
                                        data=form_in((await http.get(f"/i/{td}")).text))
    pages["400"] = await http.get("/i/not-a-token")
    pages["410"] = await http.get(f"/i/{td}")
    pages["404"] = await http.get("/nothing-here")
    pages["405"] = await http.delete(f"/i/{tp}")
    pages["static"] = await http.get("/static/style.css")
    pages["openapi"] = await http.get("/openapi.json")
    pages["json"] = await http.get(f"/i/{tp}", headers=JSON)
    codes = {name: r.status_code for name, r in pages.items()}
    assert codes == {"preview": 200, "refund": 200, "blocked": 409, "accepted (303)": 303,
                     "status": 200, "declined": 200, "400": 400, "410": 410, "404": 404,
                     "405": 405, "static": 200, "openapi": 200, "json": 200}
    for name, r in pages.items():
        assert_hardened(r, name)
        if name not in ("static", "404", "405", "openapi"):
            assert r.headers["cache-control"] == "no-store", name
    await fh.result()


async def test_hsts_when_the_public_url_is_https(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine,
) -> None:
    public = settings.model_copy(update={"public_base_url": "https://invites.example.com"})
    app = create_app(public, dev_env.client, engine)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://links.test") as http:
        for path in ("/static/style.css", "/i/bad", "/healthz"):
            r = await http.get(path)
            assert_hardened(r, path, https=True)
            assert r.headers["strict-transport-security"].startswith("max-age=")


async def test_invalid_links_are_rate_limited_per_client_and_valid_ones_never(
    http: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    vic = addr("vic")
    org = seed(engine, settings, vic)
    handle, token = await invite(dev_env.client, settings, org, vic)
    body, mac = token.split(".")
    # Twenty different tokens, none of them valid (a digit appended breaks the signature;
    # replacing the last character could put the right one back).
    answers = [(await http.get(f"/i/{body}.{mac}{n}")).status_code for n in range(20)]
    assert answers == [400] * 20  # the burst
    limited = await http.get(f"/i/{body}.x", headers=JSON)
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 3
    assert limited.json()["outcome"] == "rate_limited"
    assert_hardened(limited, "429")
    assert "Too many invalid links" in (await http.get(f"/i/{body}")).text
    assert (await http.get(f"/i/{token}")).status_code == 200  # a valid link still works
    form = form_in((await http.get(f"/i/{token}")).text)
    assert (await http.post(f"/i/{token}/decline", data=form)).status_code == 200
    app = http._transport.app  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app,
                                 client=("192.0.2.9", 1)), base_url="http://links.test") as other:
        assert (await other.get(f"/i/{body}.x")).status_code == 400  # another client: its own
    await handle.result()


def test_the_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = BadLinkLimiter(burst=3, per_seconds=3, clock=lambda: now[0])
    assert [limiter.record_failure("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.record_failure("a") == 1 and limiter.record_failure("b") == 0
    now[0] = 1.0  # one token back
    assert limiter.record_failure("a") == 0 and limiter.record_failure("a") == 1
    limiter.MAX_CLIENTS = 1
    now[0] = 100.0
    limiter.record_failure("c")  # over the bound: refilled buckets are forgotten
    assert set(limiter.buckets) == {"c"}


async def test_reports_only_while_the_invitation_is_open(
    http: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    paula, rob = addr("paula"), addr("rob")
    org = seed(engine, settings, paula, **{**PAULA, "price_minor": 0})
    individual(engine, settings, rob, reports=2)
    handle, token = await invite(dev_env.client, settings, org, paula)
    assert (await http.get(f"/i/{token}/reports.csv")).status_code == 200
    await http.post(f"/i/{token}/accept", data=form_in((await http.get(f"/i/{token}")).text))
    assert (await handle.result())["status"] == "completed"
    r = await http.get(f"/i/{token}/reports.csv", headers=JSON)
    assert (r.status_code, r.json()["outcome"], r.json()["status"]) == (410, "ended", "completed")
    page = (await http.get(f"/i/{token}/status")).text
    assert "3 reports stayed behind" in page and "reports.csv" not in page
    rh, rt = await invite(dev_env.client, settings, org, rob)
    assert (await http.get(f"/i/{rt}/reports.csv")).status_code == 200
    await rh.execute_update("revoke", RevokeRequest())
    assert (await http.get(f"/i/{rt}/reports.csv")).status_code == 410


async def test_no_log_line_shows_a_token_whatever_its_shape(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
    tmp_path: Path,
) -> None:
    """The real process, as `make run` serves it, with its access log on."""
    secret = settings.link_secret.get_secret_value()
    port = free_port()
    log = tmp_path / "linkhandler.log"
    env = clean_env(INVITES_DATABASE_URL=settings.database_url, INVITES_LINK_SECRET=secret,
                    INVITES_TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host,
                    INVITES_TASK_QUEUE=settings.task_queue)
    vera = addr("vera")
    org = seed(engine, settings, vera)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "linkhandler.app:create_app",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "info",
             "--no-server-header"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        async with new_worker(dev_env.client, settings, engine), \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            async def up() -> bool:
                assert proc.poll() is None, log.read_text()
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False
            await until(up)
            handle, token = await invite(dev_env.client, settings, org, vera)
            body, mac = token.split(".")
            shapes = [
                f"/i/{token}", f"/i/{token}/status", f"/i/{body}{mac}", f"/i/{body}.{mac[:-4]}",
                f"/i/{body}%2E{mac}", f"/i/{urllib.parse.quote(token, safe='')}%00",
                f"/i/{body}/{mac}", f"/i/{token}/extra/segments", f"/i/{token}?utm={mac}",
                f"/I/{token}", f"//i/{token}", f"/i/{body}", f"/i/.{mac}", f"/x/i/{token}",
            ]
            got = {}
            for path in shapes:
                r = await client.get(path)
                got[path] = r.status_code
                assert "server" not in r.headers and "content-security-policy" in r.headers
            assert got[f"/i/{token}"] == 200 and got[f"/i/{body}{mac}"] == 400
            await handle.execute_update("revoke", RevokeRequest())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    text = log.read_text()
    assert text.count("GET /i/<token>") >= 5, text  # the access log was on, and masked
    assert "/i/<token>/status" in text
    for secret_part in (body[:16], body[-16:], mac[:16], mac[-16:], secret):
        assert secret_part not in text, f"{secret_part!r} leaked:\n{text}"
