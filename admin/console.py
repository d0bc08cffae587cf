"""The admin console (issue #15): sign in by a mailed link, then User Management > Users
(members, and the Pending tab with Resend and Revoke), Add users (addresses or a CSV file,
per-row results), and one invitation's live progress.

Every page acts for the signed-in admin's account only (`Principal.account_id`): another
account's invitation is 404. Inviting goes through `InvitationsClient` with the signed-in
admin as the inviter, so validation and errors are the client's, field by field. Forms
carry a CSRF token (admin/sessions.py); a POST without a valid one changes nothing (403).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Coroutine
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, FileSystemLoader
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from admin import sessions
from admin.principal import Principal
from admin.sessions import FORM_COOKIE, SESSION_COOKIE, SIGNIN_PATH
from config import Settings
from invitations.client import InvitationsClient
from invitations.csvimport import read_invite_csv
from invitations.errors import CsvFormatError, InvitationError, TemporalUnavailable
from invitations.models import InviteRequest, Outcome, PendingInvitation, RowResult
from linkhandler.hardening import BadLinkLimiter
from linkhandler.present import TEMPLATES as LINK_TEMPLATES
from linkhandler.present import datetime_utc, make_environment
from models.payloads import Category, EmailKind, Progress, UserType
from models.tables import Account, Invitation, SentEmail, User

HERE = Path(__file__).resolve().parent
MAX_ADDRESSES = 500  # per form; a CSV file takes more
PAGE_SIZE = 100  # rows of the Pending list per page
MAX_CSV_BYTES = 5 * 1024 * 1024
SHARED_FIELDS = ("user_type", "group", "message", "expires_in_days")
NOTICES = {"resent": "A new invitation email was sent to {email}; it expires {expires}.",
           "revoked": "The invitation of {email} was revoked."}
ERRORS = {
    403: ("This form has expired", "Go back, reload the page and try again."),
    404: ("There is nothing here", "It does not exist, or it belongs to another account."),
    429: ("Too many attempts", "Wait a minute, then try again."),
    503: ("Please try again in a moment", "A service the console needs did not answer."),
}


class NotSignedIn(Exception):
    pass


class BadForm(Exception):
    pass


class ConsoleRoute(APIRoute):
    """Turns the console's own exceptions (raised by routes and dependencies) into pages:
    not signed in -> the sign-in page; a bad CSRF token -> 403; a malformed request -> 422
    naming the field. Per router, so the REST API's error format stays its own."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except NotSignedIn:
                return RedirectResponse(SIGNIN_PATH, status_code=303)
            except BadForm:
                return error_page(request, 403)
            except RequestValidationError as exc:
                first = exc.errors()[0]
                field = str(first["loc"][-1]) if first.get("loc") else "form"
                return error_page(request, 422, title="This form is not complete",
                                  text=f"{field}: {first.get('msg', 'invalid')}")

        return run


router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _templates() -> Jinja2Templates:
    env = make_environment()
    env.loader = ChoiceLoader([FileSystemLoader(HERE / "templates"),
                               FileSystemLoader(LINK_TEMPLATES)])
    return Jinja2Templates(env=env)


TEMPLATES = _templates()


# --- plumbing -------------------------------------------------------------------------
def state(request: Request) -> tuple[Settings, Engine, InvitationsClient]:
    s = request.app.state
    return s.settings, s.engine, s.invitations


def limiter(request: Request, name: str, burst: int) -> BadLinkLimiter:
    """Per-process limiters, kept on the app (one per app, not per module)."""
    limits: dict[str, BadLinkLimiter] | None = getattr(request.app.state,
                                                      "console_limiters", None)
    if limits is None:
        limits = request.app.state.console_limiters = {}
    if name not in limits:
        limits[name] = BadLinkLimiter(burst=burst, per_seconds=60)
    return limits[name]


def client_of(request: Request) -> str:
    return request.client.host if request.client else ""


