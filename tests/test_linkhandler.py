"""The link handler over HTTP (httpx against the ASGI app), with the dev server and the
production worker behind it: every page and outcome, in HTML and JSON. Expiry needs
days to pass, so that one test runs on the time-skipping server."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from config import Settings
from content.labels import BASIC_LIMITS
from demo.seed import IndividualSpec, create_individual, create_org
from linkhandler.app import create_app
from messages.activity_io import AcceptanceCheck, AcceptanceFacts, Transfer, Transferred
from messages.payloads import InvitationInput, RevokeRequest, UserType
from records.ids import invitation_id
from records.tables import AuditEvent, Room
from rules.links import sign
from tests.conftest import new_worker
from worker import build_activities

JSON = {"Accept": "application/json"}
NONCE_RE = re.compile(
    r'name="nonce" value="([^"]+)"><input type="hidden" name="csrf" value="([^"]+)"')
PAULA = dict(price_minor=1499, reports=3, meetings=4, webinars=1, chat=25, contacts=2,
             settings={"cloud_recording": False, "language_pref": "de"})


def addr(name: str) -> str:
    """Unique per test: the dev server outlives a test, and workflow ids derive from emails."""
    return f"{name}.{uuid.uuid4().hex[:8]}@example.com"


def seed(engine: Engine, settings: Settings, email: str, /, **spec: Any) -> int:
    """Acme, and (unless spec is None) an individual account for `email`; Acme's id."""
    with Session(engine) as s:
        org = create_org(s)
        if spec.pop("no_account", False) is False:
            create_individual(s, settings.recordings_dir, IndividualSpec(
                email=email, first_name="Paula", last_name="Paid", **spec))
        s.commit()
        assert org.id is not None
        return org.id


async def invite(client: Client, settings: Settings, org_id: int, email: str,
                 **kw: Any) -> tuple[WorkflowHandle[Any, Any], str]:
    """Start the invitation and wait until it is registered; its handle and link token."""
    inp = InvitationInput(account_id=org_id, invited_by="admin@acme.test", email=email,
                          first_name="Paula", user_type=kw.pop("user_type", UserType.BASIC),
                          message="Welcome to Acme!", **kw)
    wid = invitation_id(org_id, email)
    handle = await client.start_workflow("InvitationWorkflow", inp, id=wid,
                                         task_queue=settings.task_queue)
    for _ in range(200):
        p = await handle.query("progress")
        if p["account_name"]:
            break
        await asyncio.sleep(0.05)
    return handle, await live_token(handle, settings)


async def live_token(handle: WorkflowHandle[Any, Any], settings: Settings) -> str:
    """The token of the latest invitation email: signed with the invitation's issue time."""
    p = await handle.query("progress")
    issued = datetime.fromisoformat(p["link_issued_at"])
    return sign(settings.link_secret.get_secret_value(), p["invitation_id"], p["email"], issued)


def form_in(html: str) -> dict[str, str]:
    nonce, csrf = NONCE_RE.findall(html)[0]
    return {"nonce": nonce, "csrf": csrf}


def events(engine: Engine, inv: str, kind: str) -> int:
    with Session(engine) as s:
        return len(s.exec(select(AuditEvent).where(AuditEvent.invitation_id == inv,
                                                   AuditEvent.kind == kind)).all())


async def until(check: Callable[[], Any], seconds: float = 30) -> Any:
    for _ in range(int(seconds / 0.1)):
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


@pytest.fixture
async def http(dev_env: WorkflowEnvironment, settings: Settings, engine: Engine,
               smtp: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, dev_env.client, engine)
    async with new_worker(dev_env.client, settings, engine), \
            app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                              base_url="http://links.test") as client:
        yield client


