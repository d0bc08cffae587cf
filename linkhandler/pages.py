"""Every answer of the link handler, as an HTML page or, to `Accept: application/json`,
the same facts as JSON. Forms get a fresh nonce and CSRF token each time they are shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from config import Settings
from linkhandler.invitee import (
    BadForm,
    BadLink,
    Gone,
    Invitee,
    TemporarilyUnavailable,
    new_form,
)
from linkhandler.present import BASIC_LIMITS, make_environment, refund_formula
from models.payloads import (
    AcceptOutcome,
    Category,
    Preview,
    Progress,
    RefundDestination,
    RefundQuote,
    UserType,
)

STATIC = Path(__file__).resolve().parent / "static"

GONE_TITLES = {
    "expired": "This invitation has expired",
    "revoked": "This invitation was withdrawn",
    "declined": "You declined this invitation",
    "completed": "This invitation has already been used",
    "failed_compensated": "Joining did not complete",
    "joined_elsewhere": "You joined another account",
    "unavailable": "This invitation is no longer available",
}
ERRORS = {
    400: ("invalid_link", "This link is not valid",
          "The address may have been cut or changed. Open the link from the email again, "
          "copying the whole address."),
    403: ("invalid_form", "This form has expired",
          "Go back, reload the page and try again."),
    503: ("temporarily_unavailable", "Please try again in a moment",
          "The invitation service did not answer in time. Open the link again in a moment "
          "to see where your invitation stands."),
}


def dump(model: Any) -> Any:
    return model.model_dump(mode="json") if model is not None else None


class Pages:
    def __init__(self, settings: Settings) -> None:
        self.secret = settings.link_secret.get_secret_value()
        self.templates = Jinja2Templates(env=make_environment())

    @staticmethod
    def wants_json(request: Request) -> bool:
        accept = request.headers.get("accept", "")
        return "application/json" in accept and "text/html" not in accept

    def answer(self, request: Request, template: str, data: dict[str, Any],
               status_code: int = 200, **html_only: Any) -> Response:
        if self.wants_json(request):
            return JSONResponse(data, status_code=status_code)
        return self.templates.TemplateResponse(
            request, template, {**data, **html_only}, status_code=status_code)

    def links(self, token: str) -> dict[str, str]:
        base = f"/i/{token}"
        return {"preview": base, "accept": f"{base}/accept", "refund": f"{base}/refund",
                "decline": f"{base}/decline", "status": f"{base}/status",
                "reports": f"{base}/reports.csv"}

    def invitation(self, p: Progress) -> dict[str, Any]:
        keys = ("invitation_id", "status", "account_name", "invited_by", "email", "first_name",
                "last_name", "user_type", "group", "message", "invited_at", "expires_at")
        return p.model_dump(mode="json", include=set(keys))

    def common(self, inv: Invitee) -> dict[str, Any]:
        p = inv.progress
        return {"status": p.status.value, "invitation": self.invitation(p),
                "links": self.links(inv.token),
                "basic_limits": BASIC_LIMITS if p.user_type == UserType.BASIC else None}

    def preview(self, request: Request, inv: Invitee, preview: Preview) -> Response:
        data = {**self.common(inv), "preview": dump(preview),
                "refund_formula": refund_formula(preview.quote) if preview.quote else None,
                "form": new_form(self.secret, inv.token)}
        counts = {c.category: c for c in preview.counts}
        return self.answer(request, "preview.html", data, p=inv.progress, pv=preview,
                           counts=[counts[c] for c in Category if c in counts],
                           decline_form=new_form(self.secret, inv.token))

    def refund(self, request: Request, inv: Invitee, quote: RefundQuote | None,
               status_code: int = 200, error: str | None = None) -> Response:
        data = {**self.common(inv), "status": "awaiting_refund_choice", "quote": dump(quote),
                "refund_formula": refund_formula(quote) if quote else None,
                "destinations": [d.value for d in RefundDestination],
                "form": new_form(self.secret, inv.token), "error": error}
        return self.answer(request, "refund.html", data, status_code, p=inv.progress, q=quote,
                           decline_form=new_form(self.secret, inv.token))

    def outcome(self, request: Request, inv: Invitee, outcome: AcceptOutcome) -> Response:
        if outcome.outcome == "refund_choice_needed":
            return self.refund(request, inv, outcome.quote)
        if outcome.outcome == "accepted":
            return self.see_status(request, inv, outcome)
        if outcome.outcome == "joined_elsewhere":  # the invitation has ended
            raise Gone("joined_elsewhere", inv.progress)
        data = {**self.common(inv), "status": "blocked", "outcome": dump(outcome),
                "form": new_form(self.secret, inv.token)}
        return self.answer(request, "blocked.html", data, 409, p=inv.progress, o=outcome)

    def see_status(self, request: Request, inv: Invitee,
                   outcome: AcceptOutcome | None = None) -> Response:
        url = self.links(inv.token)["status"]
        if self.wants_json(request):
            return JSONResponse({**self.common(inv), "outcome": dump(outcome),
                                 "progress": dump(inv.progress)})
        return RedirectResponse(url, status_code=303)

    def declined(self, request: Request, inv: Invitee, progress: Progress) -> Response:
        data = {**self.common(inv), "status": progress.status.value, "progress": dump(progress)}
        return self.answer(request, "declined.html", data, p=progress)

    def status(self, request: Request, inv: Invitee) -> Response:
        p = inv.progress
        data = {**self.common(inv), "final": p.status.is_final, "progress": dump(p)}
        cats = [p.categories[c] for c in Category if c in p.categories]
        return self.answer(request, "status.html", data, p=p, categories=cats)

    def install_error_pages(self, app: FastAPI) -> None:
        def error(request: Request, code: int) -> Response:
            kind, title, text = ERRORS[code]
            return self.answer(request, "error.html",
                               {"error": kind, "message": title, "detail": text}, code)

        async def gone(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, Gone)
            title = GONE_TITLES.get(exc.reason, GONE_TITLES["unavailable"])
            data = {"error": "gone", "reason": exc.reason, "message": title}
            token = request.path_params.get("token", "")
            return self.answer(request, "gone.html", data, 410, p=exc.progress,
                               links=self.links(token))

        async def bad_link(request: Request, exc: Exception) -> Response:
            return error(request, 400)

        async def bad_form(request: Request, exc: Exception) -> Response:
            return error(request, 403)

        async def unavailable(request: Request, exc: Exception) -> Response:
            return error(request, 503)

        app.add_exception_handler(Gone, gone)
        app.add_exception_handler(BadLink, bad_link)
        app.add_exception_handler(BadForm, bad_form)
        app.add_exception_handler(TemporarilyUnavailable, unavailable)

