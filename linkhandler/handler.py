"""The per-process dependencies every route gets (settings, database, the one Temporal
client), and the steps routes share: reading a posted form, choosing the page the link
shows in the invitation's current state, and running a workflow update for a form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from config import Settings, link_verify_secrets
from linkhandler.invitee import (
    BadForm,
    Gone,
    Invitee,
    TemporarilyUnavailable,
    build_preview,
    claims_of,
    form_is_valid,
    load_invitee,
    update_id,
)
from linkhandler.pages import Pages
from messages.payloads import AcceptOutcome, AcceptRequest, InvitationResult, InvitationStatus

# Rejections that only mean the invitation is past the step the form was for.
STATE_MOVED_ON = frozenset({"NotAwaitingAcceptance", "NotAwaitingRefundChoice",
                            # the accept update's own look at the link (workflows/invitation)
                            "LinkMismatch", "LinkSuperseded", "LinkExpired"})
# An update waits for the worker; past this the page says "try again in a moment".
UPDATE_TIMEOUT = timedelta(seconds=30)


class Handler:
    """Per-process dependencies of every route: settings, database, Temporal client."""

    def __init__(self, settings: Settings, engine: Engine, client: Client, pages: Pages) -> None:
        self.settings, self.engine, self.client, self.pages = settings, engine, client, pages
        self.secrets = link_verify_secrets(settings)  # the current one first

    async def load(self, token: str) -> Invitee:
        return await load_invitee(self.client, self.engine, self.secrets, token)

    async def form(self, request: Request, token: str) -> dict[str, str]:
        claims_of(self.secrets, token)  # a tampered link is a 400 before anything else
        if "application/json" in request.headers.get("content-type", ""):
            try:
                data: Any = await request.json()
            except ValueError:
                data = {}
            data = data if isinstance(data, dict) else {}
        else:
            data = dict(await request.form())
        fields = {k: str(v) for k, v in data.items() if isinstance(v, str | int)}
        if not form_is_valid(self.secrets, token, fields.get("nonce", ""),
                             fields.get("csrf", "")):
            raise BadForm()
        return fields

    async def landing(self, request: Request, inv: Invitee) -> Response:
        """What the link shows for the invitation's current state."""
        p = inv.progress
        if p.status.is_final:
            raise Gone(p.status.value, p)
        if p.status == InvitationStatus.AWAITING_REFUND_CHOICE:
            return self.pages.refund(request, inv, p.quote)
        if not p.status.awaiting_acceptance:  # accepted, transferring
            return self.pages.see_status(request, inv)
        preview = await run_in_threadpool(build_preview, self.engine, p, datetime.now(UTC))
        return self.pages.preview(request, inv, preview)

    async def accept_at_once(self, token: str, req: AcceptRequest,
                             nonce: str) -> tuple[Invitee, AcceptOutcome] | None:
        """The accept update straight away, one round trip: the workflow's validator checks
        the link (email, latest, not expired) and the state, and the answer carries the
        invitation as the accept left it. None when the link or the state says no (or the
        answer came from an invitation of the first version, without its progress): the
        caller then looks at the invitation and shows what the link shows now."""
        claims = claims_of(self.secrets, token)
        handle = self.client.get_workflow_handle(claims.invitation_id,
                                                 result_type=InvitationResult)
        req = req.model_copy(update={"link_issued_at": claims.issued_at,
                                     "link_email": claims.email})
        outcome = await self._update(handle, "accept", req, update_id("accept", token, nonce),
                                     AcceptOutcome)
        if outcome is None or outcome.progress is None:
            return None
        return Invitee(token=token, claims=claims, progress=outcome.progress,
                       handle=handle), outcome

    async def run_update(self, inv: Invitee, name: str, arg: Any, nonce: str,
                         result_type: type) -> Any:
        return await self._update(inv.handle, name, arg, update_id(name, inv.token, nonce),
                                  result_type)

    async def _update(self, handle: WorkflowHandle[Any, Any], name: str, arg: Any,
                      update: str, result_type: type) -> Any:
        try:
            return await handle.execute_update(
                name, arg, id=update, result_type=result_type, rpc_timeout=UPDATE_TIMEOUT,
            )
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type in STATE_MOVED_ON:
                return None  # e.g. declined in another tab: show what the link shows now
            raise TemporarilyUnavailable("update failed") from exc  # e.g. the check failed
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:  # no worker answered in time
            raise TemporarilyUnavailable("update timed out") from exc
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:  # ended meanwhile
                return None
            raise TemporarilyUnavailable(str(exc.status)) from exc


def get_handler(request: Request) -> Handler:
    handler: Handler = request.app.state.handler
    return handler


HandlerDep = Annotated[Handler, Depends(get_handler)]
