"""Signing in and out of the console: the form that mails a link (the same answer for
every address), the page that asks to confirm a link, and the confirmation that spends it
and opens the session (rules in admin/sessions.py)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Form, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from admin import sessions
from admin.console_kit import (
    check_csrf,
    client_of,
    console_router,
    error_page,
    limiter,
    render,
    state,
)
from admin.sessions import FORM_COOKIE, SESSION_COOKIE, SIGNIN_PATH
from content.present import STATIC
from invitations.emails import email_problem
from records.ids import normalise_email

router = console_router()


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
    address = normalise_email(email)
    problem = email_problem(address)  # the address's shape only: says nothing of who exists
    if problem:
        return signin_page(request, status_code=422,
                           error=f"email: enter the address you administer the account with "
                                 f"({problem})")
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
    return FileResponse(STATIC / "console.css", media_type="text/css")
