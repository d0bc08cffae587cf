"""The one shape of every JSON answer of the link handler (README "JSON contract").

Every answer carries `outcome` (what happened, one of OUTCOMES), `status` (the
invitation's status, null when the link is not ours or the invitation is unknown),
`message` (one sentence for a person), and, where they apply, `error_code`, `blocking`
and `quote`. Routes add their own fields next to these (`preview`, `form`, `links`,
`progress`...). The models here are the ones the OpenAPI document (/openapi.json) shows.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from messages.payloads import BlockingItem, InvitationStatus, RefundQuote

Outcome = Literal[
    "preview",  # 200 GET /i/{token}: an open invitation, what joining means
    "refund_choice_needed",  # 200 (422 with error_code): choose where the refund goes
    "accepted",  # 200 POST accept/refund: the join runs
    "in_progress",  # 200 GET /i/{token} once accepted (a browser is sent to /status)
    "status",  # 200 GET /i/{token}/status
    "declined",  # 200 POST decline
    "reports",  # 200 GET /i/{token}/reports.csv as JSON
    "ok",  # 200 GET /healthz
    "blocked",  # 409, error_code 1009: what blocks is in `blocking`
    "already_joining",  # 409, error_code "already_joining_another_account"
    "no_free_seat",  # 409, error_code "no_free_licensed_seat" (the invitation stays open)
    "invalid_link",  # 400: altered, truncated or signed with an unknown key
    "invalid_payloads",  # 400: the codec endpoint could not read or decrypt the payloads
    "unauthorized",  # 401: codec endpoint without its token
    "invalid_form",  # 403: a POST without a valid form token (CSRF)
    "not_found",  # 404
    "method_not_allowed",  # 405
    "superseded",  # 410: a newer invitation email was sent; only its link works
    "expired",  # 410
    "ended",  # 410: revoked, declined, completed or failed_compensated (see `status`)
    "unavailable",  # 410: no such invitation (or no longer)
    "rate_limited",  # 429: too many invalid links from this client; see Retry-After
    "temporarily_unavailable",  # 503: try again in a moment
]
OUTCOMES: tuple[str, ...] = get_args(Outcome)


class LinkAnswer(BaseModel):
    """Every JSON answer: these fields always, the route's own fields besides."""

    model_config = ConfigDict(extra="allow")

    outcome: Outcome
    status: InvitationStatus | None = None
    message: str
    error_code: int | str | None = None  # 1009, "already_joining_another_account", ...
    blocking: list[BlockingItem] = []
    quote: RefundQuote | None = None


def answer(outcome: Outcome, message: str, status: InvitationStatus | str | None = None,
           *, error_code: int | str | None = None, blocking: list[Any] | None = None,
           quote: Any = None, **extra: Any) -> dict[str, Any]:
    """The JSON body: the contract's fields (validated here, so no route can drift from
    it) followed by the route's own."""
    base = LinkAnswer(outcome=outcome, message=message,
                      status=InvitationStatus(status) if status else None,
                      error_code=error_code, blocking=blocking or [], quote=quote)
    return {**extra, **base.model_dump(mode="json")}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI: each listed status code answers a LinkAnswer."""
    return {code: {"model": LinkAnswer} for code in codes}
