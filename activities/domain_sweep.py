"""The domain sweep's activities (workflows/domain.py): check the claim, find the people of
a domain page by page, mail them, record who was invited, count where they stand, count
sign-ins, and revoke what a cancelled sweep started.

Each is safe to run twice: rows are upserted by (account, domain, email), state changes are
conditional UPDATEs, a mail is sent once per message key (the SentEmail row), a sign-in is
counted once per key, and a revoke of an ended invitation changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr

from sqlalchemy import Engine, Table, and_, func, or_, select, update
from sqlmodel import Session
from temporalio import activity

from activities.mail import SENT, SmtpSession, message_id
from config import Settings
from content.present import make_environment
from domains.claims import verified_domain
from domains.sweep_tables import DomainSweepPerson
from invitations.client import InvitationsClient
from invitations.errors import (
    InvitationClosed,
    InvitationError,
    InvitationNotFound,
    WorkflowRefused,
)
from invitations.validation import check_inviter
from messages.domain_sweep import (
    CheckSweep,
    FindPeople,
    Marked,
    NotifyPeople,
    PeoplePage,
    Person,
    PersonState,
    RecordInvited,
    RecordSignIn,
    Revoked,
    RevokeStarted,
    SignInAnswer,
    SweepChecked,
    SweepMode,
    Tallied,
    Tally,
)
from messages.payloads import FINAL_STATUS_VALUES, InvitationStatus
from records.db import insert_for, write_transaction
from records.ids import normalise_email
from records.tables import Account, AccountKind, Invitation, Role, User

log = logging.getLogger(__name__)
PEOPLE: Table = DomainSweepPerson.__table__  # type: ignore[attr-defined]
INV: Table = Invitation.__table__  # type: ignore[attr-defined]
S = InvitationStatus
OPEN_VALUES = (S.PENDING.value, S.BLOCKED.value, S.AWAITING_REFUND_CHOICE.value)
MOVING_VALUES = (S.ACCEPTED.value, S.TRANSFERRING.value, S.NEEDS_ATTENTION.value)
NOTICE_KIND = "domain_notice"
_UTF8_QP = Charset("utf-8")  # readable, 7-bit clean bodies, as activities.mail's
_UTF8_QP.body_encoding = QP


def notice_key(account_id: int, domain: str, email: str) -> str:
    """One notice per person and claimed domain, whatever reruns or new sweeps happen."""
    return f"domain-notice:{account_id}:{domain}:{normalise_email(email)}"


# To an invite or consolidate sweep: new, or told by a notify sweep only.
INVITABLE_VALUES = (PersonState.FOUND.value, PersonState.NOTIFIED.value)


def _todo_state(mode: SweepMode, state: str) -> PersonState:
    """The state a page reports: the workflow handles FOUND people (and skips the rest), so a
    notified person is FOUND to a sweep that invites."""
    if mode != SweepMode.NOTIFY and state in INVITABLE_VALUES:
        return PersonState.FOUND
    return PersonState(state)


def grace(sign_ins: int, allowed: int) -> tuple[int, bool]:
    """(grace_left, must_choose) after `sign_ins` sign-ins with `allowed` (N) of grace: the
    first sign-in tells them and leaves N more, so sign-ins 1..N+1 go through (the N+1th
    with grace_left 0) and from the N+2th on they must join or change their email. With
    N=3: 1 -> (3, False), 2 -> (2, False), 3 -> (1, False), 4 -> (0, False), 5 -> (0, True).
    The tally's `must_choose` counts the same people (sign_ins > N + 1)."""
    return max(0, allowed + 1 - sign_ins), sign_ins > allowed + 1


