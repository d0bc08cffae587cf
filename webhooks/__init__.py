"""Webhooks (issue #15): endpoints registered per account receive every lifecycle event of
the account's invitations as JSON signed per the Standard Webhooks spec.

- `tables`: endpoints and the outbox (one delivery row per event and endpoint).
- `outbox`: written in the transaction that records the audit event (`records.changes`).
- `workflow` + `delivery`: one Temporal workflow per endpoint drains its outbox, in order
  per invitation, through an activity that retries with capped backoff for a day.
- `endpoints` (the service), `cli` (`starter.py webhook ...`), `routes` (`/api/v1/webhooks`).
"""
