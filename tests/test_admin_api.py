"""The REST API (`/api/v1`) over real HTTP: the admin app served by uvicorn on a free port,
the dev server (search attributes on) behind it, the production worker where a route
queries or updates a running workflow. Tokens are made as `starter.py token create` makes
them; `starter.py token ...` itself runs as a subprocess in the last tests.

Every test invents its own invitee addresses: workflow ids derive from (account, email) and
each test's database numbers its accounts from 1 on the shared dev server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RetryConfig, RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from admin.app import create_admin_app
from admin.idempotency import request_hash
from admin.tokens import create_token
from config import ROOT, Settings
from demo.seed import IndividualSpec, create_individual, create_org
from invitations.client import InvitationsClient
from records.api_tables import ApiToken, IdempotencyRecord
from records.ids import invitation_id
from records.tables import Invitation, Role, User
from tests.conftest import free_port, new_worker
from tests.workflow_helpers import eventually

PROBLEM = "application/problem+json"


def unique(name: str) -> str:
    return f"{name}.{uuid.uuid4().hex[:10]}@example.com"


@dataclass
class Api:
    http: httpx.AsyncClient  # carries Acme's token
    base_url: str
    acme: int
    globex: int
    acme_token: str
    globex_token: str
    engine: Engine
    temporal: Client
    app: FastAPI

    def as_globex(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.globex_token}"}


@pytest.fixture
async def api(dev_env: WorkflowEnvironment, settings: Settings,
              engine: Engine) -> AsyncIterator[Api]:
    with Session(engine) as s:
        acme = create_org(s, "Acme")
        globex = create_org(s, "Globex", owner="ceo@globex.test", admins=("boss@globex.test",))
        assert acme.id is not None and globex.id is not None
        s.add(User(email="member@acme.test", account_id=acme.id, first_name="Mem"))
        s.commit()
        ids = acme.id, globex.id
    acme_token = create_token(engine, ids[0], "admin@acme.test", "billing-sync").token
    globex_token = create_token(engine, ids[1], "boss@globex.test", "hr-sync").token
    app = create_admin_app(settings, dev_env.client, engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.started or serving.done(), within=20, what="uvicorn")
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30, headers={
                "Authorization": f"Bearer {acme_token}"}) as http:
            yield Api(http, base, *ids, acme_token, globex_token, engine, dev_env.client,
                      app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 20)


def assert_problem(r: httpx.Response, status: int, code: str,
                   field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["code"] == code and body["detail"]
    assert body["type"].endswith(f"/problems/{code}") and body["title"]
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


def rows(engine: Engine, *where: Any) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(Invitation).where(*where)).one())


async def workflow_runs(temporal: Client, wid: str) -> int:
    """How many runs of workflow `wid` the server has (0: never started)."""
    try:
        await temporal.get_workflow_handle(wid).describe()
    except RPCError as exc:
        assert exc.status == RPCStatusCode.NOT_FOUND
        return 0
    return len([w async for w in temporal.list_workflows(f"WorkflowId = '{wid}'")]) or 1


async def terminate(temporal: Client, *wids: str) -> None:
    """Workflows this test left running (no worker will ever run them again)."""
    for wid in wids:
        try:
            await temporal.get_workflow_handle(wid).terminate("test over")
        except RPCError:
            pass


# ------------------------------------------------------------------------ authentication
@pytest.mark.sqlite_only
async def test_every_route_refuses_missing_malformed_unknown_and_revoked_tokens(
    api: Api,
) -> None:
    wid = invitation_id(api.acme, "x@example.com")
    routes = [("GET", "/api/v1/invitations"), ("POST", "/api/v1/invitations"),
              ("POST", "/api/v1/invitations/bulk"), ("GET", f"/api/v1/invitations/{wid}"),
              ("POST", f"/api/v1/invitations/{wid}/resend"),
              ("POST", f"/api/v1/invitations/{wid}/revoke")]
    revoked = create_token(api.engine, api.acme, "owner@acme.test", "old")
    demoted = create_token(api.engine, api.acme, "owner@acme.test", "by-a-demoted-owner")
    with Session(api.engine) as s:
        s.exec(update(ApiToken).where(col(ApiToken.id) == revoked.id)  # type: ignore[call-overload]
               .values(revoked_at=datetime.now(UTC)))
        s.commit()
    unknown = api.acme_token[:-4] + ("AAAA" if not api.acme_token.endswith("AAAA") else "BBBB")
    cases = {
        "none": ({}, "no API token"),
        "basic": ({"Authorization": "Basic dXNlcjpwdw=="}, "must be `Bearer"),
        "malformed": ({"Authorization": "Bearer not-a-token"}, "malformed"),
        "unknown": ({"Authorization": f"Bearer {unknown}"}, "unknown API token"),
        "revoked": ({"Authorization": f"Bearer {revoked.token}"}, "was revoked"),
    }
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as bare:
        for method, path in routes:
            for name, (headers, says) in cases.items():
                r = await bare.request(method, path, headers=headers,
                                       json={"email": unique("a")} if method == "POST" else None)
                body = assert_problem(r, 401, "unauthorized")
                assert says in body["detail"], (name, body)
                assert r.headers["www-authenticate"].startswith("Bearer")
        # A token stops working when its creator is no longer an owner or admin.
        ok = {"Authorization": f"Bearer {demoted.token}"}
        assert (await bare.get("/api/v1/invitations", headers=ok)).status_code == 200
        with Session(api.engine) as s:
            s.exec(update(User).where(col(User.email) == "owner@acme.test")  # type: ignore[call-overload]
                   .values(role=Role.MEMBER))
            s.commit()
        r = await bare.get("/api/v1/invitations", headers=ok)
        assert "no longer an owner or admin" in assert_problem(r, 401, "unauthorized")["detail"]
        # The OpenAPI document needs no token and describes the routes and the scheme.
        doc = (await bare.get("/api/v1/openapi.json")).json()
        page = await bare.get("/api/v1/docs")  # readable under the CSP: no script at all
    assert page.status_code == 200 and "<script" not in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "POST /api/v1/invitations/bulk" in page.text and "Idempotency-Key" in page.text
    assert {"/api/v1/invitations", "/api/v1/invitations/bulk",
            "/api/v1/invitations/{invitation_id}/revoke"} <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert rows(api.engine) == 0  # no refused request invited anyone
    # Last use recorded, at most once a minute (not a write per request).
    def last_used() -> datetime | None:
        with Session(api.engine) as s:
            return s.exec(select(ApiToken.last_used_at).where(
                col(ApiToken.prefix) == api.acme_token[:12])).one()
    assert last_used() is None
    assert (await api.http.get("/api/v1/invitations")).status_code == 200
    first_use = last_used()
    assert first_use is not None
    assert (await api.http.get("/api/v1/invitations")).status_code == 200
    assert last_used() == first_use
    assert_problem(await api.http.get("/api/v1/nothing-here"), 404, "not_found")


# -------------------------------------------------------- the bar: invite, other account
async def test_invite_through_the_api_and_another_account_gets_404(
    api: Api, settings: Settings, smtp: Path,
) -> None:
    email = unique("paula")
    wid = invitation_id(api.acme, email)
    with Session(api.engine) as s:  # her own account still has a meeting room: error 1009
        create_individual(s, settings.recordings_dir, IndividualSpec(
            email=email, rooms=("Paula's Room",), meetings=0, chat=0, contacts=0))
        s.commit()
    async with new_worker(api.temporal, settings, api.engine):
        r = await api.http.post("/api/v1/invitations", json={
            "email": email.upper(), "first_name": "Paula", "user_type": "licensed",
            "message": "Welcome to Acme", "expires_in_days": 10})
        assert r.status_code == 201, r.text
        assert r.json()["invitation_id"] == wid and r.json()["outcome"] == "started"
        assert r.headers["location"] == f"/api/v1/invitations/{wid}"
        with Session(api.engine) as s:
            row, by = s.exec(select(Invitation, User.email).join(
                User, col(User.id) == col(Invitation.invited_by_user_id))
                .where(Invitation.id == wid)).one()
        assert by == "admin@acme.test" and row.user_type == "licensed"  # the token's creator

        got = await eventually(lambda: _registered(api, wid), what="the registered progress")
        assert got["status"] == "pending" and got["invited_by"] == "admin@acme.test"
        assert got["email"] == email and got["blocking"] == [] and "categories" in got
        # She tries to accept (as the link handler does): blocked, and the API says why.
        outcome = await api.app.state.invitations.accept(wid)
        assert outcome.outcome == "blocked"
        got = (await api.http.get(f"/api/v1/invitations/{wid}")).json()
        assert got["status"] == "blocked"
        assert [(b["kind"], b["name"]) for b in got["blocking"]] == [("room", "Paula's Room")]

        # Another account's token: 404 on every route, and nothing changes.
        for method, path in (("GET", f"/api/v1/invitations/{wid}"),
                             ("POST", f"/api/v1/invitations/{wid}/resend"),
                             ("POST", f"/api/v1/invitations/{wid}/revoke")):
            r = await api.http.request(method, path, headers=api.as_globex())
            assert_problem(r, 404, "not_found", "invitation_id")
            # The same answer as for an id that never existed: nothing is confirmed.
            never = await api.http.request(method, path.replace(email, "nobody@example.com"),
                                           headers=api.as_globex())
            assert r.text == never.text.replace("nobody@example.com", email)
        listed = (await api.http.get("/api/v1/invitations", headers=api.as_globex())).json()
        assert listed["invitations"] == []
        assert_problem(await api.http.get(
            f"/api/v1/invitations/{invitation_id(api.globex, email)}"), 404, "not_found")

        again = await api.http.post("/api/v1/invitations", json={"email": email})
        assert again.status_code == 200 and again.json()["outcome"] == "already_pending"

        r = await api.http.post(f"/api/v1/invitations/{wid}/resend",
                                json={"expires_in_days": 20})
        assert r.status_code == 200, r.text
        expires = datetime.fromisoformat(r.json()["expires_at"])
        assert abs(expires - (datetime.now(UTC) + timedelta(days=20))) < timedelta(minutes=5)
        r = await api.http.post(f"/api/v1/invitations/{wid}/revoke",
                                json={"reason": "wrong person"})
        assert r.status_code == 200 and r.json()["status"] == "revoked"
        assert_problem(await api.http.post(f"/api/v1/invitations/{wid}/revoke"),
                       409, "invitation_closed")
        assert_problem(await api.http.post(f"/api/v1/invitations/{wid}/resend",
                                           json={"expires_in_days": 0}),
                       422, "invalid_request", "expires_in_days")
        ended = (await api.http.get(f"/api/v1/invitations/{wid}")).json()
        assert ended["status"] == "revoked"

        # An address with / ? # % in it: the Location leads back to it, and so do the routes.
        odd = f"o'neil/{uuid.uuid4().hex[:6]}?x#y%z@example.com"
        r = await api.http.post("/api/v1/invitations", json={"email": odd})
        assert r.status_code == 201, r.text
        where = r.headers["location"]
        assert where == "/api/v1/invitations/" + quote(invitation_id(api.acme, odd), safe="@")
        await eventually(lambda: _registered_at(api, where), what="the odd one registered")
        r = await api.http.post(f"{where}/revoke")
        assert r.status_code == 200 and r.json()["email"] == odd
        await api.temporal.get_workflow_handle(invitation_id(api.acme, odd)).result()
        await api.temporal.get_workflow_handle(wid).result()  # its mails sent before we stop


async def _registered(api: Api, wid: str) -> dict[str, Any] | None:
    return await _registered_at(api, f"/api/v1/invitations/{wid}")


async def _registered_at(api: Api, url: str) -> dict[str, Any] | None:
    r = await api.http.get(url)
    assert r.status_code == 200, r.text
    return r.json() if r.json()["account_name"] else None  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- validation
@pytest.mark.sqlite_only
async def test_bad_input_names_the_field_and_starts_nothing(api: Api) -> None:
    bad = unique("bad")
    cases: list[tuple[Any, int, str, str]] = [
        ({"email": "bob@"}, 422, "malformed_email", "email"),
        ({"email": bad, "user_type": "gold"}, 422, "invalid_row", "user_type"),
        ({"email": bad, "expires_in_days": 0}, 422, "invalid_row", "expires_in_days"),
        ({"email": bad, "message": "x" * 2001}, 422, "invalid_row", "message"),
        ({"email": "member@acme.test"}, 422, "already_member", "email"),
        ({"email": "boss@globex.test"}, 422, "admin_of_another_account", "email"),
        ({"emial": bad}, 422, "invalid_request", "emial"),
        ({"email": 42}, 422, "invalid_request", "email"),
        ({}, 422, "invalid_request", "email"),
        ([bad], 422, "invalid_request", "body"),
    ]
    for body, status, code, field in cases:
        r = await api.http.post("/api/v1/invitations", json=body)
        assert_problem(r, status, code, field)
    r = await api.http.post("/api/v1/invitations", content=b"{not json",
                            headers={"Content-Type": "application/json"})
    assert_problem(r, 422, "invalid_request")
    assert_problem(await api.http.post("/api/v1/invitations/bulk", json={"invitations": []}),
                   422, "invalid_request", "invitations")
    assert_problem(await api.http.post("/api/v1/invitations/bulk", json={
        "invitations": [{"email": bad, "colour": "red"}]}), 422, "invalid_request",
        "invitations.0.colour")
    for query, code, field in (({"status": "sleeping"}, "invalid_request", "status"),
                               ({"limit": 0}, "invalid_request", "limit"),
                               ({"limit": 201}, "invalid_request", "limit"),
                               ({"created_after": "yesterday"}, "invalid_request",
                                "created_after"),
                               ({"cursor": "garbage"}, "invalid_cursor", "cursor")):
        r = await api.http.get("/api/v1/invitations", params=query)
        assert_problem(r, 400 if code == "invalid_cursor" else 422, code, field)
    r = await api.http.post("/api/v1/invitations", json={"email": bad},
                            headers={"Idempotency-Key": "has spaces"})
    assert_problem(r, 400, "invalid_idempotency_key", "Idempotency-Key")
    assert rows(api.engine) == 0
    for email in (bad, "bob@", "member@acme.test", "boss@globex.test"):
        assert await workflow_runs(api.temporal, invitation_id(api.acme, email)) == 0


# ---------------------------------------------------------------------------------- bulk
async def test_bulk_answers_207_with_one_result_per_row(api: Api) -> None:
    a, b, c = unique("a"), unique("b"), unique("c")
    r = await api.http.post("/api/v1/invitations/bulk", json={"invitations": [
        {"email": a, "first_name": "Ann"}, {"email": "nope"}, {"email": b.upper()},
        {"email": b}, {"email": "member@acme.test"}, {"email": c, "user_type": "licensed"}]})
    assert r.status_code == 207, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == list(range(6))
    assert [(x["status"], x["outcome"]) for x in results] == [
        (201, "started"), (422, "error"), (201, "started"), (422, "error"), (422, "error"),
        (201, "started")]
    assert [x["problem"]["code"] for x in results if x["problem"]] == [
        "malformed_email", "duplicate_row", "already_member"]
    assert results[1]["problem"]["errors"][0]["field"] == "email"
    assert results[1]["invitation_id"] is None and results[1]["email"] == "nope"
    assert r.json()["summary"] == {"started": 3, "already_pending": 0, "error": 3}
    started = [invitation_id(api.acme, e) for e in (a, b, c)]
    assert [x["invitation_id"] for x in results if x["status"] == 201] == started
    assert rows(api.engine) == 3
    for wid in started:
        assert await workflow_runs(api.temporal, wid) == 1
    again = await api.http.post("/api/v1/invitations/bulk", json={"invitations": [
        {"email": a}, {"email": unique("d")}]})
    assert [x["outcome"] for x in again.json()["results"]] == ["already_pending", "started"]
    assert again.json()["results"][0]["status"] == 200
    await terminate(api.temporal, *started, again.json()["results"][1]["invitation_id"])


# --------------------------------------------------------------------------- idempotency
async def test_idempotency_key_replays_the_first_answer_and_refuses_another_body(
    api: Api,
) -> None:
    first, other = unique("first"), unique("other")
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    r1 = await api.http.post("/api/v1/invitations", json={"email": first, "first_name": "Fi"},
                             headers=key)
    assert r1.status_code == 201 and "idempotent-replayed" not in r1.headers
    # Same key, same body (keys in another order, other spacing): the first answer again.
    r2 = await api.http.post("/api/v1/invitations", headers={
        **key, "Content-Type": "application/json"},
        content=f'{{ "first_name": "Fi",\n  "email": "{first}" }}'.encode())
    assert r2.status_code == 201 and r2.json() == r1.json()
    assert r2.headers["idempotent-replayed"] == "true"
    assert r2.headers["location"] == r1.headers["location"]
    # Same key, another body: refused, nothing started for it.
    r3 = await api.http.post("/api/v1/invitations", json={"email": other}, headers=key)
    assert_problem(r3, 422, "idempotency_key_reused", "Idempotency-Key")
    assert await workflow_runs(api.temporal, invitation_id(api.acme, other)) == 0
    assert rows(api.engine, Invitation.email == other) == 0
    # Keys are per account: Globex's same key is its own.
    r4 = await api.http.post("/api/v1/invitations", json={"email": other},
                             headers={**key, **api.as_globex()})
    assert r4.status_code == 201 and r4.json()["invitation_id"] == invitation_id(api.globex,
                                                                                 other)
    # A validation error is an answer too: replayed, not re-run.
    bad_key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    for _ in range(2):
        assert_problem(await api.http.post("/api/v1/invitations", json={"email": "bob@"},
                                           headers=bad_key), 422, "malformed_email")
    # Once the key has expired, the same request runs again (and finds it pending).
    with Session(api.engine) as s:
        s.exec(update(IdempotencyRecord).values(  # type: ignore[call-overload]
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        s.commit()
    r5 = await api.http.post("/api/v1/invitations", json={"email": first}, headers=key)
    assert r5.status_code == 200 and r5.json()["outcome"] == "already_pending"
    assert "idempotent-replayed" not in r5.headers
    assert await workflow_runs(api.temporal, invitation_id(api.acme, first)) == 1
    await terminate(api.temporal, invitation_id(api.acme, first),
                    invitation_id(api.globex, other))


async def test_idempotency_claims_in_progress_stale_and_released_after_a_5xx(
    api: Api, settings: Settings,
) -> None:
    email = unique("claimed")
    body = {"email": email}
    digest = request_hash("POST", "/api/v1/invitations", json.dumps(body).encode())
    now = datetime.now(UTC)
    with Session(api.engine) as s:
        for key, age in (("busy", timedelta(seconds=5)), ("dead", timedelta(minutes=6))):
            s.add(IdempotencyRecord(account_id=api.acme, key=key, request_hash=digest,
                                    created_at=now - age, expires_at=now + timedelta(hours=1)))
        s.commit()
    # Another request holds "busy": wait and retry. Nothing started meanwhile.
    r = await api.http.post("/api/v1/invitations", json=body, headers={"Idempotency-Key": "busy"})
    assert_problem(r, 409, "idempotency_key_in_progress")
    assert await workflow_runs(api.temporal, invitation_id(api.acme, email)) == 0
    # "dead" was claimed by a process that died 6 minutes ago: taken over and run.
    r = await api.http.post("/api/v1/invitations", json=body, headers={"Idempotency-Key": "dead"})
    assert r.status_code == 201 and r.json()["outcome"] == "started"

    # A 5xx is not an answer to keep: Temporal unreachable, then back, same key runs.
    other = unique("unlucky")
    nowhere = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True,
                                   retry_config=RetryConfig(max_retries=0),
                                   data_converter=pydantic_data_converter)
    app_state = api.app.state
    real = app_state.invitations
    app_state.invitations = InvitationsClient(nowhere, settings, api.engine)
    retry = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    try:
        r = await api.http.post("/api/v1/invitations", json={"email": other}, headers=retry)
        # (500: a client that never connected raises RuntimeError, not RPCError, from the
        # start, so InvitationsClient does not name it start_failed.)
        assert r.status_code >= 500 and r.headers["content-type"] == PROBLEM
    finally:
        app_state.invitations = real
    assert rows(api.engine, Invitation.email == other) == 0
    r = await api.http.post("/api/v1/invitations", json={"email": other}, headers=retry)
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers
    await terminate(api.temporal, invitation_id(api.acme, email), invitation_id(api.acme, other))


async def test_concurrent_identical_requests_start_once(api: Api) -> None:
    email = unique("racer")
    wid = invitation_id(api.acme, email)
    key = {"Idempotency-Key": f"race-{uuid.uuid4()}"}
    body = {"invitations": [{"email": email}, {"email": unique("racer2")}]}
    answers = await asyncio.gather(*(
        api.http.post("/api/v1/invitations/bulk", json=body, headers=key) for _ in range(8)))
    statuses = sorted(a.status_code for a in answers)
    done = [a for a in answers if a.status_code == 207]
    originals = [a for a in done if "idempotent-replayed" not in a.headers]
    assert len(originals) == 1, statuses  # one ran; the others replayed it or were told to wait
    for a in answers:
        if a.status_code == 207:
            assert a.json() == originals[0].json()
        else:
            assert_problem(a, 409, "idempotency_key_in_progress")
            assert a.headers["retry-after"] == "1"
    assert [x["outcome"] for x in originals[0].json()["results"]] == ["started", "started"]
    assert await workflow_runs(api.temporal, wid) == 1
    assert rows(api.engine) == 2
    # A retry after the rush gets the stored answer.
    late = await api.http.post("/api/v1/invitations/bulk", json=body, headers=key)
    assert late.status_code == 207 and late.json() == originals[0].json()
    await terminate(api.temporal, *(x["invitation_id"] for x in late.json()["results"]))


# ---------------------------------------------------------------- listing and pagination
async def test_list_filters_and_cursor_pagination(api: Api) -> None:
    emails = [unique(f"p{i}") for i in range(7)]
    r = await api.http.post("/api/v1/invitations/bulk",
                            json={"invitations": [{"email": e} for e in emails]})
    assert r.json()["summary"]["started"] == 7
    base = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    # Three share one timestamp: the id breaks the tie, so no page repeats or skips one.
    when = [base, base, base, base + timedelta(days=1), base + timedelta(days=2),
            base + timedelta(days=3), base + timedelta(days=4)]
    with Session(api.engine) as s:
        for email, at, status in zip(emails, when, ["pending", "blocked", "pending",
                                                    "blocked", "expired", "pending",
                                                    "revoked"], strict=True):
            row = s.get(Invitation, invitation_id(api.acme, email))
            assert row is not None
            row.invited_at, row.status = at, status
            s.add(row)
        s.commit()
    ids = [invitation_id(api.acme, e) for e in emails]
    newest_first = [ids[i] for i in sorted(range(7), key=lambda i: (when[i], ids[i]),
                                           reverse=True)]

    async def walk(**params: Any) -> tuple[list[str], int]:
        seen, cursor, pages = [], None, 0
        while True:
            r = await api.http.get("/api/v1/invitations",
                                   params={**params, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            pages += 1
            seen += [x["invitation_id"] for x in r.json()["invitations"]]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                return seen, pages

    assert await walk(limit=3) == (newest_first, 3)
    assert await walk(limit=2) == (newest_first, 4)
    assert await walk(limit=50) == (newest_first, 1)
    blocked, _ = await walk(status="blocked", limit=1)
    assert blocked == [ids[3], ids[1]]
    open_ones, _ = await walk(status=["pending", "blocked"], limit=2)
    assert len(open_ones) == 5
    assert (await walk(email=emails[4].upper()))[0] == [ids[4]]
    ranged, _ = await walk(created_after=(base + timedelta(days=1)).isoformat(),
                           created_before=(base + timedelta(days=3)).isoformat(), limit=1)
    assert ranged == [ids[4], ids[3]]
    one = (await api.http.get("/api/v1/invitations", params={"limit": 1})).json()
    assert one["invitations"][0]["invited_by"] == "admin@acme.test"
    assert one["invitations"][0]["email"] == emails[6]
    # A cursor belongs to its filters and its account.
    assert_problem(await api.http.get("/api/v1/invitations", params={
        "cursor": one["next_cursor"], "status": "pending"}), 400, "invalid_cursor", "cursor")
    assert_problem(await api.http.get("/api/v1/invitations", params={
        "cursor": one["next_cursor"], "limit": 1}, headers=api.as_globex()),
        400, "invalid_cursor")
    await terminate(api.temporal, *newest_first)


# ------------------------------------------------------------------ starter.py token ...
async def starter_process(settings: Settings, *args: str) -> tuple[int, Any, str]:
    """`python starter.py --json ARGS` with this test's database; (exit code, JSON, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVITES_", "TEMPORAL_"))}
    env["INVITES_DATABASE_URL"] = settings.database_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "starter.py"), "--json", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, json.loads(out), err.decode()


