"""Every error of the REST API in one shape: RFC 9457 problem details.

    HTTP/1.1 422 Unprocessable Content
    Content-Type: application/problem+json

    {"type": ".../api/v1/problems/malformed_email", "title": "Malformed email",
     "status": 422, "detail": "'bob@' is not a valid email address: ...",
     "code": "malformed_email", "errors": [{"field": "email", "code": "malformed_email",
     "detail": "..."}]}

`code` is the client's (invitations/errors.py), so a script branches on the same values
whether it calls `starter.py --json`, the Python client or the API; `errors` names each
field at fault. `ProblemRoute` (the API router's route class) turns whatever a route or a
dependency raises into this shape, so the console's HTML pages keep their own handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from invitations.errors import InvitationError

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"
PROBLEMS_PATH = "/api/v1/problems"

# The HTTP status of each client error code; a workflow's refusal (WorkflowRefused, its
# code derived from the ApplicationError type) is a 409 conflict with the invitation's state.
STATUS_OF_CODE: dict[str, int] = {
    "unknown_account": 404,
    "not_an_admin": 403,
    "account_not_paid": 409,
    "malformed_email": 422,
    "already_member": 422,
    "seats_exhausted": 409,
    "admin_of_another_account": 422,
    "invalid_row": 422,
    "duplicate_row": 422,
    "csv_format": 422,
    "start_failed": 502,
    "not_found": 404,
    "invitation_closed": 409,
    "temporal_unavailable": 503,
    "invalid_request": 422,
    "unauthorized": 401,
    "invalid_cursor": 400,
    "idempotency_key_reused": 422,
    "idempotency_key_in_progress": 409,
    "invalid_idempotency_key": 400,
    "internal_error": 500,
    # webhooks (webhooks/errors.py, webhooks/routes.py)
    "invalid_webhook_url": 422,
    "unknown_webhook_event": 422,
    "duplicate_webhook": 409,
    "too_many_webhooks": 409,
    "webhook_not_found": 404,
}


class FieldError(BaseModel):
    field: str
    code: str
    detail: str


class ProblemDetails(BaseModel):
    """The body of every error answer (for the OpenAPI document)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldError] = []


class Problem(Exception):
    """Raise anywhere under the API router: answered as problem details."""

    def __init__(self, status: int, code: str, detail: str, *,
                 errors: Sequence[FieldError] = (),
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.errors, self.headers = list(errors), dict(headers or {})

    def body(self) -> dict[str, Any]:
        return problem_body(self.status, self.code, self.detail, self.errors)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers,
                            media_type=MEDIA_TYPE)


def title(code: str) -> str:
    return code.replace("_", " ").capitalize()


def problem_body(status: int, code: str, detail: str,
                 errors: Sequence[FieldError] = ()) -> dict[str, Any]:
    return ProblemDetails(type=f"{PROBLEMS_PATH}/{code}", title=title(code), status=status,
                          detail=detail, code=code, errors=list(errors)).model_dump()


def from_error(exc: InvitationError) -> Problem:
    """The client's typed error as a problem: same code, its field named."""
    status = STATUS_OF_CODE.get(exc.code, 409)
    errors = [FieldError(field=exc.field, code=exc.code, detail=exc.message)] \
        if exc.field else []
    return Problem(status, exc.code, exc.message, errors=errors)


def from_validation(exc: RequestValidationError) -> Problem:
    """FastAPI's request validation: one entry per field, named as the client sent it."""
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "header",
                                                                "path")]
        if err.get("type") == "json_invalid":  # its loc is a character position
            loc = []
        errors.append(FieldError(field=".".join(loc) or "body", code=str(err.get("type")),
                                 detail=str(err.get("msg"))))
    named = ", ".join(e.field for e in errors) or "the body"
    return Problem(422, "invalid_request", f"the request is not valid: see {named}",
                   errors=errors)


def as_problem(exc: Exception) -> Problem:
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, InvitationError):
        return from_error(exc)
    if isinstance(exc, RequestValidationError):
        return from_validation(exc)
    if isinstance(exc, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            exc.status_code, "http_error")
        return Problem(exc.status_code, code, str(exc.detail), headers=exc.headers)
    log.exception("unexpected error in the API", exc_info=exc)
    return Problem(500, "internal_error", "an unexpected error (logged); retrying with the "
                   "same Idempotency-Key is safe")


class ProblemRoute(APIRoute):
    """The API router's route class: any exception of a route or of its dependencies
    (authentication, body validation) is answered as problem details."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 (each kind is mapped in as_problem)
                return as_problem(exc).response()

        return answer


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemDetails, "content": {MEDIA_TYPE: {}}, "description": text}
    for status, text in ((401, "No valid API token"), (404, "Not found in this account"),
                         (409, "Conflicts with the invitation's state"),
                         (422, "Invalid request: `errors` names each field"),
                         (503, "Temporal did not answer"))
}