def render(request: Request, template: str, context: dict[str, Any], status_code: int = 200,
           principal: Principal | None = None, headers: dict[str, str] | None = None
           ) -> Response:
    settings = request.app.state.settings
    session_id = request.cookies.get(SESSION_COOKIE, "")
    ctx = {"principal": principal, "account_name": context.pop("account_name", None),
           "csrf": sessions.csrf_token(settings, session_id) if principal else "",
           "nav": context.pop("nav", ""), **context}
    response = TEMPLATES.TemplateResponse(request, template, ctx, status_code=status_code,
                                          headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(request: Request, code: int, *, title: str | None = None,
               text: str | None = None, headers: dict[str, str] | None = None) -> Response:
    default_title, default_text = ERRORS.get(code, ("Something went wrong", ""))
    return render(request, "console_error.html",
                  {"title": title or default_title, "text": text or default_text,
                   "code": code}, code, headers=headers)


async def current_admin(request: Request) -> Principal:
    principal = await sessions.signed_in(request)
    if principal is None:
        raise NotSignedIn()
    return principal


Admin = Annotated[Principal, Depends(current_admin)]


def check_csrf(request: Request, given: str | None, cookie: str = SESSION_COOKIE) -> None:
    if not sessions.csrf_ok(request.app.state.settings, request.cookies.get(cookie), given):
        raise BadForm()


def account_name(engine: Engine, account_id: int) -> str:
    with Session(engine) as session:
        account = session.get(Account, account_id)
        return account.name if account is not None else f"account {account_id}"


def own_invitation(engine: Engine, principal: Principal, invitation_id: str
                   ) -> Invitation | None:
    """The invitation if it belongs to the principal's account; else None (404)."""
    with Session(engine) as session:
        row = session.get(Invitation, invitation_id)
    return row if row is not None and row.account_id == principal.account_id else None


# --- signing in and out ----------------------------------------------------------------
def signin_page(request: Request, *, sent: bool = False, error: str | None = None,
                status_code: int = 200, notice: str | None = None,
                confirm: sessions.IssuedLink | None = None) -> Response:
    settings = request.app.state.settings
    form_cookie = request.cookies.get(FORM_COOKIE) or sessions.new_form_cookie()
    response = render(request, "signin.html", {
        "sent": sent, "error": error, "notice": notice, "confirm": confirm,
        "form_csrf": sessions.csrf_token(settings, form_cookie),
        "minutes": settings.admin_signin_link_minutes}, status_code)
    sessions.set_cookie(response, settings, FORM_COOKIE, form_cookie)
    return response


@router.get(SIGNIN_PATH)
async def signin_form(request: Request, signed_out: int = 0) -> Response:
    if await sessions.signed_in(request) is not None:
        return RedirectResponse("/users", status_code=303)
    return signin_page(request, notice="You are signed out." if signed_out else None)


@router.post(SIGNIN_PATH)
async def signin_request(request: Request, email: Annotated[str, Form()] = "",
                         csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf, FORM_COOKIE)
    settings, engine, _ = state(request)
    wait = limiter(request, "signin", burst=10).record_failure(client_of(request))
    if wait:
        return error_page(request, 429, headers={"Retry-After": str(wait)})
    address = email.strip()
    if not address or "@" not in address:
        return signin_page(request, status_code=422,
                           error="email: enter the email address you administer the account with")
    link = await asyncio.to_thread(sessions.issue_link, engine, settings, address)
    try:
        await sessions.send_signin_mail(settings, link)
    except sessions.MailUnavailable:
        return error_page(request, 503, title="The sign-in mail could not be sent",
                          text="The mail server did not answer. Try again in a moment; if it "
                               "goes on, tell whoever runs this service.")
    return signin_page(request, sent=True)


def refused_page(request: Request, refused: sessions.SignInRefused) -> Response:
    wait = limiter(request, "links", burst=20).record_failure(client_of(request))
    if wait:
        return error_page(request, 429, headers={"Retry-After": str(wait)})
    title, code = {
        "expired": ("This sign-in link has expired", 410),
        "used": ("This sign-in link was already used", 410),
    }.get(refused.reason, ("This sign-in link is not valid", 400))
    return error_page(request, code, title=title,
                      text="Each link works once, for a few minutes. Ask for a new one on "
                           "the sign-in page.")


@router.get(SIGNIN_PATH + "/{token}")
async def signin_confirm(request: Request, token: str) -> Response:
    """Asks to confirm, spending nothing: mail scanners open the links in mails."""
    try:
        link = await asyncio.to_thread(sessions.check_link, request.app.state.engine, token)
    except sessions.SignInRefused as refused:
        return refused_page(request, refused)
    return signin_page(request, confirm=link)


@router.post(SIGNIN_PATH + "/{token}")
async def signin_with_link(request: Request, token: str,
                           csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf, FORM_COOKIE)
    settings, engine, _ = state(request)
    try:
        session_id, _principal = await asyncio.to_thread(sessions.use_link, engine, settings,
                                                         token)
    except sessions.SignInRefused as refused:
        return refused_page(request, refused)
    earlier = request.cookies.get(SESSION_COOKIE)
    if earlier:  # this browser's earlier session ends: one session per browser
        await asyncio.to_thread(sessions.end_session, engine, earlier)
    response = RedirectResponse("/users", status_code=303)
    sessions.set_cookie(response, settings, SESSION_COOKIE, session_id,
                        max_age=settings.admin_session_hours * 3600)
    response.delete_cookie(FORM_COOKIE, path="/")
    return response


@router.post("/signout")
async def signout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    check_csrf(request, csrf)
    session_id = request.cookies.get(SESSION_COOKIE, "")
    await asyncio.to_thread(sessions.end_session, request.app.state.engine, session_id)
    response = RedirectResponse(SIGNIN_PATH + "?signed_out=1", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/console.css")
async def console_css() -> Response:
    return FileResponse(HERE / "static" / "console.css", media_type="text/css")


@router.get("/")
async def home(principal: Admin) -> Response:
    return RedirectResponse("/users", status_code=303)


# --- users ------------------------------------------------------------------------------
def _members(engine: Engine, account_id: int) -> list[User]:
    with Session(engine) as session:
        return list(session.exec(select(User).where(col(User.account_id) == account_id)
                                 .order_by(col(User.role), col(User.email))).all())


@router.get("/users")
async def users(request: Request, principal: Admin) -> Response:
    _, engine, _ = state(request)
    members = await asyncio.to_thread(_members, engine, principal.account_id)
    name = await asyncio.to_thread(account_name, engine, principal.account_id)
    return render(request, "users.html", {"members": members, "account_name": name,
                                          "nav": "members"}, principal=principal)


def _mail_facts(engine: Engine, ids: list[str]) -> dict[str, tuple[Any, int]]:
    """Per invitation: when its latest invitation email went out, and reminders sent."""
    if not ids:
        return {}
    with Session(engine) as session:
        rows = session.exec(
            select(SentEmail.invitation_id, SentEmail.kind, func.max(SentEmail.sent_at),
                   func.count())
            .where(col(SentEmail.invitation_id).in_(ids),
                   col(SentEmail.kind).in_([EmailKind.INVITATION.value,
                                            EmailKind.REMINDER.value]))
            .group_by(col(SentEmail.invitation_id), col(SentEmail.kind))).all()
    facts: dict[str, tuple[Any, int]] = {}
    for inv, kind, latest, n in rows:
        sent, reminders = facts.get(str(inv), (None, 0))
        if kind == EmailKind.INVITATION.value:
            sent = latest
        else:
            reminders = int(n)
        facts[str(inv)] = (sent, reminders)
    return facts


async def _blocking(client: InvitationsClient, rows: list[PendingInvitation]
                    ) -> dict[str, Progress]:
    """The live state of the blocked ones (what blocks them), read from their workflows."""
    blocked = [r.invitation_id for r in rows if r.status == "blocked"][:50]

    async def one(inv: str) -> Progress | None:
        try:
            return await asyncio.wait_for(client.status(inv), timeout=5)
        except (InvitationError, TimeoutError):
            return None

    found = await asyncio.gather(*(one(i) for i in blocked))
    return {i: p for i, p in zip(blocked, found, strict=True) if p is not None}


async def pending_page(request: Request, principal: Principal, *, notice: str | None = None,
                       error: str | None = None, status_code: int = 200, page: int = 1
                       ) -> Response:
    _, engine, client = state(request)
    everyone = await client.pending(principal.account_id)
    pages = max(1, -(-len(everyone) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    rows = everyone[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
    facts = await asyncio.to_thread(_mail_facts, engine, [r.invitation_id for r in rows])
    live = await _blocking(client, rows)
    name = await asyncio.to_thread(account_name, engine, principal.account_id)
    return render(request, "pending.html", {
        "rows": rows, "facts": facts, "live": live, "notice": notice, "error": error,
        "account_name": name, "nav": "pending", "page": page, "pages": pages,
        "total": len(everyone), "first": (page - 1) * PAGE_SIZE + 1},
        status_code, principal=principal)


@router.get("/users/pending")
async def pending(request: Request, principal: Admin, notice: str = "",
                  invitation: str = "", page: int = 1) -> Response:
    text = None
    if notice in NOTICES and invitation:
        row = own_invitation(request.app.state.engine, principal, invitation)
        if row is not None:
            text = NOTICES[notice].format(email=row.email, expires=datetime_utc(row.expires_at))
    return await pending_page(request, principal, notice=text, page=page)


# --- adding users -----------------------------------------------------------------------
def split_addresses(text: str) -> list[tuple[str, str, str]]:
    """(email, first name, last name) per entry: one per line, or separated by commas or
    semicolons; "Ada Lovelace <ada@example.com>" gives the name too."""
    entries = [e.strip() for chunk in text.replace(";", "\n").splitlines()
               for e in chunk.split(",")]
    found = []
    for entry in filter(None, entries):
        name, address = parseaddr(entry)
        if not address or (not name and "<" in entry):
            address, name = entry, ""
        first, _, last = name.strip().partition(" ")
        found.append((address.strip(), first, last.strip()))
    return found


def add_page(request: Request, principal: Principal, name: str, *,
             results: list[RowResult] | None = None, form: dict[str, str] | None = None,
             field_errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    results = results or []
    summary = {o.value: sum(1 for r in results if r.outcome == o) for o in Outcome}
    return render(request, "add.html", {
        "results": results, "summary": summary, "account_name": name, "nav": "add",
        "form": {"addresses": "", "user_type": "basic", "group": "", "message": "",
                 **(form or {})},
        "field_errors": field_errors or {}, "user_types": [t.value for t in UserType]},
        status_code, principal=principal)


def shared_field_errors(results: list[RowResult]) -> dict[str, str]:
    """Errors of the fields every row shares (user type, group, message), shown beside
    them once: such an error is every row's, and nothing was started."""
    found: dict[str, str] = {}
    for r in results:
        if r.error is not None and r.error.field in SHARED_FIELDS:
            found.setdefault(r.error.field, r.error.message)
    return found


@router.get("/users/add")
async def add_form(request: Request, principal: Admin) -> Response:
    name = await asyncio.to_thread(account_name, request.app.state.engine, principal.account_id)
    return add_page(request, principal, name)


@router.post("/users/add")
async def add_users(
    request: Request, principal: Admin, csrf: Annotated[str, Form()] = "",
    addresses: Annotated[str, Form()] = "", user_type: Annotated[str, Form()] = "basic",
    group: Annotated[str, Form()] = "", message: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, csrf)
    _, engine, client = state(request)
    name = await asyncio.to_thread(account_name, engine, principal.account_id)
    form = {"addresses": addresses, "user_type": user_type, "group": group, "message": message}
    people = split_addresses(addresses)
    if not people or len(people) > MAX_ADDRESSES:
        problem = ("enter at least one email address" if not people else
                   f"{len(people)} addresses: at most {MAX_ADDRESSES} at once; upload a CSV "
                   "file for more")
        return add_page(request, principal, name, form=form, status_code=422,
                        field_errors={"addresses": f"addresses: {problem}"})
    requests = [InviteRequest(account_id=principal.account_id, invited_by=principal.email,
                              email=email, first_name=first, last_name=last,
                              user_type=user_type, group=group.strip() or None,
                              message=message.strip() or None, line=i)
                for i, (email, first, last) in enumerate(people, start=1)]
    results = await client.invite_many(requests)
    failed = [r for r in results if r.outcome == Outcome.ERROR]
    keep = {**form, "addresses": "\n".join(r.email for r in failed)}  # to fix and resend
    return add_page(request, principal, name, results=results, form=keep,
                    field_errors=shared_field_errors(results),
                    status_code=422 if len(failed) == len(results) else 200)


@router.post("/users/import")
async def import_csv(
    request: Request, principal: Admin, csrf: Annotated[str, Form()] = "",
    csv: Annotated[UploadFile | None, File()] = None,
    user_type: Annotated[str, Form()] = "basic", group: Annotated[str, Form()] = "",
    message: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, csrf)
    _, engine, client = state(request)
    name = await asyncio.to_thread(account_name, engine, principal.account_id)
    form = {"user_type": user_type, "group": group, "message": message}
    data = await csv.read(MAX_CSV_BYTES + 1) if csv is not None else b""
    filename = (csv.filename if csv is not None else None) or "the file"
    problem = ("choose a CSV file (header: email,first_name,last_name,user_type)" if not data
               else f"{filename} is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB"
               if len(data) > MAX_CSV_BYTES else None)
    if problem is None:
        try:
            parsed = await asyncio.to_thread(_read_upload, data, filename, principal,
                                             user_type, group, message)
        except CsvFormatError as exc:
            problem = exc.message
    if problem is not None:
        return add_page(request, principal, name, form=form, status_code=422,
                        field_errors={"csv": f"csv: {problem}"})
    started = await client.invite_many(parsed.requests)
    results = sorted([*started, *parsed.errors], key=lambda r: r.line or 0)
    failed = sum(1 for r in results if r.outcome == Outcome.ERROR)
    return add_page(request, principal, name, results=results, form=form,
                    field_errors=shared_field_errors(results),
                    status_code=422 if results and failed == len(results) else 200)


def _read_upload(data: bytes, filename: str, principal: Principal, user_type: str,
                 group: str, message: str) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.csv"
        path.write_bytes(data)
        try:
            return read_invite_csv(path, account_id=principal.account_id,
                                   invited_by=principal.email, user_type=user_type or "basic",
                                   group=group.strip() or None, message=message.strip() or None)
        except CsvFormatError as exc:  # name the file as the admin knows it
            raise CsvFormatError(exc.message.replace(str(path), filename)) from None


# --- one invitation -------------------------------------------------------------------
@router.get("/invitations/{invitation_id}")
async def invitation_page(request: Request, principal: Admin, invitation_id: str) -> Response:
    _, engine, client = state(request)
    row = await asyncio.to_thread(own_invitation, engine, principal, invitation_id)
    if row is None:
        return error_page(request, 404)
    progress: Progress | None = None
    unavailable = None
    try:
        progress = await client.status(invitation_id)
    except InvitationError as exc:
        unavailable = exc.message
    categories = ([progress.categories[c] for c in Category if c in progress.categories]
                  if progress is not None else [])
    name = await asyncio.to_thread(account_name, engine, principal.account_id)
    return render(request, "invitation.html", {
        "row": row, "p": progress, "categories": categories, "unavailable": unavailable,
        "account_name": name, "nav": "pending"}, principal=principal)


async def _act(request: Request, principal: Principal, invitation_id: str, csrf: str,
               action: str, back: str, reason: str = "") -> Response:
    check_csrf(request, csrf)
    _, engine, client = state(request)
    row = await asyncio.to_thread(own_invitation, engine, principal, invitation_id)
    if row is None:
        return error_page(request, 404)
    try:
        if action == "resend":
            await client.resend(invitation_id)
        else:
            await client.revoke(invitation_id, by=principal.email, reason=reason.strip() or None)
    except InvitationError as exc:
        code = 503 if isinstance(exc, TemporalUnavailable) else 409
        return await pending_page(request, principal, status_code=code,
                                  error=f"{action} {row.email}: {exc.message}")
    if back == "invitation":
        return RedirectResponse(f"/invitations/{quote(invitation_id)}", status_code=303)
    done = {"resend": "resent", "revoke": "revoked"}[action]
    return RedirectResponse("/users/pending?" + urlencode({"notice": done,
                                                           "invitation": invitation_id}),
                            status_code=303)


@router.post("/invitations/{invitation_id}/resend")
async def resend(request: Request, principal: Admin, invitation_id: str,
                 csrf: Annotated[str, Form()] = "", back: Annotated[str, Form()] = "") -> Response:
    return await _act(request, principal, invitation_id, csrf, "resend", back)


@router.post("/invitations/{invitation_id}/revoke")
async def revoke(request: Request, principal: Admin, invitation_id: str,
                 csrf: Annotated[str, Form()] = "", back: Annotated[str, Form()] = "",
                 reason: Annotated[str, Form()] = "") -> Response:
    return await _act(request, principal, invitation_id, csrf, "revoke", back, reason)
