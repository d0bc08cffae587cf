"""The admin console over HTTP (httpx against the ASGI app, a real SMTP catcher, the dev
server and the production worker where invitations start): signing in by the mailed link
(expired, reused, rate-limited, unknown addresses), CSRF, signing out, another account's
invitations (404), and the add-users form's validation, field by field."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment

from admin import sessions
from admin.app import create_admin_app
from config import Settings
from demo.seed import IndividualSpec, create_individual, create_org
from invitations.client import InvitationsClient
from mailcatcher import read_messages
from observability import RedactFilter
from records.console_auth import AdminSession, SignInLink
from records.ids import invitation_id
from records.tables import Invitation, Role, User
from tests.conftest import new_worker
from tests.workflow_helpers import eventually

ADMIN = "admin@acme.test"
CSRF_RE = re.compile(r'name="csrf" value="([^"]*)"')
LINK_RE = re.compile(r"http://[^\s]+/signin/[A-Za-z0-9_\-]+")
SAME_ANSWER = "If that address belongs to an owner or admin of an account"


def seed(engine: Engine) -> tuple[int, int]:
    """Acme (owner, admin, a member) and Globex (its own owner and admin)."""
    with Session(engine) as s:
        acme = create_org(s, "Acme")
        globex = create_org(s, "Globex", owner="ceo@globex.test", admins=("it@globex.test",))
        assert acme.id is not None and globex.id is not None
        s.add(User(email="member@acme.test", account_id=acme.id, first_name="Mem"))
        s.commit()
        return acme.id, globex.id


def csrf_in(html: str) -> str:
    return CSRF_RE.findall(html)[0]


def signin_mails(settings: Settings, to: str) -> list[str]:
    """The sign-in links mailed to `to`, oldest first."""
    links = []
    for msg in read_messages(settings.maildir):
        if msg["To"] == to and msg["X-Email-Kind"] == sessions.SIGNIN_MAIL_KIND:
            body = msg.get_body(("plain",))
            assert body is not None
            links += LINK_RE.findall(body.get_content())
    return links


@pytest.fixture
async def console(settings: Settings, engine: Engine, dev_env: WorkflowEnvironment
                  ) -> AsyncIterator[httpx.AsyncClient]:
    app = create_admin_app(settings, dev_env.client, engine)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=settings.admin_base_url) as http:
        yield http


async def ask_for_link(http: httpx.AsyncClient, email: str) -> httpx.Response:
    form = await http.get("/signin")
    return await http.post("/signin", data={"email": email, "csrf": csrf_in(form.text)})


async def open_link(http: httpx.AsyncClient, path: str) -> httpx.Response:
    """Open the mailed link and confirm, as a person does."""
    page = await http.get(path)
    if page.status_code != 200:
        return page
    return await http.post(path, data={"csrf": csrf_in(page.text)})


async def sign_in(http: httpx.AsyncClient, settings: Settings, email: str = ADMIN) -> None:
    before = set(signin_mails(settings, email))  # mails sort by their Date, to the second
    assert (await ask_for_link(http, email)).status_code == 200
    [link] = await eventually(lambda: set(signin_mails(settings, email)) - before,
                              within=10, what="the sign-in mail")
    opened = await open_link(http, link.removeprefix(settings.admin_base_url))
    assert opened.status_code == 303 and opened.headers["location"] == "/users"


@pytest.mark.sqlite_only
async def test_mailed_link_signs_in_once_and_sign_out_ends_the_session(
    console: httpx.AsyncClient, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    seed(engine)
    assert (await console.get("/users")).headers["location"] == "/signin"  # not signed in
    answer = await ask_for_link(console, "Admin@Acme.test ")
    assert answer.status_code == 200 and SAME_ANSWER in answer.text
    [link] = await eventually(lambda: signin_mails(settings, ADMIN), within=10, what="mail")
    path = link.removeprefix(settings.admin_base_url)

    for _ in range(2):  # opening it (a mail scanner too) spends nothing: it asks to confirm
        page = await console.get(path)
        assert page.status_code == 200 and 'id="confirm-email">admin@acme.test<' in page.text
    forged = await console.post(path, data={"csrf": "forged"})
    assert forged.status_code == 403 and sessions.SESSION_COOKIE not in console.cookies
    opened = await console.post(path, data={"csrf": csrf_in(page.text)})
    assert opened.status_code == 303
    cookie = next(c for c in opened.headers.get_list("set-cookie")
                  if c.startswith(sessions.SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    users = await console.get("/users")
    assert users.status_code == 200 and 'id="signed-in-as">admin@acme.test<' in users.text
    assert "member@acme.test" in users.text and "ceo@globex.test" not in users.text
    assert users.headers["cache-control"] == "no-store"

    again = await console.get(path)  # single use
    assert again.status_code == 410 and "already used" in again.text

    session_cookie = console.cookies[sessions.SESSION_COOKIE]
    refused = await console.post("/signout", data={"csrf": "forged"})
    assert refused.status_code == 403 and "This form has expired" in refused.text
    assert (await console.get("/users")).status_code == 200  # still signed in
    out = await console.post("/signout", data={"csrf": csrf_in(users.text)})
    assert out.status_code == 303 and out.headers["location"].startswith("/signin")
    assert (await console.get("/users")).headers["location"] == "/signin"
    console.cookies.set(sessions.SESSION_COOKIE, session_cookie)  # replaying the old cookie
    assert (await console.get("/users")).headers["location"] == "/signin"
    with Session(engine) as s:
        assert s.exec(select(AdminSession)).one().ended_at is not None


@pytest.mark.sqlite_only
async def test_unknown_and_non_admin_addresses_get_the_same_answer_and_no_mail(
    console: httpx.AsyncClient, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    seed(engine)
    answers = [await ask_for_link(console, email)
               for email in ("nobody@acme.test", "member@acme.test", ADMIN)]
    assert {a.status_code for a in answers} == {200}
    texts = {re.sub(CSRF_RE, "", a.text) for a in answers}
    assert len(texts) == 1, "the answer depends on the address"
    await eventually(lambda: signin_mails(settings, ADMIN), within=10, what="admin's mail")
    assert [m["To"] for m in read_messages(settings.maildir)] == [ADMIN]
    with Session(engine) as s:
        assert [r.email for r in s.exec(select(SignInLink)).all()] == [ADMIN]

    bad = await ask_for_link(console, "")
    assert bad.status_code == 422 and "email: enter the address you administer" in bad.text
    assert "the email address is empty" in bad.text
    spaced = await ask_for_link(console, "admin @acme.test")
    assert spaced.status_code == 422 and "it contains a space" in spaced.text
    no_csrf = await console.post("/signin", data={"email": ADMIN})
    assert no_csrf.status_code == 403
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(SignInLink)).one() == 1


@pytest.mark.sqlite_only
async def test_expired_and_made_up_links_open_nothing(
    console: httpx.AsyncClient, settings: Settings, engine: Engine,
) -> None:
    seed(engine)
    link = sessions.issue_link(engine, settings, ADMIN)
    assert link is not None
    with Session(engine) as s:
        s.exec(update(SignInLink).values(  # type: ignore[call-overload]
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        s.commit()
    expired = await console.get(link.url.removeprefix(settings.admin_base_url))
    assert expired.status_code == 410 and "expired" in expired.text
    made_up = await console.get("/signin/" + "x" * 43)
    assert made_up.status_code == 400 and "not valid" in made_up.text
    assert sessions.SESSION_COOKIE not in console.cookies
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(AdminSession)).one() == 0


@pytest.mark.sqlite_only
async def test_rate_limits_per_address_silently_and_per_client_with_429(
    settings: Settings, engine: Engine, dev_env: WorkflowEnvironment, smtp: Path,
) -> None:
    seed(engine)
    limited = settings.model_copy(update={"admin_signin_per_hour": 2})
    app = create_admin_app(limited, dev_env.client, engine)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=settings.admin_base_url) as http:
        answers = [await ask_for_link(http, ADMIN) for _ in range(3)]
        assert all(a.status_code == 200 and SAME_ANSWER in a.text for a in answers)
        await eventually(lambda: len(signin_mails(settings, ADMIN)) == 2, within=10,
                         what="two mails")
        with Session(engine) as s:
            assert s.exec(select(func.count()).select_from(SignInLink)).one() == 2
        statuses = [(await ask_for_link(http, f"x{i}@example.com")).status_code
                    for i in range(8)]
        assert statuses[:7] == [200] * 7 and statuses[7] == 429  # 10 a minute per client
        last = await ask_for_link(http, ADMIN)
        assert last.status_code == 429 and int(last.headers["retry-after"]) >= 1
    assert len(signin_mails(settings, ADMIN)) == 2


@pytest.mark.sqlite_only
async def test_sign_in_form_says_so_when_the_mail_server_is_down(
    console: httpx.AsyncClient, engine: Engine,
) -> None:
    seed(engine)  # no smtp fixture: nothing listens on settings.smtp_port
    for email in (ADMIN, "nobody@example.com"):  # alike: the answer tells nothing
        down = await ask_for_link(console, email)
        assert down.status_code == 503 and "could not be sent" in down.text


async def test_two_clicks_at_once_open_one_session(settings: Settings, engine: Engine) -> None:
    """Both databases: the conditional UPDATE lets one of two simultaneous uses through."""
    seed(engine)
    for _ in range(4):
        link = sessions.issue_link(engine, settings, ADMIN)
        assert link is not None
        token = link.url.rsplit("/", 1)[1]
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def click(token: str = token, barrier: threading.Barrier = barrier,
                  outcomes: list[str] = outcomes) -> None:
            barrier.wait()
            try:
                sessions.use_link(engine, settings, token)
                outcomes.append("signed in")
            except sessions.SignInRefused as refused:
                outcomes.append(refused.reason)

        threads = [threading.Thread(target=click) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(outcomes) == ["signed in", "used"]
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(AdminSession)).one() == 4


@pytest.mark.sqlite_only
async def test_another_accounts_invitation_is_404_and_left_alone(
    console: httpx.AsyncClient, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    acme, globex = seed(engine)
    theirs = invitation_id(globex, "someone@example.com")
    with Session(engine) as s:
        boss = s.exec(select(User).where(User.email == "it@globex.test")).one()
        assert boss.id is not None
        s.add(Invitation(id=theirs, account_id=globex, invited_by_user_id=boss.id,
                         email="someone@example.com",
                         expires_at=datetime.now(UTC) + timedelta(days=30)))
        s.commit()
    await sign_in(console, settings)
    page = await console.get("/users/pending")
    assert "someone@example.com" not in page.text
    assert (await console.get(f"/invitations/{theirs}")).status_code == 404
    token = csrf_in(page.text)
    for action in ("resend", "revoke"):
        answer = await console.post(f"/invitations/{theirs}/{action}", data={"csrf": token})
        assert answer.status_code == 404
    with Session(engine) as s:
        assert s.get(Invitation, theirs).status == "pending"  # type: ignore[union-attr]


async def test_add_users_validates_each_field_and_invites_the_valid_rows(
    console: httpx.AsyncClient, settings: Settings, engine: Engine,
    dev_env: WorkflowEnvironment, smtp: Path,
) -> None:
    acme, _ = seed(engine)
    await sign_in(console, settings)
    token = csrf_in((await console.get("/users/add")).text)

    def invitations() -> list[str]:
        with Session(engine) as s:
            return sorted(s.exec(select(Invitation.email)).all())

    forged = await console.post("/users/add", data={"addresses": "a@example.com"})
    assert forged.status_code == 403
    empty = await console.post("/users/add", data={"csrf": token, "addresses": " , "})
    assert empty.status_code == 422 and "addresses: enter at least one email address" in empty.text
    gold = await console.post("/users/add", data={
        "csrf": token, "addresses": "a@example.com", "user_type": "gold"})
    assert gold.status_code == 422 and 'id="user_type-error"' in gold.text
    assert "user type must be basic or licensed, not &#39;gold&#39;" in gold.text
    bad_csv = await console.post("/users/import", data={"csrf": token},
                                 files={"csv": ("people.csv", b"mail,name\nx@example.com,X\n")})
    assert bad_csv.status_code == 422 and "csv: people.csv line 1: the header" in bad_csv.text
    assert invitations() == []  # nothing started by any of them

    tag = uuid.uuid4().hex[:6]
    ada, bob = f"ada.{tag}@example.com", f"bob.{tag}@example.com"
    async with new_worker(dev_env.client, settings, engine):
        added = await console.post("/users/add", data={
            "csrf": token, "addresses": f"Ada Lovelace <{ada}>\nnot-an-address, {bob}",
            "user_type": "basic", "group": "Sales", "message": "Welcome aboard"})
        assert added.status_code == 200
        outcomes = dict(re.findall(r'data-email="([^"]*)" data-outcome="([^"]*)"', added.text))
        assert outcomes == {ada: "started", "not-an-address": "error", bob: "started"}
        assert 'data-field="email">email: &#39;not-an-address&#39; is not a valid' in added.text
        assert invitations() == [ada, bob]
        with Session(engine) as s:
            row = s.get(Invitation, invitation_id(acme, ada))
            inviter = s.exec(select(User).where(User.email == ADMIN)).one()
            assert row is not None and (row.first_name, row.last_name) == ("Ada", "Lovelace")
            assert row.invited_by_user_id == inviter.id and row.group_name == "Sales"

        csv = f"email,user_type\n{ada}\nc.{tag}@example.com,licensed\nd.{tag}@,basic\n".encode()
        imported = await console.post("/users/import", data={"csrf": token},
                                      files={"csv": ("team.csv", csv, "text/csv")})
        assert imported.status_code == 200
        rows = re.findall(r'<td class="muted">(\d+)</td>\s*<td>([^<]+)</td>', imported.text)
        assert rows == [("2", ada), ("3", f"c.{tag}@example.com"), ("4", f"d.{tag}@")]
        assert "1 invited, 1 already pending, 1 not invited." in imported.text
        pending = await console.get("/users/pending")
        listed = re.findall(r'<tr data-email="([^"]+)" data-status="pending">', pending.text)
        assert sorted(listed) == sorted([ada, bob, f"c.{tag}@example.com"])

        rita = f"rita.{tag}@example.com"  # her own account still has a room: error 1009
        with Session(engine) as s:
            create_individual(s, settings.recordings_dir, IndividualSpec(
                email=rita, first_name="Rita", rooms=("Rita's Boardroom",)))
            s.commit()
        added = await console.post("/users/add", data={"csrf": token, "addresses": rita})
        assert 'data-outcome="started"' in added.text
        client = InvitationsClient(dev_env.client, settings, engine)
        outcome = await client.accept(invitation_id(acme, rita))
        assert outcome.outcome == "blocked"
        pending = await console.get("/users/pending")
        found = re.search(rf'<tr data-email="{re.escape(rita)}" data-status="blocked">'
                          r"(.*?)</tr>", pending.text, re.S)
        assert found is not None and "Blocked (error 1009)" in found.group(1)
        assert "Delete the room" in found.group(1) and "Boardroom" in found.group(1)
        revoked = await console.post(f"/invitations/{invitation_id(acme, rita)}/revoke",
                                     data={"csrf": token, "reason": "Wrong person"})
        assert revoked.status_code == 303 and "notice=revoked" in revoked.headers["location"]
        again = await console.post(f"/invitations/{invitation_id(acme, rita)}/revoke",
                                   data={"csrf": token})
        assert again.status_code == 409 and f"revoke {rita}: invitation " in again.text
        assert "has ended (revoked)" in again.text
        # Their workflows run: the Pending list can count on their mail going out.
        await eventually(lambda: len(_sent(engine)) == 4, within=30, what="invitation mails")
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Invitation).where(
            col(Invitation.account_id) != acme)).one() == 0


def _sent(engine: Engine) -> list[str]:
    from records.tables import SentEmail

    with Session(engine) as s:
        return list(s.exec(select(SentEmail.to).where(SentEmail.kind == "invitation")).all())


@pytest.mark.sqlite_only
async def test_sessions_end_at_expiry_and_when_the_admin_is_demoted(
    console: httpx.AsyncClient, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    seed(engine)
    await sign_in(console, settings)
    assert (await console.get("/users")).status_code == 200
    with Session(engine) as s:
        s.exec(update(AdminSession).values(  # type: ignore[call-overload]
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        s.commit()
    assert (await console.get("/users")).headers["location"] == "/signin"

    expired_cookie = console.cookies[sessions.SESSION_COOKIE]
    await sign_in(console, settings)
    assert (await console.get("/users/pending")).status_code == 200
    with Session(engine) as s:  # signing in again ended the browser's earlier session
        ended = s.exec(select(AdminSession).where(
            AdminSession.session_hash == sessions.digest(expired_cookie))).one()
        assert ended.ended_at is not None
    with Session(engine) as s:
        admin = s.exec(select(User).where(User.email == ADMIN)).one()
        admin.role = Role.MEMBER
        s.add(admin)
        s.commit()
    assert (await console.get("/users/pending")).headers["location"] == "/signin"
    assert sessions.issue_link(engine, settings, ADMIN) is None  # no new link either


def test_sign_in_tokens_never_reach_a_log_line() -> None:
    redact = RedactFilter([]).redact
    token = "k3Y_-9" * 7
    assert redact(f'"GET /signin/{token} HTTP/1.1" 200') == '"GET /signin/<token> HTTP/1.1" 200'
    assert redact(f"http://127.0.0.1:8100/signin%2F{token}") == \
        "http://127.0.0.1:8100/signin%2F<token>"
    assert redact("POST /signin HTTP/1.1") == "POST /signin HTTP/1.1"


@pytest.mark.sqlite_only
async def test_pending_list_comes_in_pages_of_a_hundred(
    console: httpx.AsyncClient, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    acme, _ = seed(engine)
    with Session(engine) as s:
        admin = s.exec(select(User).where(User.email == ADMIN)).one()
        assert admin.id is not None
        start = datetime.now(UTC)
        for i in range(105):
            email = f"p{i:03d}@example.com"
            s.add(Invitation(id=invitation_id(acme, email), account_id=acme, email=email,
                             invited_by_user_id=admin.id, invited_at=start + timedelta(seconds=i),
                             expires_at=start + timedelta(days=30)))
        s.commit()
    await sign_in(console, settings)
    first = await console.get("/users/pending")
    emails = re.findall(r'<tr data-email="([^"]+)"', first.text)
    assert len(emails) == 100 and emails[0] == "p000@example.com"
    assert "1–100 of 105 open invitations." in first.text and 'id="next-page"' in first.text
    second = await console.get("/users/pending?page=2")
    assert re.findall(r'<tr data-email="([^"]+)"', second.text) == [
        f"p{i:03d}@example.com" for i in range(100, 105)]
    assert 'id="previous-page"' in second.text and 'id="next-page"' not in second.text


@pytest.mark.sqlite_only
async def test_cookies_are_secure_when_the_console_is_served_over_https(
    settings: Settings, engine: Engine, dev_env: WorkflowEnvironment,
) -> None:
    seed(engine)
    https = settings.model_copy(update={"admin_base_url": "https://admin.example.test"})
    app = create_admin_app(https, dev_env.client, engine)
    link = sessions.issue_link(engine, https, ADMIN)
    assert link is not None and link.url.startswith("https://admin.example.test/signin/")
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=https.admin_base_url) as http:
        opened = await open_link(http, link.url.removeprefix(https.admin_base_url))
    assert opened.status_code == 303
    cookie = next(c for c in opened.headers.get_list("set-cookie")
                  if c.startswith(sessions.SESSION_COOKIE + "="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "strict-transport-security" in opened.headers
