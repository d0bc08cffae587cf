"""What a link leads to: the signed token checked, the invitation's state read from its
workflow, the preview read from the platform's records, and the per-form CSRF tokens.

Nothing here tells whether an email has an account: only a validly signed token gets
this far, and an invitee without one gets the same preview with nothing to move.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from messages.payloads import (
    FINAL_STATUS_VALUES,
    Category,
    CategoryCount,
    InvitationResult,
    InvitationStatus,
    Preview,
    Progress,
)
from records.db import as_utc
from records.tables import Invitation, Report
from rules.links import InvalidLink, LinkClaims, verify
from rules.platform import (
    blocking_items,
    category_counts,
    find_user,
    refund_quote,
    reports_left_behind,
    settings_changes,
)

RPC_TIMEOUT = timedelta(seconds=10)
# Still open: nothing has moved, the link leads to the preview or the refund choice.
OPEN_STATUSES = frozenset({InvitationStatus.PENDING, InvitationStatus.BLOCKED,
                           InvitationStatus.AWAITING_REFUND_CHOICE})


class BadLink(Exception):
    """400: the token was altered or is not ours."""


class Gone(Exception):
    """410: the invitation is over (`reason` is its final status), unknown ("unavailable"),
    past its expiry ("expired"), or this link was replaced by a newer one ("superseded")."""

    def __init__(self, reason: str, progress: Progress | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.progress = progress


class BadForm(Exception):
    """403: a POST without a valid form token (CSRF)."""


class TemporarilyUnavailable(Exception):
    """503: the invitation exists but its state cannot be read right now."""


@dataclass
class Invitee:
    token: str
    claims: LinkClaims
    progress: Progress
    handle: WorkflowHandle[object, InvitationResult]

    @property
    def status(self) -> InvitationStatus:
        return self.progress.status


def claims_of(secrets: Sequence[str], token: str) -> LinkClaims:
    try:
        return verify(secrets, token)
    except InvalidLink as exc:
        raise BadLink(str(exc)) from exc


async def load_invitee(client: Client, engine: Engine, secrets: Sequence[str],
                       token: str) -> Invitee:
    claims = claims_of(secrets, token)
    handle = client.get_workflow_handle(claims.invitation_id, result_type=InvitationResult)
    try:
        desc = await handle.describe(rpc_timeout=RPC_TIMEOUT)
        if desc.status == WorkflowExecutionStatus.RUNNING:
            progress = await handle.query("progress", result_type=Progress,
                                          rpc_timeout=RPC_TIMEOUT)
        elif desc.status == WorkflowExecutionStatus.COMPLETED:
            progress = (await handle.result(rpc_timeout=RPC_TIMEOUT)).progress
        else:  # failed, cancelled, terminated, timed out: the record says how it ended
            raise Gone(final_status_from_record(engine, claims.invitation_id))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Gone("unavailable") from exc
        raise TemporarilyUnavailable(str(exc.status)) from exc
    except WorkflowQueryFailedError as exc:
        raise TemporarilyUnavailable("progress query failed") from exc
    if progress.email != claims.email or progress.invitation_id != claims.invitation_id:
        raise BadLink("link does not match the invitation")
    check_live(claims, progress, datetime.now(UTC))
    return Invitee(token=token, claims=claims, progress=progress, handle=handle)


def check_live(claims: LinkClaims, p: Progress, now: datetime) -> None:
    """Only the link of the latest invitation email works, and an open invitation's link
    stops at its expiry even before the workflow's own timer has ended it.

    Tokens carry whole seconds, hence the comparison to the second. A re-invitation (a
    new run, same id) issues at its own start, so links of the earlier run are older.
    Invitations started before `link_issued_at` existed (None) accept any of our links."""
    issued = p.link_issued_at
    if issued is not None and int(claims.issued_at.timestamp()) != int(issued.timestamp()):
        if claims.issued_at < issued:
            raise Gone("superseded", p)
        raise BadLink("link issued after the invitation's latest link")
    if p.status in OPEN_STATUSES and now >= p.expires_at:
        raise Gone("expired", p)


def final_status_from_record(engine: Engine, invitation_id: str) -> str:
    with Session(engine) as session:
        row = session.get(Invitation, invitation_id)
    if row is not None and row.status in FINAL_STATUS_VALUES:
        return row.status
    return "unavailable"


def build_preview(engine: Engine, p: Progress, at: datetime) -> Preview:
    """The shared read rules of rules.platform, as they stand at `at`."""
    with Session(engine) as session:
        user = find_user(session, p.email)
        if user is None:
            counts = [CategoryCount(category=c, items=0) for c in Category]
            changes, reports, quote, blocking = [], 0, None, []
        else:
            counts = category_counts(session, user)
            changes = settings_changes(session, user, p.account_id, p.group)
            reports = len(reports_left_behind(session, user))
            quote = refund_quote(session, user, at)
            blocking = blocking_items(session, user, p.account_id)
    return Preview(
        invitation_id=p.invitation_id, account_name=p.account_name, invited_by=p.invited_by,
        email=p.email, user_type=p.user_type, group=p.group, counts=counts,
        settings_changes=changes, reports_left_behind=reports, quote=quote, blocking=blocking,
    )


REPORT_COLUMNS = ["kind", "title", "held_on", "participants", "minutes"]


def reports_csv(engine: Engine, email: str, org_account_id: int) -> str:
    """The reports that do not move: before acceptance exactly `reports_left_behind`; after
    it, the ones still held by the account the invitee came from."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(REPORT_COLUMNS)
    with Session(engine) as session:
        user = find_user(session, email)
        rows = [] if user is None else session.exec(
            select(Report).where(Report.user_id == user.id, Report.account_id != org_account_id)
            .order_by(col(Report.held_on))
        ).all()
        for r in rows:
            writer.writerow([r.kind, r.title, as_utc(r.held_on).isoformat(), r.participants,
                             r.minutes])
    return out.getvalue()


# --- forms ------------------------------------------------------------------------------
# Each rendered form carries a fresh nonce and csrf = HMAC(secret, token, nonce). The nonce
# also names the workflow update: a double click re-sends the same form, hence the same
# update id, which Temporal runs once; a new form ("try again" after 1009) has a new id.


def _csrf(secret: str, token: str, nonce: str) -> str:
    return hmac.new(secret.encode(), f"form\x00{token}\x00{nonce}".encode(),
                    hashlib.sha256).hexdigest()


def new_form(secret: str, token: str) -> dict[str, str]:
    """A form signed with the current secret."""
    nonce = secrets.token_urlsafe(12)
    return {"nonce": nonce, "csrf": _csrf(secret, token, nonce)}


def form_is_valid(keys: Sequence[str], token: str, nonce: str, csrf: str) -> bool:
    """A form shown before a secret rotation still posts: every verify key is tried."""
    if not nonce or not csrf or len(nonce) > 64:
        return False
    return any([hmac.compare_digest(csrf, _csrf(k, token, nonce)) for k in keys if k])


def update_id(action: str, token: str, nonce: str) -> str:
    return f"{action}:{hashlib.sha256(token.encode()).hexdigest()[:16]}:{nonce}"
