"""Identifiers derived from business keys, so that the same request finds the same thing."""

from __future__ import annotations


def normalise_email(email: str) -> str:
    return email.strip().lower()


def invitation_id(account_id: int, email: str) -> str:
    """Workflow id of the invitation of `email` to `account_id`: inviting twice finds it."""
    return f"invitation-{account_id}-{normalise_email(email)}"


def refund_idempotency_key(invitation: str, round: int = 1) -> str:
    """The key of the refund paid when `invitation` is accepted. `round` counts the runs
    of the same invitation that paid a refund: a re-invitation after a failed (hence
    reversed) join pays again under round 2; a retry or a reset of the same run finds
    the unreversed refund of its round and pays nothing."""
    return f"refund:{invitation}" if round == 1 else f"refund:{invitation}:{round}"


def reversal_idempotency_key(invitation: str, round: int = 1) -> str:
    return (f"refund-reversal:{invitation}" if round == 1
            else f"refund-reversal:{invitation}:{round}")
