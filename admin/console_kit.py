"""What every console page shares: the route class that turns the console's exceptions
into pages, the templates (content/templates/console, rendered by content's environment), the
signed-in admin dependency, CSRF checks and account-scoped lookups."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from sqlmodel import Session

from admin import sessions
from admin.principal import Principal
from admin.sessions import SESSION_COOKIE, SIGNIN_PATH
from config import Settings
from content.present import make_environment
from invitations.client import InvitationsClient
from linkhandler.hardening import BadLinkLimiter
from records.tables import Account, Invitation

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



TEMPLATES = Jinja2Templates(env=make_environment())


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
    response = TEMPLATES.TemplateResponse(request, f"console/{template}", ctx,
                                          status_code=status_code, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(request: Request, code: int, *, title: str | None = None,
               text: str | None = None, headers: dict[str, str] | None = None) -> Response:
    default_title, default_text = ERRORS.get(code, ("Something went wrong", ""))
    return render(request, "error.html",
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




def console_router() -> APIRouter:
    """A router of console pages (ConsoleRoute: the console's errors become pages)."""
    return APIRouter(route_class=ConsoleRoute, include_in_schema=False)
