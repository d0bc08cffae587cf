"""The Python client of the invitation workflows (see `invitations.client`)."""

from invitations.client import InvitationsClient
from invitations.errors import InvitationError
from invitations.models import InviteRequest, InviteResult, Outcome, PendingInvitation, RowResult

__all__ = [
    "InvitationError", "InvitationsClient", "InviteRequest", "InviteResult", "Outcome",
    "PendingInvitation", "RowResult",
]
