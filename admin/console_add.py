"""User Management > Add users: addresses typed in, or a CSV file, through
`InvitationsClient.invite_many` with the signed-in admin as the inviter. One result per
address or line; a field that is not valid is named, and that row is not started."""

from __future__ import annotations

import asyncio
import tempfile
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any

from fastapi import File, Form, Request, Response, UploadFile

from admin.console_kit import (
    Admin,
    account_name,
    check_csrf,
    console_router,
    render,
    state,
)
from admin.principal import Principal
from invitations.csvimport import read_invite_csv
from invitations.errors import CsvFormatError
from invitations.models import InviteRequest, Outcome, RowResult
from messages.payloads import UserType

router = console_router()
MAX_ADDRESSES = 500  # per form; a CSV file takes more
MAX_CSV_BYTES = 5 * 1024 * 1024
SHARED_FIELDS = ("user_type", "group", "message", "expires_in_days")  # the same for every row


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