async def test_tampered_and_foreign_links_are_400_and_say_nothing(
    http: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    paula = addr("paula")
    org = seed(engine, settings, paula)
    _, token = await invite(dev_env.client, settings, org, paula)
    body, mac = token.split(".")
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
    foreign = sign("another-secret", invitation_id(org, paula),
                   paula, datetime.now(UTC))
    for bad in (f"{flipped}.{mac}", f"{body}.{mac[:-2]}", "garbage", foreign):
        r = await http.get(f"/i/{bad}")
        assert r.status_code == 400 and "This link is not valid" in r.text
        assert "Acme" not in r.text and "paula" not in r.text
        assert (await http.get(f"/i/{bad}/status", headers=JSON)).json()["error"] == \
            "invalid_link"
        assert (await http.get(f"/i/{bad}/reports.csv")).status_code == 400
        assert (await http.post(f"/i/{bad}/accept", data={"nonce": "n", "csrf": "c"})
                ).status_code == 400


async def test_unknown_invitation_is_410_whether_or_not_the_email_has_an_account(
    http: httpx.AsyncClient, settings: Settings, engine: Engine,
) -> None:
    org = seed(engine, settings, "has.account@example.com")
    answers = []
    for email in ("has.account@example.com", "no.account@example.com"):
        token = sign(settings.link_secret.get_secret_value(), invitation_id(org, email), email,
                     datetime.now(UTC))
        r = await http.get(f"/i/{token}")
        assert r.status_code == 410 and "no longer available" in r.text
        answers.append((await http.get(f"/i/{token}", headers=JSON)).json())
    assert answers[0] == answers[1]
    assert answers[0] == {"error": "gone", "reason": "unavailable", "outcome": "unavailable",
                          "status": None, "error_code": "unavailable", "blocking": [],
                          "quote": None, "message": "This invitation is no longer available"}


async def test_preview_is_exact_and_reports_download(
    http: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    paula = addr("paula")
    org = seed(engine, settings, paula, **PAULA)
    _, token = await invite(dev_env.client, settings, org, paula)
    page = await http.get(f"/i/{token}")
    assert page.status_code == 200
    html = page.text
    for fact in ("admin@acme.test invited you to join", "Welcome to Acme!", BASIC_LIMITS,
                 "Your own Pro plan includes these features today",
                 'data-category="meetings"><td>Scheduled meetings and webinars</td>'
                 '<td class="num">5</td>', "Download your reports (CSV)",
                 "locked by account Acme", 'id="accept"', 'id="decline"'):
        assert fact in html, fact
    data = (await http.get(f"/i/{token}", headers=JSON)).json()
    pv = data["preview"]
    assert data["status"] == "pending" and data["basic_limits"] == BASIC_LIMITS
    assert {c["category"]: c["items"] for c in pv["counts"]} == {
        "profile": 1, "meetings": 5, "recordings": 0, "chat": 25, "contacts": 2, "settings": 2}
    assert [(c["key"], c["old"], c["new"]) for c in pv["settings_changes"]] == [
        ("cloud_recording", False, True)]
    assert pv["reports_left_behind"] == 3 and pv["blocking"] == []
    q = pv["quote"]
    assert 0 < q["amount_minor"] < 1499 and q["price_minor"] == 1499
    expected = (f"USD {q['amount_minor'] // 100}.{q['amount_minor'] % 100:02d} = floor(1499 × "
                f"{q['seconds_left']} ÷ {q['period_seconds']})")
    assert data["refund_formula"] == expected and expected in html
    assert set(data["form"]) == {"nonce", "csrf"}
    csv = await http.get(f"/i/{token}/reports.csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0] == "kind,title,held_on,participants,minutes" and len(lines) == 4


async def test_preview_for_an_email_without_account_shows_nothing_to_move(
    http: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    newcomer = addr("newcomer")
    org = seed(engine, settings, newcomer, no_account=True)
    _, token = await invite(dev_env.client, settings, org, newcomer,
                            user_type=UserType.LICENSED)
    data = (await http.get(f"/i/{token}", headers=JSON)).json()
    assert all(c["items"] == 0 for c in data["preview"]["counts"])
    assert data["preview"]["quote"] is None and data["basic_limits"] is None
    html = (await http.get(f"/i/{token}")).text
    assert "nothing to refund" in html and BASIC_LIMITS not in html


async def test_paid_user_accepts_chooses_refund_and_sees_completion(
    http: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    paula = addr("paula")
    org = seed(engine, settings, paula, **PAULA)
    handle, token = await invite(dev_env.client, settings, org, paula)
    accepted = await http.post(f"/i/{token}/accept", data=form_in((await http.get(
        f"/i/{token}")).text))
    assert accepted.status_code == 200 and "Where should your refund go?" in accepted.text
    assert "floor(1499 × " in accepted.text and "card ending 4242" in accepted.text
    # Reloading the link shows the refund choice again, not the preview.
    again = await http.get(f"/i/{token}", headers=JSON)
    assert again.json()["status"] == "awaiting_refund_choice"
    amount = again.json()["quote"]["amount_minor"]
    done = await http.post(f"/i/{token}/refund", data={
        **form_in(accepted.text), "destination": "account_credit"})
    assert done.status_code == 303 and done.headers["location"] == f"/i/{token}/status"

    async def completed() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"/i/{token}/status", headers=JSON)).json()
        return body if body["final"] else None

    status = await until(completed)
    assert status["status"] == "completed"
    assert status["progress"]["payment"]["amount_minor"] == amount
    assert status["progress"]["payment"]["destination"] == "account_credit"
    page = (await http.get(f"/i/{token}/status")).text
    assert "Welcome to Acme" in page and "3 reports stayed behind" in page
    assert 'http-equiv="refresh"' not in page and "Cloud recording" in page
    gone = await http.get(f"/i/{token}")
    assert gone.status_code == 410 and "already been used" in gone.text
    late = await http.post(f"/i/{token}/accept", data=form_in(accepted.text), headers=JSON)
    assert late.status_code == 410 and late.json()["reason"] == "completed"
    await handle.result()


async def test_double_click_is_one_acceptance_and_csrf_is_required(
    http: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    fran = addr("fran")
    org = seed(engine, settings, fran)
    handle, token = await invite(dev_env.client, settings, org, fran)
    form = (await http.get(f"/i/{token}", headers=JSON)).json()["form"]
    for bad in ({}, {"nonce": form["nonce"], "csrf": "0" * 64},
                {"nonce": "other", "csrf": form["csrf"]}):
        r = await http.post(f"/i/{token}/accept", data=bad)
        assert r.status_code == 403 and "This form has expired" in r.text
    assert (await handle.query("progress"))["status"] == "pending"
    clicks = await asyncio.gather(*[http.post(f"/i/{token}/accept", data=form)
                                    for _ in range(3)])
    assert [c.status_code for c in clicks] == [303, 303, 303]
    result = await handle.result()
    assert result["status"] == "completed"
    assert events(engine, handle.id, "accepted") == 1
    # JSON clients post JSON bodies with the same form fields.
    r = await http.post(f"/i/{token}/decline", json=form, headers=JSON)
    assert r.status_code == 410 and r.json()["reason"] == "completed"


async def test_1009_names_each_block_and_try_again_accepts_once_fixed(
    http: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    rita = addr("rita")
    org = seed(engine, settings, rita, rooms=("Rita's Boardroom",),
               other_users=("olga@example.com",))
    handle, token = await invite(dev_env.client, settings, org, rita)
    preview = (await http.get(f"/i/{token}")).text
    assert "Before you can join" in preview and "Rita&#39;s Boardroom" in preview
    blocked = await http.post(f"/i/{token}/accept", data=form_in(preview))
    assert blocked.status_code == 409 and "Error 1009" in blocked.text
    for fact in ("olga@example.com", "Remove olga@example.com from your account",
                 "Rita&#39;s Boardroom", "Delete the room", 'id="try-again"'):
        assert fact in blocked.text, fact
    # A new form is a new attempt (a new update id); the JSON answer carries one too.
    as_json = await http.post(f"/i/{token}/accept", data=form_in(blocked.text), headers=JSON)
    assert as_json.status_code == 409
    assert as_json.json()["outcome"] == "blocked" and as_json.json()["error_code"] == 1009
    assert as_json.json()["accept_outcome"]["error_code"] == 1009
    assert [b["name"] for b in as_json.json()["blocking"]] == [
        "olga@example.com", "Rita's Boardroom"]
    with Session(engine) as s:  # the invitee fixes it: the other user leaves, the room goes
        for room in s.exec(select(Room)).all():
            s.delete(room)
        from records.tables import User
        olga = s.exec(select(User).where(User.email == "olga@example.com")).one()
        olga.account_id = org
        s.add(olga)
        s.commit()
    retry = await http.post(f"/i/{token}/accept", data=as_json.json()["form"])
    assert retry.status_code == 303
    assert (await handle.result())["status"] == "completed"
    assert events(engine, handle.id, "blocked") == 2 and events(engine, handle.id, "accepted") == 1


async def test_decline_then_every_route_is_410_declined(
    http: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    dora = addr("dora")
    org = seed(engine, settings, dora)
    handle, token = await invite(dev_env.client, settings, org, dora)
    form = form_in((await http.get(f"/i/{token}")).text)
    r = await http.post(f"/i/{token}/decline", data={**form, "reason": "not now"})
    assert r.status_code == 200 and "You declined the invitation to Acme" in r.text
    assert (await handle.result())["status"] == "declined"
    for path in ("", "/status", "/reports.csv"):
        r = await http.get(f"/i/{token}{path}")
        assert r.status_code == 410 and "You declined this invitation" in r.text
    r = await http.post(f"/i/{token}/accept", data=form, headers=JSON)
    assert (r.status_code, r.json()["reason"]) == (410, "declined")


async def test_revoked_link_is_410_withdrawn(
    http: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    rob = addr("rob")
    org = seed(engine, settings, rob)
    handle, token = await invite(dev_env.client, settings, org, rob)
    form = (await http.get(f"/i/{token}", headers=JSON)).json()["form"]
    await handle.execute_update("revoke", RevokeRequest(by="admin@acme.test"))
    r = await http.get(f"/i/{token}")
    assert r.status_code == 410 and "This invitation was withdrawn" in r.text
    assert "Acme withdrew this invitation" in r.text
    r = await http.post(f"/i/{token}/accept", data=form, headers=JSON)
    assert (r.status_code, r.json()["reason"]) == (410, "revoked")
    await handle.result()


async def test_status_page_refreshes_while_data_moves(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    sam = addr("sam")
    release = asyncio.Event()
    def name(a: Any) -> str:
        return str(getattr(a, "__temporal_activity_definition").name)  # noqa: B009

    real = next(a for a in build_activities(settings, engine) if name(a) == "transfer_chat")

    @activity.defn(name="transfer_chat")
    async def slow_chat(t: Transfer) -> Transferred:
        while not release.is_set():
            activity.heartbeat()
            await asyncio.sleep(0.1)
        result: Transferred = await real(t)
        return result

    acts = [a for a in build_activities(settings, engine) if name(a) != "transfer_chat"]
    acts.append(slow_chat)
    org = seed(engine, settings, sam, chat=40)
    app = create_app(settings, dev_env.client, engine)
    async with new_worker(dev_env.client, settings, engine, activities=acts), \
            app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                              base_url="http://links.test") as http:
        handle, token = await invite(dev_env.client, settings, org, sam)
        r = await http.post(f"/i/{token}/accept", data=form_in((await http.get(
            f"/i/{token}")).text), follow_redirects=True)
        assert r.status_code == 200 and r.url.path == f"/i/{token}/status"

        async def moving() -> str | None:
            page = (await http.get(f"/i/{token}/status")).text
            return page if 'data-state="staged"' in page else None

        page = await until(moving)
        assert '<meta http-equiv="refresh" content="2">' in page
        assert "Joining Acme" in page and 'data-category="chat" data-state="running"' in page
        r = await http.get(f"/i/{token}")
        assert r.status_code == 303 and r.headers["location"].endswith("/status")
        release.set()
        assert (await handle.result())["status"] == "completed"


async def test_expired_link_is_410_expired(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    eve = addr("eve")
    org = seed(engine, settings, eve)
    app = create_app(settings, ts_env.client, engine)
    async with new_worker(ts_env.client, settings, engine), app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                              base_url="http://links.test") as http:
        handle, token = await invite(ts_env.client, settings, org, eve,
                                     expires_in_days=3)
        assert (await http.get(f"/i/{token}")).status_code == 200
        await ts_env.sleep(timedelta(days=4))
        assert (await handle.result())["status"] == "expired"
        r = await http.get(f"/i/{token}")
        assert r.status_code == 410 and "This invitation has expired" in r.text
        assert "ask admin@acme.test to send you a new invitation" in r.text
        gone = (await http.get(f"/i/{token}/status", headers=JSON)).json()
        assert (gone["reason"], gone["outcome"], gone["status"]) == ("expired",) * 3


async def test_a_script_walks_every_route_in_json(
    http: httpx.AsyncClient, settings: Settings, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    paula = addr("paula")
    org = seed(engine, settings, paula, **PAULA)
    handle, token = await invite(dev_env.client, settings, org, paula)
    preview = (await http.get(f"/i/{token}", headers=JSON)).json()
    reports = (await http.get(preview["links"]["reports"], headers=JSON)).json()
    assert reports["rows"] == 3 and reports["columns"][0] == "kind"
    r = await http.post(preview["links"]["accept"], json=preview["form"], headers=JSON)
    assert r.status_code == 200 and r.json()["status"] == "awaiting_refund_choice"
    choice = r.json()
    assert choice["quote"]["price_minor"] == 1499 and choice["refund_formula"].startswith("USD ")
    assert choice["destinations"] == ["original_payment_method", "account_credit"]
    bad = await http.post(choice["links"]["refund"], json={**choice["form"],
                                                            "destination": "bitcoin"},
                          headers=JSON)
    assert bad.status_code == 422
    r = await http.post(choice["links"]["refund"], headers=JSON, json={
        **choice["form"], "destination": "original_payment_method"})
    assert r.status_code == 200 and r.json()["outcome"] == "accepted"
    result = await handle.result()
    assert result["progress"]["payment"]["destination"] == "original_payment_method"
    status = (await http.get(f"/i/{token}/status", headers=JSON)).json()
    assert status["final"] and status["progress"]["status"] == "completed"
    r = await http.get(f"/i/{token}", headers=JSON)
    assert (r.status_code, r.json()["reason"]) == (410, "completed")
    assert r.headers["cache-control"] == "no-store"


async def test_a_failed_acceptance_check_says_try_again_and_leaves_it_open(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:


    @activity.defn(name="check_acceptance")
    async def unreachable(check: AcceptanceCheck) -> AcceptanceFacts:
        raise ApplicationError("platform database unreachable", non_retryable=True)

    acts = [a for a in build_activities(settings, engine)
            if getattr(a, "__temporal_activity_definition").name != "check_acceptance"]  # noqa: B009
    tina = addr("tina")
    org = seed(engine, settings, tina)
    app = create_app(settings, dev_env.client, engine)
    async with new_worker(dev_env.client, settings, engine, activities=[*acts, unreachable]), \
            app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                              base_url="http://links.test") as http:
        handle, token = await invite(dev_env.client, settings, org, tina)
        r = await http.post(f"/i/{token}/accept", data=form_in((await http.get(
            f"/i/{token}")).text))
        assert r.status_code == 503 and "Please try again in a moment" in r.text
        assert (await handle.query("progress"))["status"] == "pending"
        assert (await http.get(f"/i/{token}")).status_code == 200
        await handle.execute_update("revoke", RevokeRequest())
