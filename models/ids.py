"""Identifiers derived from business keys, so that the same request finds the same thing."""

from __future__ import annotations


def normalise_email(email: str) -> str:
    return email.strip().lower()


def invitation_id(account_id: int, email: str) -> str:
    """Workflow id of the invitation of `email` to `account_id`: inviting twice finds it."""
    return f"invitation-{account_id}-{normalise_email(email)}"


def refund_idempotency_key(invitation: str) -> str:
    return f"refund:{invitation}"


def reversal_idempotency_key(invitation: str) -> str:
    return f"refund-reversal:{invitation}"
