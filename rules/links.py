"""Signed acceptance links: HMAC-SHA256 over (invitation id, email, issue time).

A token is `base64url(payload).base64url(mac)` where payload is the JSON
`{"i": invitation_id, "e": email, "t": issued_at_unix}`. Verification is constant-time;
it proves the link was issued by us for that invitation and email, nothing more. Whether
it is still the live link (its issue time is the invitation's `link_issued_at`) and the
invitation still open is the link handler's to check against the workflow (410 pages).

Secrets rotate: the first secret signs, every listed secret verifies (README "Secrets").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import Settings


class InvalidLink(ValueError):
    """The token was altered, truncated or signed with another secret."""


@dataclass(frozen=True)
class LinkClaims:
    invitation_id: str
    email: str
    issued_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()


def sign(secret: str, invitation_id: str, email: str, issued_at: datetime) -> str:
    payload = json.dumps(
        {"i": invitation_id, "e": email, "t": int(issued_at.timestamp())},
        separators=(",", ":"), sort_keys=True,
    ).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def verify(secrets: str | Sequence[str], token: str) -> LinkClaims:
    """The claims of a token signed with any of `secrets` (the current one, then previous)."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    try:
        body, mac = token.split(".")
        payload = _unb64(body)
        given = _unb64(mac)
    except (ValueError, TypeError) as exc:
        raise InvalidLink("malformed link") from exc
    # Every key is tried (no early exit): the time taken does not tell which one matched.
    matches = [hmac.compare_digest(given, _mac(key, payload)) for key in keys if key]
    if not any(matches):
        raise InvalidLink("signature does not match")
    try:
        data = json.loads(payload)
        return LinkClaims(
            invitation_id=str(data["i"]), email=str(data["e"]),
            issued_at=datetime.fromtimestamp(int(data["t"]), UTC),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidLink("malformed link payload") from exc


def acceptance_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/i/{token}"


def signed_acceptance_url(
    settings: Settings, invitation_id: str, email: str, issued_at: datetime,
) -> str:
    """The link an invitee gets: signed with settings.link_secret, under public_base_url."""
    token = sign(settings.link_secret.get_secret_value(), invitation_id, email, issued_at)
    return acceptance_url(settings.public_base_url, token)
