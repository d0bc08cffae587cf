"""The command line of the invitation workflows, on top of `invitations.InvitationsClient`.

    python starter.py invite --account 1 --by admin@acme.test alice@example.com [...]
    python starter.py invite --account 1 --by admin@acme.test --csv people.csv
    python starter.py pending --account 1 [--all]
    python starter.py status|link INVITATION
    python starter.py resend INVITATION [--expires-in-days N]
    python starter.py revoke INVITATION [--by EMAIL] [--reason TEXT]
    python starter.py seed-demo
    python starter.py domain add|verify|list|remove ...   (domains/cli.py)
    python starter.py webhook add|list|remove ...   (webhooks/cli.py)
    python starter.py token create --account 1 --by owner@acme.test --name billing-sync
    python starter.py token list --account 1 [--all]
    python starter.py token revoke --account 1 --by owner@acme.test ID|PREFIX
    python starter.py domain sweep --account 1 --by admin@acme.test acme.com --mode invite
    python starter.py domain status|pause|resume|cancel --account 1 acme.com
    python starter.py domain sign-in EMAIL | domain change-email OLD NEW   (domains/sweep_cli.py)

Every command takes --json (one JSON document on stdout; errors as {"error": {...}}).
Exit codes: 0 done; 1 an error, nothing done (the message says why); 2 a usage error;
3 some rows failed and the others went ahead (the per-row results say which).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from config import Settings, connect_temporal, get_settings
from content.labels import status_label
from domains.cli import LOCAL_COMMANDS as LOCAL_DOMAIN_COMMANDS
from domains.cli import add_domain_parser, run_domain_command
from invitations import InvitationsClient
from invitations.csvimport import read_invite_csv
from invitations.errors import InvitationError, TemporalUnavailable
from invitations.models import InviteRequest, Outcome, RowResult
from invitations.render import pending_table, progress_tables, results_table, when
from records.db import engine_from, init_db
from webhooks.cli import add_webhook_parser, run_webhook_command

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out = Console(highlight=False)
        if not self.out.is_terminal:  # piped: room for long emails rather than 80 columns
            self.out.width = 200
        self.err = Console(stderr=True, highlight=False)

    def json(self, data: Any) -> None:
        print(json.dumps(data, indent=2, default=str))

    def show(self, data: Any, *renderables: Any) -> None:
        if self.as_json:
            self.json(data)
        else:
            for r in renderables:
                self.out.print(r)

    def error(self, exc: InvitationError) -> int:
        if self.as_json:
            self.json({"error": exc.to_dict()})
        self.err.print(f"error ({exc.code}): {exc.message}", markup=False, soft_wrap=True)
        return EXIT_ERROR


def dump(model: Any) -> Any:
    return model.model_dump(mode="json")


async def cmd_invite(client: InvitationsClient, args: argparse.Namespace, out: Output) -> int:
    await client.check_inviter(args.account, args.by)  # one clear error before any row
    common = {"account_id": args.account, "invited_by": args.by, "message": args.message,
              "group": args.group, "expires_in_days": args.expires_in_days}
    if args.csv:
        parsed = read_invite_csv(args.csv, user_type=args.user_type, **common)
        requests, results = parsed.requests, list(parsed.errors)
    else:
        requests = [InviteRequest(email=e, user_type=args.user_type, **common) for e in args.emails]
        results = []
    with ProgressBar(out, len(requests)) as advance:
        results += await client.invite_many(requests, concurrency=args.concurrency,
                                            progress=advance)
    results.sort(key=lambda r: r.line or 0)
    counts = {"started": sum(r.outcome == Outcome.STARTED for r in results),
              "already_pending": sum(r.outcome == Outcome.ALREADY_PENDING for r in results),
              "failed": sum(r.outcome == Outcome.ERROR for r in results)}
    out.show({"results": [dump(r) for r in results], "summary": counts}, results_table(results),
             f"{counts['started']} started, {counts['already_pending']} already pending, "
             f"{counts['failed']} failed")
    if not counts["failed"]:
        return EXIT_OK
    return EXIT_PARTIAL if counts["failed"] < len(results) else EXIT_ERROR


class ProgressBar:
    """A progress bar on stderr, only when it is a terminal."""

    def __init__(self, out: Output, total: int) -> None:
        self.enabled = out.err.is_terminal and total > 1
        self.bar = Progress(TextColumn("Inviting"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=out.err, disable=not self.enabled)
        self.task = self.bar.add_task("invite", total=total)

    def __enter__(self) -> Callable[[RowResult, int, int], None]:
        self.bar.start()
        return lambda _result, done, _total: self.bar.update(self.task, completed=done)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


async def cmd_pending(client: InvitationsClient, args: argparse.Namespace, out: Output) -> int:
    rows = await client.pending(args.account, include_all=args.all)
    table = pending_table(args.account, rows)
    out.show({"account_id": args.account, "invitations": [dump(r) for r in rows]},
             table if rows else f"No pending invitations for account {args.account}.")
    return EXIT_OK


async def cmd_status(client: InvitationsClient, args: argparse.Namespace, out: Output) -> int:
    progress = await client.status(args.invitation)
    out.show(dump(progress), *progress_tables(progress))
    return EXIT_OK


async def cmd_resend(client: InvitationsClient, args: argparse.Namespace, out: Output) -> int:
    p = await client.resend(args.invitation, expires_in_days=args.expires_in_days)
    out.show(dump(p), f"Sent a new invitation email to {p.email}; it now expires "
                      f"{when(p.expires_at)}.")
    return EXIT_OK


async def cmd_revoke(client: InvitationsClient, args: argparse.Namespace, out: Output) -> int:
    p = await client.revoke(args.invitation, by=args.by, reason=args.reason)
    out.show(dump(p), f"Revoked the invitation of {p.email} "
                      f"({status_label(p.status)}); its link no "
                      "longer works.")
    return EXIT_OK


async def cmd_link(client: InvitationsClient, args: argparse.Namespace, out: Output) -> int:
    link = await client.link(args.invitation)
    out.show(dump(link), link.url)
    return EXIT_OK


def cmd_seed_demo(settings: Settings, out: Output) -> int:
    from demo.seed import seed_demo

    engine = engine_from(settings)
    init_db(engine)
    seeded = seed_demo(engine, settings.recordings_dir)
    verb = "Created" if seeded["created"] else "Found"
    lines = [f"{verb} the demo account Acme: account id {seeded['account_id']} "
             "(owner@acme.test, admin@acme.test)", "Demo invitees:"]
    lines += [f"  {kind:<15} {email}" for kind, email in seeded["invitees"].items()]
    out.show(seeded, "\n".join(lines))
    return EXIT_OK


def cmd_token(settings: Settings, args: argparse.Namespace, out: Output) -> int:
    """API tokens (admin/tokens.py): the database only, no Temporal needed."""
    from admin import tokens

    engine = engine_from(settings)
    init_db(engine)
    try:
        if args.token_command == "create":
            made = tokens.create_token(engine, args.account, args.by, args.name)
            out.show(dump(made), f"Created API token {made.prefix} ({made.name}) for account "
                     f"{made.account_id}, acting as {made.created_by}. It is shown only "
                     f"once; keep it secret:\n{made.token}")
        elif args.token_command == "list":
            rows = tokens.list_tokens(engine, args.account, include_revoked=args.all)
            out.show({"account_id": args.account, "tokens": [dump(r) for r in rows]},
                     token_table(args.account, rows) if rows
                     else f"No API tokens for account {args.account}.")
        else:
            info = tokens.revoke_token(engine, args.account, args.by, args.token)
            out.show(dump(info), f"API token {info.prefix} ({info.name}) is revoked since "
                     f"{when(info.revoked_at)}; it no longer authenticates.")
        return EXIT_OK
    finally:
        engine.dispose()


def token_table(account_id: int, rows: list[Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"API tokens of account {account_id}")
    for column in ("id", "prefix", "name", "created by", "created", "last used", "revoked"):
        table.add_column(column)
    for r in rows:
        table.add_row(str(r.id), r.prefix, r.name, r.created_by, when(r.created_at),
                      when(r.last_used_at) if r.last_used_at else "never",
                      when(r.revoked_at) if r.revoked_at else "")
    return table


COMMANDS = {"invite": cmd_invite, "pending": cmd_pending, "status": cmd_status,
            "resend": cmd_resend, "revoke": cmd_revoke, "link": cmd_link}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="starter.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: `--json` works before or after the command without one overwriting the other.
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON for scripts")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def days(text: str) -> int:
        value = int(text)
        if not 1 <= value <= 365:
            raise argparse.ArgumentTypeError("must be 1 to 365 days")
        return value

    inv = sub.add_parser("invite", parents=[common], help="invite people (emails or --csv)")
    inv.add_argument("--account", type=int, required=True, help="the paid account's id")
    inv.add_argument("--by", required=True, metavar="ADMIN_EMAIL", help="inviting owner/admin")
    inv.add_argument("emails", nargs="*", metavar="EMAIL")
    inv.add_argument("--csv", type=Path, metavar="FILE",
                     help="header row: email,first_name,last_name,user_type")
    inv.add_argument("--user-type", choices=("basic", "licensed"), default="basic")
    inv.add_argument("--message", help="a personal message in the invitation email")
    inv.add_argument("--group", help="the group the invitee joins")
    inv.add_argument("--expires-in-days", type=days, metavar="N")
    inv.add_argument("--concurrency", type=int, default=32, help="starts in flight (32)")

    pend = sub.add_parser("pending", parents=[common], help="the Pending list of an account")
    pend.add_argument("--account", type=int, required=True)
    pend.add_argument("--all", action="store_true", help="ended invitations too")

    for name, text in (("status", "the full progress of an invitation"),
                       ("link", "print a freshly signed acceptance link")):
        sub.add_parser(name, parents=[common], help=text).add_argument("invitation")
    resend = sub.add_parser("resend", parents=[common], help="email the invitation again")
    resend.add_argument("invitation")
    resend.add_argument("--expires-in-days", type=days, metavar="N",
                        help="new expiry, in days from now (default 30)")
    revoke = sub.add_parser("revoke", parents=[common], help="end an invitation")
    revoke.add_argument("invitation")
    revoke.add_argument("--by", metavar="ADMIN_EMAIL")
    revoke.add_argument("--reason")
    sub.add_parser("seed-demo", parents=[common], help="create the demo data (idempotent)")
    add_webhook_parser(sub, common)

    token = sub.add_parser("token", parents=[common], help="API tokens of the REST API")
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    tcreate = tsub.add_parser("create", parents=[common], help="create one (printed once)")
    tcreate.add_argument("--account", type=int, required=True)
    tcreate.add_argument("--by", required=True, metavar="ADMIN_EMAIL",
                         help="owner/admin the token acts as (the inviter it records)")
    tcreate.add_argument("--name", required=True, help="what uses it, e.g. billing-sync")
    tlist = tsub.add_parser("list", parents=[common], help="the account's tokens, no secrets")
    tlist.add_argument("--account", type=int, required=True)
    tlist.add_argument("--all", action="store_true", help="revoked tokens too")
    trevoke = tsub.add_parser("revoke", parents=[common], help="revoke one for good")
    trevoke.add_argument("--account", type=int, required=True)
    trevoke.add_argument("--by", required=True, metavar="ADMIN_EMAIL")
    trevoke.add_argument("token", metavar="ID|PREFIX")
    from domains import sweep_cli  # issue #14: the sweep's subcommands in the same group

    sweep_cli.add_commands(add_domain_parser(sub, common), common)
    return parser


async def run(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    if args.command == "seed-demo":
        return cmd_seed_demo(settings, out)
    if args.command == "domain" and args.domain_command in LOCAL_DOMAIN_COMMANDS:
        return await run_domain_command(args, settings, out)
    if args.command == "token":
        return cmd_token(settings, args, out)
    if args.command == "domain" and args.domain_command == "seed-demo":  # issue #14
        from domains import sweep_cli

        return sweep_cli.seed_demo(settings, out)
    engine = engine_from(settings)
    init_db(engine)
    try:
        if args.command == "webhook" and args.webhook_command == "list":  # the database only
            return await run_webhook_command(args, settings, engine, None, out)
        try:
            temporal = await connect_temporal(settings)
        except RuntimeError as exc:
            raise TemporalUnavailable(f"cannot reach Temporal at {settings.temporal_address}: "
                                      f"{exc}") from exc
        if args.command == "webhook":
            return await run_webhook_command(args, settings, engine, temporal, out)
        if args.command == "domain":  # issue #14: sweeps
            from domains import sweep_cli
            from domains.sweep import SweepsClient

            return await sweep_cli.COMMANDS[args.domain_command](
                SweepsClient(temporal, settings, engine), args, out)
        client = InvitationsClient(temporal, settings, engine)
        return await COMMANDS[args.command](client, args, out)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "invite" and bool(args.emails) == bool(args.csv):
        parser.error("invite takes EMAIL arguments or --csv FILE (one of the two)")
    out = Output(args.json)
    try:
        return asyncio.run(run(args, get_settings(), out))
    except InvitationError as exc:
        return out.error(exc)


def exit_now(code: int) -> NoReturn:
    """Leave without interpreter teardown: the Temporal client's Rust threads can outlive
    the event loop, and CPython's finalisation then aborts now and then with "Fatal Python
    error: PyGILState_Release" (temporalio/sdk-python#300). Everything is written first."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
