"""Typed errors of the client. Each carries a stable `code` (scripts branch on it, never on
the message), the `field` of the request it is about, and a message for people.

Validation errors are raised before anything is started in Temporal or written to the
database; workflow refusals (`WorkflowRefused`) carry the ApplicationError type the
workflow rejected an update with.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar


class InvitationError(Exception):
    """Base of every error the client raises on purpose."""

    code: str
    field: str | None
    message: str

    def __init__(self, code: str, field: str | None, message: str) -> None:
        super().__init__(message)
        self.code, self.field, self.message = code, field, message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "field": self.field, "message": self.message}


class _Typed(InvitationError):
    CODE: ClassVar[str]
    FIELD: ClassVar[str | None] = None

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(self.CODE, field or self.FIELD, message)


# --- validation: nothing is started or written when one of these is raised -------------
class UnknownAccount(_Typed):
    CODE, FIELD = "unknown_account", "account"


class NotAnAdmin(_Typed):
    """The inviting user is not an owner or admin of the account."""

    CODE, FIELD = "not_an_admin", "by"


class AccountNotPaid(_Typed):
    CODE, FIELD = "account_not_paid", "account"


class MalformedEmail(_Typed):
    CODE, FIELD = "malformed_email", "email"


class AlreadyMember(_Typed):
    CODE, FIELD = "already_member", "email"


class SeatsExhausted(_Typed):
    CODE, FIELD = "seats_exhausted", "user_type"


class AdminOfAnotherAccount(_Typed):
    """The invitee owns or administers another business account."""

    CODE, FIELD = "admin_of_another_account", "email"


class InvalidRow(_Typed):
    """A field of a row that is not one of the allowed values (user type, expiry...)."""

    CODE, FIELD = "invalid_row", None


class DuplicateRow(_Typed):
    CODE, FIELD = "duplicate_row", "email"


class CsvFormatError(_Typed):
    """The file as a whole cannot be read (missing header, unknown column, encoding)."""

    CODE, FIELD = "csv_format", "csv"


VALIDATION_ERRORS = (
    UnknownAccount, NotAnAdmin, AccountNotPaid, MalformedEmail, AlreadyMember, SeatsExhausted,
    AdminOfAnotherAccount, InvalidRow, DuplicateRow,
)


# --- after validation ------------------------------------------------------------------
class StartFailed(_Typed):
    """Temporal refused or failed the start for another reason than "already running"."""

    CODE, FIELD = "start_failed", None


class InvitationNotFound(_Typed):
    CODE, FIELD = "not_found", "invitation"


class InvitationClosed(_Typed):
    """The invitation has ended (accepted and done, declined, expired, revoked...)."""

    CODE, FIELD = "invitation_closed", "invitation"


class TemporalUnavailable(_Typed):
    CODE, FIELD = "temporal_unavailable", None


class WorkflowRefused(InvitationError):
    """The workflow rejected an update with a non-retryable ApplicationError; `type` is
    that error's type (e.g. "NotAwaitingAcceptance"), `code` its snake_case form."""

    def __init__(self, type: str, message: str) -> None:  # noqa: A002 (Temporal's name)
        super().__init__(_snake(type), "invitation", message)
        self.type = type


class AlreadyMovingData(WorkflowRefused):
    """Revoke refused: the invitee accepted and their data is moving (or has moved)."""

    TYPE = "AlreadyMovingData"

    def __init__(self, message: str) -> None:
        super().__init__(self.TYPE, message)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def refusal(type: str | None, message: str) -> WorkflowRefused:  # noqa: A002
    if type == AlreadyMovingData.TYPE:
        return AlreadyMovingData(message)
    return WorkflowRefused(type or "Refused", message)


# --- domain sweeps (issue #14, domains/sweep.py) -----------------------------------------
class InvalidDomain(_Typed):
    CODE, FIELD = "invalid_domain", "domain"


class DomainNotVerified(_Typed):
    """The account has no verified claim on the domain: a sweep would prove nothing."""

    CODE, FIELD = "domain_not_verified", "domain"


class SweepAlreadyRunning(_Typed):
    CODE, FIELD = "sweep_already_running", "domain"


class SweepNotFound(_Typed):
    CODE, FIELD = "sweep_not_found", "domain"


class UnknownUser(_Typed):
    CODE, FIELD = "unknown_user", "email"


class EmailInUse(_Typed):
    """Error 1005 of the reference platform: another account already uses the email."""

    CODE, FIELD = "email_in_use", "new_email"


class StillOnDomain(_Typed):
    CODE, FIELD = "still_on_domain", "new_email"
