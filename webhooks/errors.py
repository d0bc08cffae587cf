"""Typed errors of the webhook commands and routes: a stable `code`, the `field` of the
request they are about, a message for people (the client's InvitationError shape, so
`starter.py --json` and exit codes work unchanged). Raised before anything is written."""

from __future__ import annotations

from invitations.errors import _Typed


class InvalidWebhookUrl(_Typed):
    """Not https (or http to an allowed host), or a loopback/private/link-local address."""

    CODE, FIELD = "invalid_webhook_url", "url"


class UnknownWebhookEvent(_Typed):
    CODE, FIELD = "unknown_webhook_event", "events"


class DuplicateWebhook(_Typed):
    CODE, FIELD = "duplicate_webhook", "url"


class TooManyWebhooks(_Typed):
    CODE, FIELD = "too_many_webhooks", "account"


class WebhookNotFound(_Typed):
    CODE, FIELD = "webhook_not_found", "webhook"
