"""Typed errors of domain claims and SSO, in the client's shape (invitations.errors): a
stable `code` scripts branch on, the `field` it is about, a message for people. Raised
before anything is written, except where a docstring says otherwise."""

from __future__ import annotations

from typing import ClassVar

from invitations.errors import InvitationError


class DomainError(InvitationError):
    CODE: ClassVar[str]
    FIELD: ClassVar[str | None] = "domain"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(self.CODE, field or self.FIELD, message)


class InvalidDomain(DomainError):
    """Not a host name we can claim (syntax, no TLD...)."""

    CODE = "invalid_domain"


class PublicMailDomain(DomainError):
    """gmail.com and the like: an address there proves nothing about a company."""

    CODE = "public_mail_domain"


class DomainVerifiedElsewhere(DomainError):
    """Another account holds this name verified; one account per verified name."""

    CODE = "domain_verified_by_another_account"


class DomainNotClaimed(DomainError):
    CODE = "domain_not_claimed"


class TxtRecordNotFound(DomainError):
    """The TXT record was not found. The claim's `checked_at` (and a verified claim's
    move to lost) are written: they record the check, which did happen."""

    CODE = "txt_record_not_found"


class DnsUnavailable(DomainError):
    """The resolver did not answer (timeout, SERVFAIL): nothing is concluded or written."""

    CODE, FIELD = "dns_unavailable", None
