"""`starter.py domain add|verify|list|remove`: claim a domain and prove it (issue #14).

    python starter.py domain add --account 1 --by admin@acme.test acme.com
    python starter.py domain verify --account 1 acme.com
    python starter.py domain list --account 1
    python starter.py domain remove --account 1 --by admin@acme.test acme.com

These need the database and DNS only, no Temporal. `add` prints the TXT record to publish;
`verify` exits 0 once it is verified, 1 with error code `txt_record_not_found` while the
record is not visible (the same exit codes and `--json` shapes as every other command).
Other `domain` subcommands (the sweep's) register on the group `add_domain_parser` returns.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, Protocol

from rich.table import Table

from config import Settings
from domains.tables import ClaimedDomain
from domains.verification import DomainClaims, txt_record
from records.db import engine_from, init_db

# The subcommands this module runs (without Temporal).
LOCAL_COMMANDS = ("add", "verify", "list", "remove")


class Out(Protocol):
    def show(self, data: Any, *renderables: Any) -> None: ...


def add_domain_parser(sub: Any, common: argparse.ArgumentParser) -> Any:
    """The `domain` group on starter.py's subparsers; returns its own subparsers."""
    group = sub.add_parser("domain", parents=[common],
                           help="claim and verify email domains (add, verify, list, remove)")
    commands = group.add_subparsers(dest="domain_command", required=True, metavar="SUBCOMMAND")
    for name, text, by in (("add", "claim a domain: prints the TXT record to publish", True),
                           ("verify", "look the TXT record up now", False),
                           ("remove", "drop the account's claim on a domain", True)):
        cmd = commands.add_parser(name, parents=[common], help=text)
        cmd.add_argument("--account", type=int, required=True, help="the paid account's id")
        if by:
            cmd.add_argument("--by", required=True, metavar="ADMIN_EMAIL", help="owner/admin")
        cmd.add_argument("domain", metavar="DOMAIN", help="e.g. acme.com")
    listing = commands.add_parser("list", parents=[common], help="the account's domains")
    listing.add_argument("--account", type=int, required=True)
    return commands


def claim_json(claim: ClaimedDomain) -> dict[str, Any]:
    return {"domain": claim.name, "account_id": claim.account_id, "status": claim.status,
            "txt_record": txt_record(claim), "created_by": claim.created_by,
            "created_at": claim.created_at, "verified_at": claim.verified_at,
            "checked_at": claim.checked_at, "lost_at": claim.lost_at}


async def run_domain_command(args: argparse.Namespace, settings: Settings, out: Out) -> int:
    engine = engine_from(settings)
    try:
        await asyncio.to_thread(init_db, engine)
        claims = DomainClaims(settings, engine)
        command = args.domain_command
        if command == "list":
            rows = await asyncio.to_thread(claims.list, args.account)
            table = Table("domain", "status", "TXT value", "verified", "checked")
            for c in rows:
                table.add_row(c.name, c.status, c.token, str(c.verified_at or "-"),
                              str(c.checked_at or "-"))
            out.show({"account_id": args.account, "domains": [claim_json(c) for c in rows]},
                     table if rows else f"Account {args.account} has claimed no domain.")
            return 0
        if command == "add":
            claim = await asyncio.to_thread(claims.add, args.account, args.by, args.domain)
            record = txt_record(claim)
            out.show(claim_json(claim),
                     f"Publish this DNS record, then run `starter.py domain verify --account "
                     f"{args.account} {claim.name}`:\n  name:  {record['name']}\n"
                     f"  type:  TXT\n  value: {record['value']}\n(status: {claim.status})")
            return 0
        if command == "verify":
            claim = await asyncio.to_thread(claims.verify, args.account, args.domain)
            out.show(claim_json(claim), f"{claim.name} is verified for account "
                                        f"{claim.account_id}.")
            return 0
        if command == "remove":
            claim = await asyncio.to_thread(claims.remove, args.account, args.by, args.domain)
            out.show({**claim_json(claim), "removed": True},
                     f"Removed account {args.account}'s claim on {claim.name}.")
            return 0
        raise AssertionError(f"not a local domain command: {command}")
    finally:
        engine.dispose()