class DomainSweepActivities:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.templates = make_environment()

    # --- the claim ------------------------------------------------------------------
    @activity.defn(name="check_sweep")
    async def check_sweep(self, req: CheckSweep) -> SweepChecked:
        return await asyncio.to_thread(self._check, req)

    def _check(self, req: CheckSweep) -> SweepChecked:
        if verified_domain(self.engine, req.account_id, req.domain) is None:
            return SweepChecked(ok=False, reason=f"{req.domain} is not a verified domain of "
                                f"account {req.account_id}: verify it first")
        with Session(self.engine) as session:
            try:
                inviter = check_inviter(session, req.account_id, req.started_by)
            except InvitationError as exc:
                return SweepChecked(ok=False, reason=exc.message)
        return SweepChecked(ok=True, account_name=inviter.account_name)

    # --- finding people ----------------------------------------------------------------
    @activity.defn(name="find_domain_people")
    async def find_people(self, req: FindPeople) -> PeoplePage:
        return await asyncio.to_thread(self._find, req)

    def _find(self, req: FindPeople) -> PeoplePage:
        """The next page (keyset on user id) of owners of active individual accounts whose
        email is on the domain, recorded as found (rows already there keep their state). To
        an invite or consolidate sweep, someone an earlier sweep only notified is to do: their
        state comes back FOUND (the row stays notified until `record_invited`)."""
        users: Table = User.__table__  # type: ignore[attr-defined]
        accounts: Table = Account.__table__  # type: ignore[attr-defined]
        with write_transaction(self.engine) as conn:
            rows = conn.execute(
                select(users.c.id, users.c.email, users.c.first_name, users.c.last_name)
                .join(accounts, accounts.c.id == users.c.account_id)
                .where(accounts.c.kind == AccountKind.INDIVIDUAL.value,
                       accounts.c.status == "active", users.c.role == Role.OWNER.value,
                       func.lower(users.c.email).like(f"%@{_escape(req.domain)}", escape="\\"),
                       users.c.id > req.after_user_id)
                .order_by(users.c.id).limit(req.limit)).all()
            if rows:
                now = datetime.now(UTC)
                stmt = insert_for(conn, PEOPLE)
                # Found again by a later sweep: it now belongs to that sweep (and its mode).
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["account_id", "domain", "email"],
                    set_={"sweep_id": stmt.excluded.sweep_id, "mode": stmt.excluded.mode}), [
                    {"account_id": req.account_id, "domain": req.domain,
                     "email": normalise_email(r.email), "user_id": r.id,
                     "sweep_id": req.sweep_id, "mode": req.mode, "state": PersonState.FOUND.value,
                     "sign_ins": 0, "found_at": now, "updated_at": now} for r in rows])
                known = {p.email: p for p in conn.execute(
                    select(PEOPLE.c.email, PEOPLE.c.state, PEOPLE.c.invitation_id).where(
                        PEOPLE.c.account_id == req.account_id, PEOPLE.c.domain == req.domain,
                        PEOPLE.c.email.in_([normalise_email(r.email) for r in rows])))}
        people = [Person(user_id=r.id, email=normalise_email(r.email), first_name=r.first_name,
                         last_name=r.last_name,
                         state=_todo_state(req.mode, known[normalise_email(r.email)].state),
                         invitation_id=known[normalise_email(r.email)].invitation_id)
                  for r in rows]
        return PeoplePage(people=people, next_cursor=rows[-1].id if rows else req.after_user_id,
                          last=len(rows) < req.limit)

    # --- notify ------------------------------------------------------------------------
    @activity.defn(name="notify_domain_people")
    async def notify_people(self, req: NotifyPeople) -> Marked:
        """One notice per person over one SMTP session; a retry skips the keys sent."""
        keys = {p.email: notice_key(req.account_id, req.domain, p.email) for p in req.people}
        sent = await asyncio.to_thread(self._sent_keys, list(keys.values()))
        marked = Marked()
        async with SmtpSession(self.settings) as session:
            for person in req.people:
                key = keys[person.email]
                if key in sent:
                    marked.already += 1
                else:
                    subject, data = self._notice(req, person, key)
                    await session.sendmail(parseaddr(self.settings.mail_from)[1],
                                           [person.email], data)
                    await asyncio.to_thread(self._record_sent, key, person.email, subject)
                    marked.done += 1
                activity.heartbeat(person.email)
        await asyncio.to_thread(self._mark, req.account_id, req.domain,
                                [p.email for p in req.people], PersonState.NOTIFIED, None)
        return marked

    def _notice(self, req: NotifyPeople, person: Person, key: str) -> tuple[str, bytes]:
        ctx = {"name": person.first_name or person.email, "email": person.email,
               "domain": req.domain, "account_name": req.account_name,
               "admin": req.started_by, "message": req.message}
        module = self.templates.get_template(f"email/{NOTICE_KIND}.txt").make_module(ctx)
        subject = " ".join(str(getattr(module, "subject", "")).split())
        html = self.templates.get_template(f"email/{NOTICE_KIND}.html").render(ctx)
        msg = MIMEMultipart("alternative")
        msg["From"] = formataddr(parseaddr(self.settings.mail_from), charset="utf-8")
        msg["To"] = person.email
        msg["Subject"] = subject
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = message_id(key, self.settings.mail_from)
        msg["X-Email-Kind"] = NOTICE_KIND
        msg["Reply-To"] = req.started_by
        msg.attach(MIMEText(str(module).strip() + "\n", "plain", _UTF8_QP))  # type: ignore[arg-type]
        msg.attach(MIMEText(html, "html", _UTF8_QP))  # type: ignore[arg-type]
        return subject, msg.as_bytes()

    def _sent_keys(self, keys: list[str]) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(SENT.c.message_key)
                                    .where(SENT.c.message_key.in_(keys))).scalars())

    def _record_sent(self, key: str, to: str, subject: str) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(insert_for(conn, SENT).on_conflict_do_nothing(
                index_elements=["message_key"]), {
                "message_key": key, "invitation_id": None, "kind": NOTICE_KIND, "to": to,
                "subject": subject, "sent_at": datetime.now(UTC)})

    # --- invite ------------------------------------------------------------------------
    @activity.defn(name="record_domain_invited")
    async def record_invited(self, req: RecordInvited) -> Marked:
        return await asyncio.to_thread(self._record_invited, req)

    def _record_invited(self, req: RecordInvited) -> Marked:
        marked = Marked()
        with write_transaction(self.engine) as conn:
            for p in req.people:
                state = PersonState.INVITED if p.invitation_id else PersonState.SKIPPED
                done = conn.execute(update(PEOPLE).where(
                    PEOPLE.c.account_id == req.account_id, PEOPLE.c.domain == req.domain,
                    PEOPLE.c.email == p.email, PEOPLE.c.state.in_(INVITABLE_VALUES))
                    .values(state=state.value, invitation_id=p.invitation_id, reason=p.reason,
                            sweep_run_id=None if p.already else req.sweep_run_id,
                            updated_at=datetime.now(UTC))).rowcount
                if done:
                    marked.done += 1
                else:
                    marked.already += 1
        return marked

    def _mark(self, account_id: int, domain: str, emails: list[str], state: PersonState,
              reason: str | None) -> int:
        with write_transaction(self.engine) as conn:
            return int(conn.execute(update(PEOPLE).where(
                PEOPLE.c.account_id == account_id, PEOPLE.c.domain == domain,
                PEOPLE.c.email.in_(emails), PEOPLE.c.state == PersonState.FOUND.value)
                .values(state=state.value, reason=reason,
                        updated_at=datetime.now(UTC))).rowcount)

    # --- where they stand ----------------------------------------------------------------
    @activity.defn(name="tally_domain_people")
    async def tally(self, req: Tally) -> Tallied:
        return await asyncio.to_thread(self._tally, req)

    def _tally(self, req: Tally) -> Tallied:
        status = INV.c.status
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    # No row yet: the invitation was started but has not registered.
                    func.count().filter(or_(status.in_(OPEN_VALUES + MOVING_VALUES),
                                            status.is_(None))),
                    func.count().filter(status == S.BLOCKED.value),
                    func.count().filter(status == S.COMPLETED.value),
                    func.count().filter(status == S.FAILED_COMPENSATED.value),
                    func.count().filter(and_(status.in_(FINAL_STATUS_VALUES),
                                             status.not_in([S.COMPLETED.value,
                                                            S.FAILED_COMPENSATED.value]))),
                    func.count().filter(and_(status.in_(OPEN_VALUES),
                                             # grace(): must choose past N + 1
                                             PEOPLE.c.sign_ins > req.grace_sign_ins + 1,
                                             PEOPLE.c.mode == "consolidate")),
                ).select_from(PEOPLE.outerjoin(INV, INV.c.id == PEOPLE.c.invitation_id))
                .where(PEOPLE.c.account_id == req.account_id, PEOPLE.c.domain == req.domain,
                       PEOPLE.c.state == PersonState.INVITED.value)).one()
            changed = conn.execute(select(func.count()).select_from(PEOPLE).where(
                PEOPLE.c.account_id == req.account_id, PEOPLE.c.domain == req.domain,
                PEOPLE.c.state == PersonState.EMAIL_CHANGED.value)).scalar_one()
        return Tallied(open=row[0], blocked=row[1], completed=row[2], failed=row[3],
                       ended=row[4], must_choose=row[5], email_changed=int(changed))

    # --- consolidation grace -------------------------------------------------------------
    @activity.defn(name="record_domain_sign_in")
    async def record_sign_in(self, req: RecordSignIn) -> SignInAnswer:
        return await asyncio.to_thread(self._sign_in, req)

    def _sign_in(self, req: RecordSignIn) -> SignInAnswer:
        email = normalise_email(req.email)
        where = (PEOPLE.c.account_id == req.account_id, PEOPLE.c.domain == req.domain,
                 PEOPLE.c.email == email)
        with write_transaction(self.engine) as conn:
            found = conn.execute(select(PEOPLE.c.state, PEOPLE.c.invitation_id, INV.c.status)
                                 .select_from(PEOPLE.outerjoin(
                                     INV, INV.c.id == PEOPLE.c.invitation_id))
                                 .where(*where)).first()
            if (not req.consolidating or found is None
                    or found.state != PersonState.INVITED.value
                    or found.status not in OPEN_VALUES):
                why = ("this sweep does not consolidate" if not req.consolidating
                       else "no open consolidation invitation")
                return SignInAnswer(email=email, in_consolidation=False,
                                    invitation_id=found.invitation_id if found else None,
                                    message=f"Signed in; {why} for {email}.")
            # Counted once per key: a retried attempt finds its key and adds nothing.
            conn.execute(update(PEOPLE).where(*where, or_(
                PEOPLE.c.last_sign_in_key.is_(None), PEOPLE.c.last_sign_in_key != req.key))
                .values(sign_ins=PEOPLE.c.sign_ins + 1, last_sign_in_key=req.key,
                        updated_at=datetime.now(UTC)))
            sign_ins = int(conn.execute(select(PEOPLE.c.sign_ins).where(*where)).scalar_one())
        left, must = grace(sign_ins, req.grace_sign_ins)
        message = (f"{req.domain} is managed by an organisation account: join it, or change "
                   f"your email to one off {req.domain}. "
                   + ("You must choose now before you can go on."
                      if must else f"You may sign in {left} more time(s) before you must choose."))
        return SignInAnswer(email=email, in_consolidation=True, sign_ins=sign_ins,
                            grace_left=left, must_choose=must,
                            invitation_id=found.invitation_id, message=message)

    # --- cancel with --revoke-started --------------------------------------------------------
    @activity.defn(name="revoke_domain_invitations")
    async def revoke_started(self, req: RevokeStarted) -> Revoked:
        """Revoke every open invitation this sweep started (its first run id: not those of
        earlier sweeps of the domain, which their own cancels left open), through the
        invitation's own `revoke` update (its reason recorded, claim released, both told).
        One that moves data already, or has ended, is left as it is."""
        ids = await asyncio.to_thread(self._open_invitations, req)
        # The client's revoke: the update, then the row shows the end at once (as
        # `starter.py revoke` does), so that the count after this sees it.
        invitations = InvitationsClient(activity.client(), self.settings, self.engine)
        done = Revoked()
        for i, invitation in enumerate(ids):
            try:
                await invitations.revoke(invitation, by=req.by, reason=req.reason)
                done.revoked += 1
            except (WorkflowRefused, InvitationClosed, InvitationNotFound) as exc:
                log.info("left %s as it is: %s", invitation, exc)  # moving data, or ended
                done.left += 1
            activity.heartbeat(i)
        return done

    def _open_invitations(self, req: RevokeStarted) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(PEOPLE.c.invitation_id)
                .select_from(PEOPLE.join(INV, INV.c.id == PEOPLE.c.invitation_id))
                .where(PEOPLE.c.account_id == req.account_id, PEOPLE.c.domain == req.domain,
                       PEOPLE.c.state == PersonState.INVITED.value,
                       # Started by this sweep: not by an earlier sweep of the domain
                       # (same workflow id), nor by another path (already invited: None).
                       PEOPLE.c.sweep_run_id == req.sweep_run_id,
                       INV.c.status.in_(OPEN_VALUES))
                .order_by(PEOPLE.c.id)).scalars())


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

