"""`starter.py domain sweep|status|pause|resume|cancel|sign-in|change-email`: the command
line of domain sweeps, on top of `domains.sweep.SweepsClient`. Output and exit codes as
every other command of starter.py (--json; 0 done, 1 error, 2 usage)."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from domains.sweep import SweepsClient
from messages.domain_sweep import SignInAnswer, SweepProgress

Command = Callable[[SweepsClient, argparse.Namespace, Any], Awaitable[int]]


def _line(p: SweepProgress) -> str:
    c = p.counts
    state = p.status.value + (f" ({p.reason})" if p.reason else "")
    return (f"Sweep of {p.domain} for {p.account_name or p.account_id} ({p.mode.value}): "
            f"{state}\n  found {c.found}, notified {c.notified}, invited {c.invited}, skipped "
            f"{c.skipped}\n  open {c.open}, blocked {c.blocked}, completed {c.completed}, "
            f"failed {c.failed}, ended {c.ended}, email changed {c.email_changed}, must choose "
            f"{c.must_choose}")


async def cmd_sweep(client: SweepsClient, args: argparse.Namespace, out: Any) -> int:
    options: dict[str, Any] = {"grace_sign_ins": args.grace, "user_type": args.user_type,
                               "message": args.message, "window": args.window,
                               "page_size": args.page_size}
    if args.expires_in_days:
        options["expires_in_days"] = args.expires_in_days
    if args.history_limit:
        options["history_limit"] = args.history_limit
    if args.tally_every:
        options["tally_every"] = timedelta(seconds=args.tally_every)
    wid = await client.start(args.account, args.by, args.domain, mode=args.mode, **options)
    out.show({"sweep_id": wid, "domain": args.domain.strip().lower(), "mode": args.mode,
              "status": "started"},
             f"Started the {args.mode} sweep {wid}; follow it with "
             f"`starter.py domain status --account {args.account} {args.domain}`.")
    return 0


async def cmd_status(client: SweepsClient, args: argparse.Namespace, out: Any) -> int:
    p = await client.status(args.account, args.domain)
    out.show(p.model_dump(mode="json"), _line(p))
    return 0


async def cmd_pause(client: SweepsClient, args: argparse.Namespace, out: Any) -> int:
    p = await client.pause(args.account, args.domain, by=args.by)
    out.show(p.model_dump(mode="json"), "Paused. " + _line(p))
    return 0


async def cmd_resume(client: SweepsClient, args: argparse.Namespace, out: Any) -> int:
    p = await client.resume(args.account, args.domain, by=args.by)
    out.show(p.model_dump(mode="json"), "Resumed. " + _line(p))
    return 0


async def cmd_cancel(client: SweepsClient, args: argparse.Namespace, out: Any) -> int:
    p = await client.cancel(args.account, args.domain, revoke_started=args.revoke_started,
                            by=args.by, reason=args.reason)
    out.show(p.model_dump(mode="json"), "Cancelled. " + _line(p))
    return 0


async def cmd_sign_in(client: SweepsClient, args: argparse.Namespace, out: Any) -> int:
    a: SignInAnswer = await client.sign_in(args.email)
    out.show(a.model_dump(mode="json"), a.message)
    return 0


async def cmd_change_email(client: SweepsClient, args: argparse.Namespace, out: Any) -> int:
    done = await client.change_email(args.old, args.new, by=args.by)
    revoked = ", ".join(done["revoked"]) or "none open"
    out.show(done, f"{done['old_email']} is now {done['new_email']}; domain invitations "
                   f"revoked: {revoked}.")
    return 0


COMMANDS: dict[str, Command] = {
    "sweep": cmd_sweep, "status": cmd_status, "pause": cmd_pause, "resume": cmd_resume,
    "cancel": cmd_cancel, "sign-in": cmd_sign_in, "change-email": cmd_change_email,
}


def add_commands(dsub: Any, common: argparse.ArgumentParser) -> None:
    """The sweep commands, in the `domain` group of starter.py."""
    def positive(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError("must be 1 or more")
        return value

    def which(p: argparse.ArgumentParser) -> None:
        p.add_argument("--account", type=int, required=True, help="the organisation's id")
        p.add_argument("domain", help="the claimed domain, e.g. acme.com")

    sw = dsub.add_parser("sweep", parents=[common],
                         help="notify or invite everyone with an individual account on it")
    which(sw)
    sw.add_argument("--by", required=True, metavar="ADMIN_EMAIL", help="owner/admin (inviter)")
    sw.add_argument("--mode", choices=("notify", "invite", "consolidate"), default="notify",
                    help="notify: one email each; invite: one invitation each; consolidate: "
                         "invite, and after --grace more sign-ins they must choose")
    sw.add_argument("--grace", type=int, default=3, metavar="N",
                    help="consolidate: sign-ins allowed after the first (which tells "
                         "them) before they must choose (3)")
    sw.add_argument("--user-type", choices=("basic", "licensed"), default="basic")
    sw.add_argument("--message", help="a personal message in every email")
    sw.add_argument("--expires-in-days", type=positive, metavar="N")
    sw.add_argument("--window", type=positive, default=50, help="invitation starts in flight")
    sw.add_argument("--page-size", type=positive, default=100, help="people per page")
    sw.add_argument("--history-limit", type=positive, metavar="EVENTS",
                    help="continue as new past this history length (2000)")
    sw.add_argument("--tally-every", type=positive, metavar="SECONDS",
                    help="how often the invitations are re-counted (3600)")
    which(dsub.add_parser("status", parents=[common], help="a sweep's progress"))
    for name, text in (("pause", "hold a sweep's next starts"), ("resume", "go on")):
        p = dsub.add_parser(name, parents=[common], help=text)
        which(p)
        p.add_argument("--by", metavar="ADMIN_EMAIL")
    cancel = dsub.add_parser("cancel", parents=[common], help="stop a sweep")
    which(cancel)
    cancel.add_argument("--revoke-started", action="store_true",
                        help="also revoke the open invitations it started")
    cancel.add_argument("--by", metavar="ADMIN_EMAIL")
    cancel.add_argument("--reason")
    si = dsub.add_parser("sign-in", parents=[common],
                         help="a person signed in (the platform's sign-in path)")
    si.add_argument("email")
    ce = dsub.add_parser("change-email", parents=[common],
                         help="move a person to an email off the domain")
    ce.add_argument("old", metavar="OLD_EMAIL")
    ce.add_argument("new", metavar="NEW_EMAIL")
    ce.add_argument("--by", metavar="ADMIN_EMAIL")
    dsub.add_parser("seed-demo", parents=[common],
                    help="demo: Acme's verified acme-people.test and three people on it")


def seed_demo(settings: Any, out: Any) -> int:
    from domains.sweep_demo import seed_domain_demo
    from records.db import engine_from, init_db

    engine = engine_from(settings)
    init_db(engine)
    seeded = seed_domain_demo(engine, settings.recordings_dir)
    lines = [f"{'Created' if seeded['created'] else 'Found'} {seeded['domain']}, verified by "
             f"Acme (account {seeded['account_id']}); individual accounts on it:"]
    lines += [f"  {kind:<11} {email}" for kind, email in seeded["people"].items()]
    lines.append(f"Sweep it: starter.py domain sweep --account {seeded['account_id']} --by "
                 f"admin@acme.test {seeded['domain']} --mode invite")
    out.show(seeded, "\n".join(lines))
    engine.dispose()
    return 0