@pytest.fixture
def starter(settings: Settings, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]
            ) -> Iterator[Callable[..., Awaitable[tuple[int, Any, str]]]]:
    """`starter.main(["--json", *ARGS])` in this process (a subprocess costs seconds of
    imports on a busy machine; one test runs the real one), configured the same way."""
    import starter as cli
    from config import get_settings

    monkeypatch.setenv("INVITES_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()

    async def run(*args: str) -> tuple[int, Any, str]:
        code = await asyncio.to_thread(cli.main, ["--json", *args])
        out, err = capsys.readouterr()
        return code, json.loads(out), err

    yield run
    get_settings.cache_clear()


@pytest.mark.sqlite_only
async def test_starter_token_commands_create_list_and_revoke(
    api: Api, settings: Settings, starter: Callable[..., Awaitable[tuple[int, Any, str]]],
) -> None:
    code, made, _ = await starter_process(settings, "token", "create", "--account", str(api.acme),
                                  "--by", "OWNER@acme.test", "--name", "billing-sync")
    assert code == 0 and made["token"].startswith(made["prefix"] + "_")
    assert made["created_by"] == "owner@acme.test" and made["name"] == "billing-sync"
    with Session(api.engine) as s:  # stored hashed: the secret is nowhere in the row
        row = s.exec(select(ApiToken).where(ApiToken.prefix == made["prefix"])).one()
        assert made["token"] not in row.model_dump_json() and len(row.secret_hash) == 64
    bearer = {"Authorization": f"Bearer {made['token']}"}
    r = await api.http.post("/api/v1/invitations", json={"email": unique("cli")},
                            headers=bearer)
    assert r.status_code == 201
    with Session(api.engine) as s:
        assert s.exec(select(User.email).join(Invitation, col(
            Invitation.invited_by_user_id) == col(User.id))).one() == "owner@acme.test"

    code, listed, _ = await starter("token", "list", "--account", str(api.acme))
    assert code == 0
    mine = [t for t in listed["tokens"] if t["prefix"] == made["prefix"]]
    assert len(mine) == 1 and mine[0]["last_used_at"] is not None
    assert "token" not in mine[0] and "secret_hash" not in mine[0]

    code, failed, err = await starter("token", "create", "--account",
                                      str(api.acme), "--by", "member@acme.test", "--name", "x")
    assert code == 1 and failed["error"]["code"] == "not_an_admin"
    assert failed["error"]["field"] == "by" and "member@acme.test" in err
    code, failed, _ = await starter("token", "create", "--account", str(api.acme),
                                    "--by", "owner@acme.test", "--name", "  ")
    assert code == 1 and failed["error"]["code"] == "invalid_token_name"
    code, failed, _ = await starter("token", "revoke", "--account", str(api.globex),
                                    "--by", "boss@globex.test", made["prefix"])
    assert code == 1 and failed["error"]["code"] == "token_not_found"  # not Globex's token

    code, revoked, _ = await starter("token", "revoke", "--account", str(api.acme),
                                     "--by", "admin@acme.test", made["prefix"])
    assert code == 0 and revoked["revoked_by"] == "admin@acme.test"
    assert_problem(await api.http.get("/api/v1/invitations", headers=bearer),
                   401, "unauthorized")
    code, listed, _ = await starter("token", "list", "--account", str(api.acme))
    assert made["prefix"] not in [t["prefix"] for t in listed["tokens"]]
    code, listed, _ = await starter("token", "list", "--account", str(api.acme),
                                    "--all")
    assert made["prefix"] in [t["prefix"] for t in listed["tokens"]]
    await terminate(api.temporal, r.json()["invitation_id"])
