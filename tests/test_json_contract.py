"""One JSON contract (issue #12): every JSON answer of the link handler, on every route and
every outcome, errors included, has `outcome`, `status`, `message`, `error_code`,
`blocking` and `quote` (linkhandler/contract.LinkAnswer), and /openapi.json says so."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

import linkhandler.invitee
from config import Settings
from linkhandler.app import create_app
from linkhandler.contract import OUTCOMES, LinkAnswer
from linkhandler.hardening import BadLinkLimiter, SecurityHeaders
from linkhandler.invitee import Gone, Invitee
from linkhandler.pages import Pages
from messages.payloads import (
    ALREADY_JOINING_ANOTHER_ACCOUNT,
    AcceptOutcome,
    InvitationInput,
    InvitationStatus,
    Progress,
    ResendRequest,
    RevokeRequest,
    UserType,
)
from records.ids import invitation_id
from rules.links import LinkClaims, sign
from tests.conftest import new_worker
from tests.test_linkhandler import JSON, PAULA, addr, invite, live_token, seed, until
from tests.test_security import next_second

CONTRACT = {"outcome", "status", "message", "error_code", "blocking", "quote"}


class Seen:
    """Checks each JSON answer against the contract and remembers the outcomes met."""

    def __init__(self) -> None:
        self.outcomes: set[str] = set()

    def __call__(self, r: httpx.Response, code: int, outcome: str,
                 status: str | None = "any") -> dict[str, Any]:
        assert r.status_code == code, (r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")
        body: dict[str, Any] = r.json()
        assert CONTRACT <= set(body), sorted(body)
        LinkAnswer.model_validate(body)
        assert body["outcome"] == outcome and body["message"], body
        if status != "any":
            assert body["status"] == status, body
        if code >= 400:
            assert body["error_code"] is not None, body
        self.outcomes.add(outcome)
        return body


@pytest.fixture
async def http(dev_env: WorkflowEnvironment, settings: Settings, engine: Engine,
               smtp: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, dev_env.client, engine)
    async with new_worker(dev_env.client, settings, engine), app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), headers=JSON,
                              base_url="http://links.test") as client:
        yield client


async def test_every_route_and_outcome_answers_the_contract(
    http: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = Seen()
    seen(await http.get("/healthz"), 200, "ok", None)
    paula, rita, dora = addr("paula"), addr("rita"), addr("dora")
    org = seed(engine, settings, paula, **PAULA)
    from tests.test_hardening import individual
    individual(engine, settings, rita, rooms=("Rita's Boardroom",))
    individual(engine, settings, dora)

    handle, token = await invite(dev_env.client, settings, org, paula)
    preview = seen(await http.get(f"/i/{token}"), 200, "preview", "pending")
    assert preview["quote"]["price_minor"] == 1499 and preview["blocking"] == []
    seen(await http.get(f"/i/{token}/reports.csv"), 200, "reports", "pending")
    choice = seen(await http.post(f"/i/{token}/accept", json=preview["form"]), 200,
                  "refund_choice_needed", "awaiting_refund_choice")
    assert choice["quote"]["amount_minor"] > 0
    seen(await http.get(f"/i/{token}"), 200, "refund_choice_needed", "awaiting_refund_choice")
    bad = seen(await http.post(f"/i/{token}/refund", json={**choice["form"],
                                                             "destination": "bitcoin"}),
               422, "refund_choice_needed", "awaiting_refund_choice")
    assert bad["error_code"] == "invalid_refund_destination"
    seen(await http.post(f"/i/{token}/refund", json={**choice["form"], "destination":
                                                     "account_credit"}), 200, "accepted")
    seen(await http.post(f"/i/{token}/accept", json={"nonce": "n", "csrf": "c"}), 403,
         "invalid_form", None)

    async def completed() -> bool:
        return bool((await http.get(f"/i/{token}/status")).json()["final"])
    await until(completed)
    seen(await http.get(f"/i/{token}/status"), 200, "status", "completed")
    ended = seen(await http.get(f"/i/{token}"), 410, "ended", "completed")
    assert ended["reason"] == "completed" and ended["error_code"] == "completed"

    rh, rt = await invite(dev_env.client, settings, org, rita)
    form = (await http.get(f"/i/{rt}")).json()["form"]
    blocked = seen(await http.post(f"/i/{rt}/accept", json=form), 409, "blocked", "blocked")
    assert blocked["error_code"] == 1009 and blocked["blocking"][0]["kind"] == "room"
    await next_second(datetime.fromisoformat((await rh.query("progress"))["link_issued_at"]))
    await rh.execute_update("resend", ResendRequest())
    seen(await http.get(f"/i/{rt}"), 410, "superseded", "blocked")
    seen(await http.get(f"/i/{await live_token(rh, settings)}"), 200, "preview", "blocked")
    await rh.execute_update("revoke", RevokeRequest())

    dh, dt = await invite(dev_env.client, settings, org, dora)
    form = (await http.get(f"/i/{dt}")).json()["form"]
    seen(await http.post(f"/i/{dt}/decline", json=form), 200, "declined", "declined")
    seen(await http.get(f"/i/{dt}/status"), 410, "ended", "declined")

    seen(await http.get("/i/garbage"), 400, "invalid_link", None)
    seen(await http.get("/nowhere"), 404, "not_found", None)
    seen(await http.put(f"/i/{dt}"), 405, "method_not_allowed", None)
    unknown = sign(settings.link_secret.get_secret_value(), invitation_id(org, "no@x.com"),
                   "no@x.com", datetime.now(UTC))
    seen(await http.get(f"/i/{unknown}"), 410, "unavailable", None)
    for _ in range(20):
        await http.get("/i/still-garbage")
    limited = seen(await http.get("/i/garbage"), 429, "rate_limited", None)
    assert limited["error_code"] == "rate_limited"

    # 503: an invitation whose state cannot be read (no worker answers its query).
    monkeypatch.setattr(linkhandler.invitee, "RPC_TIMEOUT", timedelta(seconds=1))
    lost = addr("lost")
    wid = invitation_id(org, lost)
    orphan = await dev_env.client.start_workflow(
        "InvitationWorkflow", InvitationInput(account_id=org, invited_by="admin@acme.test",
                                              email=lost), id=wid,
        task_queue=f"nobody-{uuid.uuid4()}")
    stuck = sign(settings.link_secret.get_secret_value(), wid, lost, datetime.now(UTC))
    seen(await http.get(f"/i/{stuck}"), 503, "temporarily_unavailable", None)
    await orphan.terminate()

    assert seen.outcomes == set(OUTCOMES) - {
        "in_progress", "already_joining", "no_free_seat",  # test_injected_outcomes_...
        "expired",  # days must pass: test_linkhandler.test_expired_link_is_410_expired
        "unauthorized", "invalid_payloads",  # the codec endpoint: tests/test_codec.py
    }
    await handle.result()


def _invitee(status: InvitationStatus) -> Invitee:
    now = datetime.now(UTC)
    p = Progress(invitation_id="invitation-1-ada@example.com", status=status, account_id=1,
                 account_name="Acme", invited_by="admin@acme.test", email="ada@example.com",
                 user_type=UserType.LICENSED, invited_at=now, expires_at=now + timedelta(days=30),
                 link_issued_at=now, step="Moving chat messages")
    claims = LinkClaims(p.invitation_id, p.email, now)
    return Invitee(token="tok.en", claims=claims, progress=p, handle=None)  # type: ignore[arg-type]


ALREADY = AcceptOutcome(
    outcome="already_joining", error_code=ALREADY_JOINING_ANOTHER_ACCOUNT,
    joining_account_name="Globex", message="Your account is already joining Globex. This "
    "invitation stays open: you can accept it if that join does not go through.")


NO_SEAT = AcceptOutcome(
    outcome="no_free_seat", error_code="no_free_licensed_seat", joining_account_name="Acme",
    message="Acme has no free licensed seat right now, so you cannot join yet.")


@pytest.fixture
def pages_app(settings: Settings) -> FastAPI:
    """The real Pages behind two routes that answer with an injected outcome: no workflow
    can produce "already_joining" yet (the lead's database claim will)."""
    pages = Pages(settings)
    app = FastAPI()

    @app.post("/i/{token}/accept")
    async def accept(token: str, request: Request) -> Response:
        return pages.outcome(request, _invitee(InvitationStatus.PENDING), ALREADY)

    @app.post("/i/{token}/refund")  # stands for an accept refused for want of a seat
    async def no_seat(token: str, request: Request) -> Response:
        return pages.outcome(request, _invitee(InvitationStatus.PENDING), NO_SEAT)

    @app.get("/i/{token}")
    async def moving(token: str, request: Request) -> Response:
        return pages.see_status(request, _invitee(InvitationStatus.TRANSFERRING))

    @app.get("/i/{token}/reports.csv")
    async def reports(token: str, request: Request) -> Response:  # as app.reports does
        raise Gone("transferring", _invitee(InvitationStatus.TRANSFERRING).progress)

    app.add_middleware(SecurityHeaders, https=False)
    pages.install_error_pages(app, BadLinkLimiter())
    return app


async def test_injected_outcomes_answer_the_contract(pages_app: FastAPI) -> None:
    seen = Seen()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=pages_app),
                                 base_url="http://links.test") as http:
        body = seen(await http.post("/i/tok.en/accept", headers=JSON), 409, "already_joining",
                    "pending")
        assert body["error_code"] == "already_joining_another_account"
        assert body["joining_account_name"] == "Globex"
        assert body["message"].startswith("Your account is already joining Globex.")
        assert body["accept_outcome"]["outcome"] == "already_joining"
        page = await http.post("/i/tok.en/accept")
        assert page.status_code == 409 and page.headers["content-type"].startswith("text/html")
        text = " ".join(page.text.split())
        for fact in ("Your account is already joining Globex",
                     "This invitation from admin@acme.test to join Acme stays open",
                     "You can accept it if that join does not go through",
                     'data-error-code="already_joining_another_account"'):
            assert fact in text, fact
        assert "content-security-policy" in page.headers
        full = seen(await http.post("/i/tok.en/refund", headers=JSON), 409, "no_free_seat",
                    "pending")
        assert full["error_code"] == "no_free_licensed_seat"
        assert full["message"].startswith("Acme has no free licensed seat")
        moving = seen(await http.get("/i/tok.en", headers=JSON), 200, "in_progress",
                      "transferring")
        assert moving["message"] == "Moving chat messages"
        assert (await http.get("/i/tok.en")).status_code == 303
        closed = seen(await http.get("/i/tok.en/reports.csv", headers=JSON), 410,
                      "unavailable", "transferring")
        assert closed["message"] == "Reports are no longer handed out here"
        page = await http.get("/i/tok.en/reports.csv")
        assert "reports are handed out here only while an invitation is open" in page.text


async def test_openapi_documents_the_contract(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine,
) -> None:
    app = create_app(settings, dev_env.client, engine)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://links.test") as http:
        doc = (await http.get("/openapi.json")).json()
    schema = doc["components"]["schemas"]["LinkAnswer"]
    assert CONTRACT <= set(schema["properties"]) and set(schema["required"]) == {
        "outcome", "message"}
    assert set(OUTCOMES) == set(schema["properties"]["outcome"]["enum"])
    for path in ("/i/{token}", "/i/{token}/accept", "/i/{token}/refund", "/i/{token}/decline",
                 "/i/{token}/status", "/i/{token}/reports.csv"):
        for method in doc["paths"][path].values():
            for code in ("400", "410", "429", "503"):
                ref = method["responses"][code]["content"]["application/json"]["schema"]
                assert ref["$ref"].endswith("/LinkAnswer"), (path, code)
