"""Every answer of the link handler, as an HTML page or, to `Accept: application/json`,
the same facts as JSON. Forms get a fresh nonce and CSRF token each time they are shown."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from config import Settings
from content.labels import BASIC_LIMITS
from content.present import make_environment, refund_formula
from linkhandler.contract import Outcome, answer
from linkhandler.hardening import BadLinkLimiter
from linkhandler.invitee import (
    BadForm,
    BadLink,
    Gone,
    Invitee,
    TemporarilyUnavailable,
    new_form,
)
from messages.payloads import (
    AcceptOutcome,
    Category,
    InvitationStatus,
    Preview,
    Progress,
    RefundDestination,
    RefundQuote,
    UserType,
)

GONE_TITLES = {
    "expired": "This invitation has expired",
    "revoked": "This invitation was withdrawn",
    "declined": "You declined this invitation",
    "completed": "This invitation has already been used",
    "failed_compensated": "Joining did not complete",
    "joined_elsewhere": "You joined another account",
    "cancelled": "This invitation was withdrawn",
    "superseded": "A newer invitation email was sent",
    "accepted": "Reports are no longer handed out here",  # reports.csv once data moves
    "transferring": "Reports are no longer handed out here",
    "unavailable": "This invitation is no longer available",
}
# reason of a Gone -> outcome of the JSON contract (the final statuses read as "ended").
GONE_OUTCOMES: dict[str, Outcome] = {"superseded": "superseded", "expired": "expired",
                                     "unavailable": "unavailable", "accepted": "unavailable",
                                     "transferring": "unavailable"}
ERRORS: dict[int, tuple[Outcome, str, str]] = {
    400: ("invalid_link", "This link is not valid",
          "The address may have been cut or changed. Open the link from the email again, "
          "copying the whole address."),
    403: ("invalid_form", "This form has expired",
          "Go back, reload the page and try again."),
    404: ("not_found", "There is nothing here",
          "Open the link from your invitation email, copying the whole address."),
    405: ("method_not_allowed", "This page cannot be used that way",
          "Open the link from your invitation email."),
    429: ("rate_limited", "Too many invalid links",
          "This connection opened too many links that are not valid. Wait a minute, then "
          "open the link from your invitation email again."),
    503: ("temporarily_unavailable", "Please try again in a moment",
          "The invitation service did not answer in time. Open the link again in a moment "
          "to see where your invitation stands."),
}


def dump(model: Any) -> Any:
    return model.model_dump(mode="json") if model is not None else None


class Pages:
    def __init__(self, settings: Settings) -> None:
        self.secret = settings.link_secret.get_secret_value()  # signs new forms
        self.templates = Jinja2Templates(env=make_environment())

    @staticmethod
    def wants_json(request: Request) -> bool:
        accept = request.headers.get("accept", "")
        return "application/json" in accept and "text/html" not in accept

    def answer(self, request: Request, template: str, data: dict[str, Any],
               status_code: int = 200, headers: dict[str, str] | None = None,
               **html_only: Any) -> Response:
        """`data` is the JSON body (contract.answer) and the page's context; `template` is
        one of content/templates/pages."""
        if self.wants_json(request):
            return JSONResponse(data, status_code=status_code, headers=headers)
        return self.templates.TemplateResponse(
            request, f"pages/{template}", {**data, **html_only}, status_code=status_code,
            headers=headers)

    def links(self, token: str) -> dict[str, str]:
        base = f"/i/{token}"
        return {"preview": base, "accept": f"{base}/accept", "refund": f"{base}/refund",
                "decline": f"{base}/decline", "status": f"{base}/status",
                "reports": f"{base}/reports.csv"}

    def invitation(self, p: Progress) -> dict[str, Any]:
        keys = ("invitation_id", "status", "account_name", "invited_by", "email", "first_name",
                "last_name", "user_type", "group", "message", "invited_at", "expires_at",
                "mail_problem")
        return p.model_dump(mode="json", include=set(keys))

    def common(self, inv: Invitee) -> dict[str, Any]:
        p = inv.progress
        return {"invitation": self.invitation(p), "links": self.links(inv.token),
                "basic_limits": BASIC_LIMITS if p.user_type == UserType.BASIC else None}

    def preview(self, request: Request, inv: Invitee, preview: Preview) -> Response:
        p = inv.progress
        data = answer("preview", f"{p.invited_by} invited you to join {p.account_name}.",
                      p.status, blocking=preview.blocking, quote=preview.quote,
                      **self.common(inv), preview=dump(preview),
                      refund_formula=refund_formula(preview.quote) if preview.quote else None,
                      form=new_form(self.secret, inv.token))
        counts = {c.category: c for c in preview.counts}
        return self.answer(request, "preview.html", data, p=p, pv=preview,
                           counts=[counts[c] for c in Category if c in counts],
                           decline_form=new_form(self.secret, inv.token))

    def refund(self, request: Request, inv: Invitee, quote: RefundQuote | None,
               status_code: int = 200, error: str | None = None) -> Response:
        data = answer("refund_choice_needed", error or "Choose where your refund goes.",
                      InvitationStatus.AWAITING_REFUND_CHOICE, quote=quote,
                      error_code="invalid_refund_destination" if error else None,
                      **self.common(inv),
                      refund_formula=refund_formula(quote) if quote else None,
                      destinations=[d.value for d in RefundDestination],
                      form=new_form(self.secret, inv.token), error=error)
        return self.answer(request, "refund.html", data, status_code, p=inv.progress, q=quote,
                           decline_form=new_form(self.secret, inv.token))

    def outcome(self, request: Request, inv: Invitee, outcome: AcceptOutcome) -> Response:
        if outcome.outcome == "refund_choice_needed":
            return self.refund(request, inv, outcome.quote)
        if outcome.outcome == "accepted":
            return self.see_status(request, inv, outcome)
        p = inv.progress
        if outcome.outcome == "joined_elsewhere":  # the invitation has ended
            raise Gone("joined_elsewhere", p)
        if outcome.outcome in ("already_joining", "no_free_seat"):  # stays open, as it was
            data = answer(outcome.outcome, outcome.message, p.status,
                          error_code=outcome.error_code, **self.common(inv),
                          joining_account_name=outcome.joining_account_name,
                          accept_outcome=dump(outcome), form=new_form(self.secret, inv.token))
            return self.answer(request, "already_joining.html", data, 409, p=p, o=outcome)
        data = answer("blocked", outcome.message, InvitationStatus.BLOCKED,
                      error_code=outcome.error_code, blocking=outcome.blocking,
                      **self.common(inv), accept_outcome=dump(outcome),
                      form=new_form(self.secret, inv.token))
        return self.answer(request, "blocked.html", data, 409, p=p, o=outcome)

    def see_status(self, request: Request, inv: Invitee,
                   outcome: AcceptOutcome | None = None) -> Response:
        url = self.links(inv.token)["status"]
        if self.wants_json(request):
            p = inv.progress
            return JSONResponse(answer(
                "accepted" if outcome else "in_progress",
                outcome.message if outcome else (p.step or "Your data is moving."),
                p.status, quote=p.quote, **self.common(inv), accept_outcome=dump(outcome),
                progress=dump(p)))
        return RedirectResponse(url, status_code=303)

    def declined(self, request: Request, inv: Invitee, progress: Progress) -> Response:
        data = answer("declined", f"You declined the invitation to {progress.account_name}.",
                      progress.status, **self.common(inv), progress=dump(progress))
        return self.answer(request, "declined.html", data, p=progress)

    def status(self, request: Request, inv: Invitee) -> Response:
        p = inv.progress
        data = answer("status", p.step or p.status.value, p.status, quote=p.quote,
                      blocking=p.blocking, **self.common(inv), final=p.status.is_final,
                      progress=dump(p))
        cats = [p.categories[c] for c in Category if c in p.categories]
        return self.answer(request, "status.html", data, p=p, categories=cats)

    def error(self, request: Request, code: int, headers: dict[str, str] | None = None
              ) -> Response:
        kind, title, text = ERRORS[code]
        data = answer(kind, title, error_code=kind, error=kind, detail=text)
        return self.answer(request, "error.html", data, code, headers=headers)

    def gone(self, request: Request, exc: Gone) -> Response:
        title = GONE_TITLES.get(exc.reason, GONE_TITLES["unavailable"])
        p = exc.progress
        status = p.status if p is not None else (
            exc.reason if exc.reason in InvitationStatus._value2member_map_ else None)
        data = answer(GONE_OUTCOMES.get(exc.reason, "ended"), title, status,
                      error_code=exc.reason, error="gone", reason=exc.reason)
        token = request.path_params.get("token", "")
        return self.answer(request, "gone.html", data, 410, p=p, links=self.links(token))

    def install_error_pages(self, app: FastAPI, limiter: BadLinkLimiter) -> None:
        async def bad_link(request: Request, exc: Exception) -> Response:
            # Only links that fail their signature count: valid links are never limited.
            wait = limiter.record_failure(request.client.host if request.client else "")
            if wait:
                return self.error(request, 429, headers={"Retry-After": str(wait)})
            return self.error(request, 400)

        async def gone(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, Gone)
            return self.gone(request, exc)

        async def bad_form(request: Request, exc: Exception) -> Response:
            return self.error(request, 403)

        async def unavailable(request: Request, exc: Exception) -> Response:
            return self.error(request, 503)

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, StarletteHTTPException)
            code = exc.status_code if exc.status_code in ERRORS else 404
            return self.error(request, code)

        app.add_exception_handler(BadLink, bad_link)
        app.add_exception_handler(Gone, gone)
        app.add_exception_handler(BadForm, bad_form)
        app.add_exception_handler(TemporarilyUnavailable, unavailable)
        app.add_exception_handler(StarletteHTTPException, http_error)
