"""`SweepsClient`: starting and steering domain sweeps (workflows/domain.py), and the two
facts of the platform a sweep listens to: a sign-in of a person on the domain (their
consolidation grace) and a change of their email to one off the domain.

The sweep's workflow id is derived from (account, domain), so starting a second sweep of
a domain while one runs is refused; one that ended may be run again (people it already
handled are skipped).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import (
    Client,
    WorkflowContinuedAsNewError,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from config import Settings
from domains.claims import verified_domain
from domains.names import DomainNameError, email_domain, normalise_domain
from domains.sweep_tables import DomainSweepPerson
from invitations import InvitationsClient
from invitations.emails import email_problem
from invitations.errors import (
    DomainNotVerified,
    EmailInUse,
    InvalidDomain,
    InvalidRow,
    InvitationClosed,
    InvitationError,
    InvitationNotFound,
    MalformedEmail,
    StillOnDomain,
    SweepAlreadyRunning,
    SweepNotFound,
    TemporalUnavailable,
    UnknownUser,
    WorkflowRefused,
    refusal,
)
from invitations.validation import check_inviter
from messages import search_attributes as sa
from messages.domain_sweep import (
    CancelSweep,
    PauseSweep,
    PersonState,
    SignIn,
    SignInAnswer,
    SweepInput,
    SweepMode,
    SweepProgress,
    SweepResult,
)
from messages.payloads import FINAL_STATUS_VALUES, UserType
from records.db import write_session
from records.ids import normalise_email
from records.tables import Invitation, User

WORKFLOW = "DomainWorkflow"
QUERY_TIMEOUT = timedelta(seconds=10)


def sweep_id(account_id: int, domain: str) -> str:
    return f"domain-{account_id}-{domain}"


def domain_name(raw: str) -> str:
    try:
        return normalise_domain(raw)
    except DomainNameError as exc:
        raise InvalidDomain(str(exc).removeprefix("domain: ")) from exc


class SweepsClient:
    def __init__(self, temporal: Client, settings: Settings, engine: Engine, *,
                 search_attributes: bool = True) -> None:
        self.temporal, self.settings, self.engine = temporal, settings, engine
        # The time-skipping test server cannot hold custom search attributes.
        self.search_attributes = search_attributes

    # --- starting ----------------------------------------------------------------------
    async def start(self, account_id: int, by: str, domain: str, *,
                    mode: SweepMode | str = SweepMode.NOTIFY, **options: Any) -> str:
        """Check, then start the sweep; returns its id. `options` are SweepInput fields
        (grace_sign_ins, user_type, message, expires_in_days, window, page_size...)."""
        name = domain_name(domain)
        try:
            mode = SweepMode(mode)
        except ValueError as exc:
            raise InvalidRow(f"mode must be one of notify, invite, consolidate, not {mode!r}",
                             field="mode") from exc
        if await asyncio.to_thread(verified_domain, self.engine, account_id, name) is None:
            raise DomainNotVerified(f"{name} is not a verified domain of account {account_id}:"
                                    " claim and verify it first (starter.py domain add/verify)")
        inviter = await asyncio.to_thread(self._in_session, check_inviter, account_id, by)
        options.setdefault("expires_in_days", self.settings.invitation_expiry_days)
        try:
            inp = SweepInput(account_id=account_id, domain=name, started_by=inviter.email,
                             mode=mode, **options)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidRow(f"{first['loc'][0]}: {first['msg']}",
                             field=".".join(map(str, first["loc"]))) from exc
        wid = sweep_id(account_id, name)
        attrs = TypedSearchAttributes([
            SearchAttributePair(sa.ACCOUNT_ID, str(account_id)),
            SearchAttributePair(sa.DOMAIN, name)]) if self.search_attributes else None
        try:
            await self.temporal.start_workflow(
                WORKFLOW, inp, id=wid, task_queue=self.settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL, search_attributes=attrs,
                static_summary=f"Sweep {name} for {inviter.account_name} ({mode.value})",
                static_details=f"**Domain:** {name}\n**Account:** {inviter.account_name} "
                               f"(id {account_id})\n**Mode:** {mode.value}\n"
                               f"**Started by:** {inviter.email}")
        except WorkflowAlreadyStartedError as exc:
            raise SweepAlreadyRunning(f"a sweep of {name} is already running ({wid}): see "
                                      "`domain status`, or cancel it first") from exc
        except RPCError as exc:
            raise TemporalUnavailable(f"Temporal did not start the sweep: {exc.message}") \
                from exc
        return wid

    # --- following and steering --------------------------------------------------------
    async def status(self, account_id: int, domain: str) -> SweepProgress:
        wid = sweep_id(account_id, domain_name(domain))
        handle = self.temporal.get_workflow_handle(wid, result_type=SweepResult)
        try:
            desc = await handle.describe()
            if desc.status != WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING:
                try:
                    return (await handle.result(follow_runs=False)).progress
                except (WorkflowFailureError, WorkflowContinuedAsNewError):
                    pass  # cancelled, failed or terminated: the query reads its last state
            return await handle.query("progress", result_type=SweepProgress,
                                      rpc_timeout=QUERY_TIMEOUT)
        except RPCError as exc:
            raise self._rpc_error(wid, exc) from exc

    async def pause(self, account_id: int, domain: str, by: str | None = None) -> SweepProgress:
        return await self._update(account_id, domain, "pause", PauseSweep(by=by))

    async def resume(self, account_id: int, domain: str, by: str | None = None) -> SweepProgress:
        return await self._update(account_id, domain, "resume", PauseSweep(by=by))

    async def cancel(self, account_id: int, domain: str, *, revoke_started: bool = False,
                     by: str | None = None, reason: str | None = None) -> SweepProgress:
        return await self._update(account_id, domain, "cancel", CancelSweep(
            revoke_started=revoke_started, by=by, reason=reason))

    # --- the platform's sign-in and email change ---------------------------------------------
    async def sign_in(self, email: str) -> SignInAnswer:
        """What the platform's sign-in path calls for a person: counted by the sweep of
        each account consolidating their domain (normally one)."""
        email = normalise_email(email)
        if email_problem(email):
            raise MalformedEmail(f"{email!r} is not a valid email address: "
                                 f"{email_problem(email)}")
        rows = await asyncio.to_thread(self._people, email, (PersonState.INVITED,))
        answer: SignInAnswer | None = None
        for row in rows:
            try:
                got = await self.temporal.get_workflow_handle(row.sweep_id).execute_update(
                    "sign_in", SignIn(email=email), id=f"sign-in-{uuid.uuid4()}",
                    result_type=SignInAnswer)
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    continue  # that sweep has ended: nothing to count
                raise self._rpc_error(row.sweep_id, exc) from exc
            except WorkflowUpdateFailedError as exc:
                raise self._refusal(exc) from exc
            if answer is None or got.in_consolidation:
                answer = got
        return answer or SignInAnswer(email=email, in_consolidation=False,
                                      message=f"Signed in; no consolidation concerns {email}.")

    async def change_email(self, old: str, new: str, *, by: str | None = None
                           ) -> dict[str, Any]:
        """The person moves to an email off the domain: their open domain invitation is
        revoked (reason recorded, join claim released, both told), then the User row and
        the sweep's record change in one transaction. Refused (nothing changed) when the
        new email is malformed, on the same domain, used by another account (1005), or when
        their data is already moving into the organisation."""
        old, new = normalise_email(old), normalise_email(new)
        problem = email_problem(new)
        if problem:
            raise MalformedEmail(f"new email {new!r} is not a valid email address: {problem}",
                                 field="new_email")
        domain = email_domain(old)
        if domain is not None and email_domain(new) == domain:
            raise StillOnDomain(f"{new} is still on {domain}: choose an email off the domain")
        await asyncio.to_thread(self._check_change, old, new)
        rows = await asyncio.to_thread(self._people, old,
                                       (PersonState.INVITED, PersonState.FOUND,
                                        PersonState.NOTIFIED, PersonState.SKIPPED))
        reason = f"changed their email to {new}, off {domain}"
        invitations = InvitationsClient(self.temporal, self.settings, self.engine)
        revoked: list[str] = []
        for row in rows:
            invitation = row.invitation_id
            if invitation is not None and await asyncio.to_thread(self._open, invitation):
                try:
                    await invitations.revoke(invitation, by=by, reason=reason)
                    revoked.append(invitation)
                except (InvitationClosed, InvitationNotFound):
                    pass  # ended meanwhile: nothing to end
        await asyncio.to_thread(change_email_rows, self.engine, old, new, reason)
        for row in rows:
            try:
                await self.temporal.get_workflow_handle(row.sweep_id).signal("refresh")
            except RPCError:
                pass  # the sweep has ended: nothing to re-count
        return {"old_email": old, "new_email": new, "revoked": revoked, "reason": reason}

    # --- plumbing --------------------------------------------------------------------------
    def _check_change(self, old: str, new: str) -> None:
        with Session(self.engine) as session:
            if session.exec(select(User).where(func.lower(User.email) == old)).first() is None:
                raise UnknownUser(f"there is no user with the email {old}", field="email")
            if session.exec(select(User).where(func.lower(User.email) == new)).first():
                raise EmailInUse(f"{new} is already used by another account (error 1005)")

    def _people(self, email: str, states: tuple[PersonState, ...]) -> list[DomainSweepPerson]:
        with Session(self.engine) as session:
            return list(session.exec(select(DomainSweepPerson).where(
                DomainSweepPerson.email == email,
                col(DomainSweepPerson.state).in_([s.value for s in states]))).all())

    def _open(self, invitation: str) -> bool:
        with Session(self.engine) as session:
            row = session.get(Invitation, invitation)
            return row is not None and row.status not in FINAL_STATUS_VALUES

    async def _update(self, account_id: int, domain: str, name: str, arg: Any) -> SweepProgress:
        wid = sweep_id(account_id, domain_name(domain))
        try:
            return await self.temporal.get_workflow_handle(wid).execute_update(  # type: ignore[no-any-return]
                name, arg, result_type=SweepProgress)
        except WorkflowUpdateFailedError as exc:
            raise self._refusal(exc) from exc
        except RPCError as exc:
            raise self._rpc_error(wid, exc) from exc

    @staticmethod
    def _refusal(exc: WorkflowUpdateFailedError) -> InvitationError:
        cause = exc.cause
        if isinstance(cause, ApplicationError):
            error = refusal(cause.type, cause.message)
            error.field = "domain" if error.field == "invitation" else error.field
            return error
        return WorkflowRefused("UpdateFailed", str(cause or exc))

    def _rpc_error(self, wid: str, exc: RPCError) -> InvitationError:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return SweepNotFound(f"no sweep {wid} is running (start one with `domain sweep`)")
        if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            return TemporalUnavailable(f"no answer about {wid} in time: is a worker polling "
                                       f"task queue {self.settings.task_queue!r}?")
        return TemporalUnavailable(f"Temporal refused the request: {exc.message}")

    def _in_session(self, fn: Any, *args: Any) -> Any:
        with Session(self.engine) as session:
            return fn(session, *args)


def change_email_rows(engine: Engine, old: str, new: str, reason: str) -> int:
    """The User row takes the new email, and the person leaves every sweep of the old
    domain (state email_changed, with the reason), in one transaction. Run twice, the
    second run finds the User already changed and changes nothing more."""
    now = datetime.now(UTC)
    with write_session(engine) as session:
        user = session.exec(select(User).where(func.lower(User.email) == old)).first()
        if user is not None:
            user.email = new
            session.add(user)
        changed = session.execute(update(DomainSweepPerson).where(
            col(DomainSweepPerson.email) == old,
            col(DomainSweepPerson.state) != PersonState.EMAIL_CHANGED.value,
        ).values(state=PersonState.EMAIL_CHANGED.value, reason=reason, new_email=new,
                 updated_at=now)).rowcount  # type: ignore[attr-defined]
        session.commit()
        return int(changed)


__all__ = ["SweepsClient", "change_email_rows", "sweep_id", "UserType"]
