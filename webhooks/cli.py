"""`starter.py webhook add|list|remove`: an account's webhook endpoints.

    python starter.py webhook add --account 1 --by owner@acme.test URL [--events accepted,completed]
    python starter.py webhook list --account 1
    python starter.py webhook remove --account 1 --by owner@acme.test ID

`add` prints the signing secret once (whsec_...) and starts the endpoint's delivery
workflow (a worker must run for deliveries to go out)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from rich.table import Table
from sqlalchemy import Engine

from config import Settings
from invitations.render import when
from webhooks import endpoints
from webhooks.events import EVENT_TYPES
from webhooks.starting import ensure_delivery_or_later, wake


def add_webhook_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    hook = sub.add_parser("webhook", parents=[common], help="webhook endpoints of an account")
    cmds = hook.add_subparsers(dest="webhook_command", required=True, metavar="SUBCOMMAND")
    add = cmds.add_parser("add", parents=[common], help="register an endpoint (prints its secret)")
    add.add_argument("--account", type=int, required=True)
    add.add_argument("--by", required=True, metavar="ADMIN_EMAIL", help="an owner/admin")
    add.add_argument("url", metavar="URL")
    add.add_argument("--events", nargs="+", metavar="EVENT",
                     help=f"only these (comma or space separated; default all): "
                          f"{', '.join(EVENT_TYPES)}")
    lst = cmds.add_parser("list", parents=[common], help="endpoints and their delivery state")
    lst.add_argument("--account", type=int, required=True)
    rm = cmds.add_parser("remove", parents=[common], help="remove an endpoint")
    rm.add_argument("--account", type=int, required=True)
    rm.add_argument("--by", required=True, metavar="ADMIN_EMAIL",
                    help="an owner or admin of the account")
    rm.add_argument("id", type=int, metavar="ID")


def endpoints_table(account_id: int, rows: list[endpoints.EndpointView]) -> Table:
    table = Table(title=f"Webhook endpoints of account {account_id}")
    for column in ("id", "url", "events", "last status", "last error", "failures in a row",
                   "pending", "delivered", "failed", "last success"):
        table.add_column(column)
    for r in rows:
        events = "all" if len(r.events) == len(EVENT_TYPES) else ", ".join(r.events)
        table.add_row(str(r.id), r.url, events, str(r.last_status or "-"), r.last_error or "-",
                      str(r.consecutive_failures), str(r.pending), str(r.delivered),
                      str(r.failed), when(r.last_success_at) if r.last_success_at else "-")
    return table


async def run_webhook_command(args: argparse.Namespace, settings: Settings, engine: Engine,
                              temporal: Any, out: Any) -> int:
    """`temporal` is a connected client (add, remove) or None (list)."""
    if args.webhook_command == "add":
        events = [e for chunk in args.events or [] for e in chunk.split(",")]
        new = await asyncio.to_thread(endpoints.add_endpoint, engine, settings,
                                      account_id=args.account, by=args.by, url=args.url,
                                      events=events)
        await ensure_delivery_or_later(temporal, settings, new.id)
        out.show(new.model_dump(mode="json"),
                 f"Registered webhook endpoint {new.id}: {new.url}",
                 f"Signing secret (shown once, keep it): {new.secret}")
        return 0
    if args.webhook_command == "list":
        rows = await asyncio.to_thread(endpoints.list_endpoints, engine, args.account)
        out.show({"account_id": args.account, "webhooks": [r.model_dump(mode="json")
                                                           for r in rows]},
                 endpoints_table(args.account, rows) if rows
                 else f"No webhook endpoints for account {args.account}.")
        return 0
    await asyncio.to_thread(endpoints.check_admin, engine, args.account, args.by)
    gone = await asyncio.to_thread(endpoints.remove_endpoint, engine, args.account, args.id)
    await wake(temporal, settings, gone.id)  # it sees the endpoint gone and ends
    out.show(gone.model_dump(mode="json"), f"Removed webhook endpoint {gone.id}: {gone.url}")
    return 0
