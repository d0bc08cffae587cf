"""`starter.py` as scripts and people run it: a subprocess against the dev server (with our
search attributes), configured only through INVITES_* environment variables; exit codes,
--json documents, readable tables and error messages."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from config import ROOT, Settings
from invitations import InvitationsClient
from messages import search_attributes as sa
from records.ids import invitation_id
from records.tables import Invitation
from rules.links import verify
from tests.conftest import free_port, new_worker
from tests.test_client import (
    World,
    add_individual,
    count,
    gated_activities,
    make_world,
    started,
    terminate_leftovers,
    unique,
)


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


class Starter:
    """Runs `python starter.py ...` with this test's settings in the environment. Async,
    so that a worker in this process keeps running while the command waits on it."""

    def __init__(self, settings: Settings, address: str) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("INVITES_", "TEMPORAL_"))}
        env.update({
            "INVITES_DATABASE_URL": settings.database_url,
            "INVITES_TEMPORAL_ADDRESS": address,
            "INVITES_TASK_QUEUE": settings.task_queue,
            "INVITES_RECORDINGS_DIR": str(settings.recordings_dir),
            "INVITES_LINK_SECRET": settings.link_secret.get_secret_value(),
            "INVITES_PUBLIC_BASE_URL": settings.public_base_url,
            "COLUMNS": "200",
        })
        self.env = env

    async def __call__(self, *args: str, cwd: Path = ROOT) -> Run:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "starter.py"), *args, cwd=cwd, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def starter(dev_env: WorkflowEnvironment, settings: Settings, engine: Engine):  # type: ignore[no-untyped-def]
    yield Starter(settings, dev_env.client.service_client.config.target_host)
    await terminate_leftovers(dev_env.client, engine)


@pytest.fixture
def world(engine: Engine, settings: Settings) -> World:
    return make_world(engine, settings, seats=4)  # owner + admin: 2 licensed seats left


async def test_seed_demo_is_idempotent_and_says_what_it_found(starter: Starter) -> None:
    first = await starter("seed-demo", "--json")
    assert first.code == 0, first.err
    second = await starter("--json", "seed-demo")  # --json before the command works too
    assert second.code == 0
    assert first.json["created"] is True and second.json["created"] is False
    assert first.json["account_id"] == second.json["account_id"]
    assert "paula.paid@example.com" in first.json["invitees"].values()
    human = await starter("seed-demo")
    assert human.code == 0
    assert f"Found the demo account Acme: account id {first.json['account_id']}" in human.out
    assert "fran.free@example.com" in human.out


async def test_invite_by_email_then_again(
    starter: Starter, world: World, dev_env: WorkflowEnvironment, engine: Engine,
) -> None:
    alice, bob = unique("alice"), unique("bob")
    args = ["invite", "--account", str(world.org), "--by", world.admin, "--user-type",
            "licensed", "--message", "Welcome to Acme!", "--expires-in-days", "14"]
    run = await starter(*args, alice, bob, "--json")
    assert run.code == 0, run.err
    assert run.json["summary"] == {"started": 2, "already_pending": 0, "failed": 0}
    results = {r["email"]: r for r in run.json["results"]}
    assert set(results) == {alice, bob}
    wid = invitation_id(world.org, alice)
    assert results[alice]["invitation_id"] == wid and results[alice]["outcome"] == "started"
    expires = datetime.fromisoformat(results[alice]["expires_at"])
    assert timedelta(days=13, hours=23) < expires - datetime.now(UTC) <= timedelta(days=14)
    desc = await dev_env.client.get_workflow_handle(wid).describe()
    assert desc.typed_search_attributes.get(sa.INVITEE_EMAIL) == alice
    assert await desc.static_summary() == f"Invite {alice} to Acme as Licensed"
    with Session(engine) as s:
        row = s.get(Invitation, wid)
        assert row is not None and row.message == "Welcome to Acme!"

    again = await starter(*args, alice, bob)  # human output, nothing started twice
    assert again.code == 0, again.err
    assert again.out.count("already pending") == 3  # two rows and the summary
    assert "0 started, 2 already pending, 0 failed" in again.out
    assert (await dev_env.client.get_workflow_handle(wid).describe()).run_id == desc.run_id


@pytest.mark.parametrize(("case", "code", "message"), [
    ("unknown account", "unknown_account", "there is no business account with id 999"),
    ("not an admin", "not_an_admin", "member@acme.test is not an owner or admin of Acme"),
    ("not paid", "account_not_paid", "Initech (account {unpaid}) is not on a paid plan"),
])
async def test_inviter_errors_exit_1_with_nothing_started(
    starter: Starter, world: World, engine: Engine, dev_env: WorkflowEnvironment,
    case: str, code: str, message: str,
) -> None:
    account, by = {"unknown account": (999, world.admin),
                   "not an admin": (world.org, world.member),
                   "not paid": (world.unpaid, "owner@initech.test")}[case]
    email = unique("nobody")
    message = message.format(unpaid=world.unpaid)
    run = await starter("invite", "--account", str(account), "--by", by, email, "--json")
    assert run.code == 1
    assert run.json == {"error": {"code": code, "field": run.json["error"]["field"],
                                  "message": run.json["error"]["message"]}}
    assert message in run.json["error"]["message"] and message in run.err
    human = await starter("invite", "--account", str(account), "--by", by, email)
    assert human.code == 1 and human.out == "" and f"error ({code}): " in human.err
    assert not await started(dev_env.client, invitation_id(account, email))
    assert count(engine, Invitation) == 0


async def test_row_errors_seats_and_exit_codes(
    starter: Starter, world: World, engine: Engine, dev_env: WorkflowEnvironment,
) -> None:
    one, two, three = unique("one"), unique("two"), unique("three")
    base = ["invite", "--account", str(world.org), "--by", world.owner]
    bad = await starter(*base, "not@an@email", "--json")
    assert bad.code == 1  # every row failed
    [row] = bad.json["results"]
    assert row["error"]["code"] == "malformed_email" and "more than one @" in \
        row["error"]["message"]
    seats = await starter(*base, "--user-type", "licensed", one, two, three, "--json")
    assert seats.code == 3, seats.err  # some rows failed, the others went ahead
    outcome = {r["email"]: (r["outcome"], (r["error"] or {}).get("code"))
               for r in seats.json["results"]}
    assert outcome == {one: ("started", None), two: ("started", None),
                       three: ("error", "seats_exhausted")}
    assert not await started(dev_env.client, invitation_id(world.org, three))
    member = await starter(*base, "member@acme.test", world.globex_admin)
    assert member.code == 1
    assert "already a member of this account" in member.out
    assert "admin of another business account (Globex)" in member.out
    assert count(engine, Invitation) == 2


async def test_csv_invite_reports_every_line_and_reruns_idempotently(
    starter: Starter, world: World, tmp_path: Path, dev_env: WorkflowEnvironment,
) -> None:
    ok1, ok2 = unique("ok1"), unique("ok2")
    csv = tmp_path / "people.csv"
    csv.write_text("email,first_name,last_name,user_type\n"
                   f"{ok1},Ann,One,licensed\n"
                   "ann@@example.com,Bad,Mail,basic\n"
                   f"{ok2},Ben,Two,\n"
                   f"{unique('x')},Cy,Three,owner\n")
    args = ["invite", "--account", str(world.org), "--by", world.admin, "--csv", str(csv)]
    first = await starter(*args, "--json")
    assert first.code == 3, first.err
    by_line = {r["line"]: (r["outcome"], (r["error"] or {}).get("code"))
               for r in first.json["results"]}
    assert by_line == {2: ("started", None), 3: ("error", "malformed_email"),
                       4: ("started", None), 5: ("error", "invalid_row")}
    runs = {e: (await dev_env.client.get_workflow_handle(invitation_id(world.org, e))
                .describe()).run_id for e in (ok1, ok2)}
    again = await starter(*args)
    assert again.code == 3
    lines = again.out.splitlines()
    assert any("3" in ln and "malformed_email" in ln and "ann@@example.com" in ln for ln in lines)
    assert any("5" in ln and "basic or licensed, not 'owner'" in ln for ln in lines)
    assert "0 started, 2 already pending, 2 failed" in again.out
    for email, run_id in runs.items():
        desc = await dev_env.client.get_workflow_handle(invitation_id(world.org, email)).describe()
        assert desc.run_id == run_id

    header = tmp_path / "header.csv"
    header.write_text("mail,name\na@example.com,A\n")
    refused = await starter(*args[:-1], str(header))
    assert refused.code == 1 and "error (csv_format)" in refused.err and "'mail'" in refused.err


async def test_pending_link_status_resend_and_revoke(
    starter: Starter, world: World, dev_env: WorkflowEnvironment, settings: Settings,
    engine: Engine, smtp: Path,
) -> None:
    basic, licensed = unique("basic"), unique("licensed")
    base = ["invite", "--account", str(world.org), "--by", world.admin]
    assert (await starter(*base, basic)).code == 0
    assert (await starter(*base, "--user-type", "licensed", licensed)).code == 0
    wid = invitation_id(world.org, basic)

    pending = await starter("pending", "--account", str(world.org), "--json")
    assert pending.code == 0
    rows = {r["email"]: r for r in pending.json["invitations"]}
    assert set(rows) == {basic, licensed}
    assert rows[licensed]["user_type"] == "licensed" and rows[basic]["status"] == "pending"
    table = await starter("pending", "--account", str(world.org))
    assert basic in table.out and "Licensed" in table.out and "Pending" in table.out

    async with new_worker(dev_env.client, settings, engine):
        # The current link is read from the workflow (`progress`), hence inside the worker.
        link = await starter("link", wid, "--json")
        assert link.code == 0, link.err
        claims = verify(settings.link_secret.get_secret_value(),
                        link.json["url"].rsplit("/", 1)[1])
        assert (claims.invitation_id, claims.email) == (wid, basic)
        assert (await starter("link", wid)).out.strip().startswith(
            f"{settings.public_base_url}/i/")
        status = await starter("status", wid, "--json")
        assert status.code == 0, status.err
        assert status.json["status"] == "pending" and status.json["account_name"] == "Acme"
        human = await starter("status", wid)
        assert "Waiting for the invitee" in human.out and basic in human.out

        resent = await starter("resend", wid, "--expires-in-days", "14", "--json")
        assert resent.code == 0, resent.err
        expires = datetime.fromisoformat(resent.json["expires_at"])
        assert timedelta(days=13, hours=23) < expires - datetime.now(UTC) <= timedelta(days=14)

        revoked = await starter("revoke", wid, "--by", world.admin)
        assert revoked.code == 0 and "Revoked the invitation of" in revoked.out
        again = await starter("revoke", wid, "--json")
        assert again.code == 1 and again.json["error"]["code"] == "invitation_closed"
        dead = await starter("link", wid)
        assert dead.code == 1 and "no longer works" in dead.err
        listed = await starter("pending", "--account", str(world.org), "--json")
        assert [r["email"] for r in listed.json["invitations"]] == [licensed]
        assert (await starter("revoke", invitation_id(world.org, licensed))).code == 0
    missing = await starter("status", "invitation-0-nobody@example.com")
    assert missing.code == 1 and "error (not_found)" in missing.err


async def test_revoke_after_data_moves_is_refused_clearly(
    starter: Starter, world: World, dev_env: WorkflowEnvironment, settings: Settings,
    engine: Engine, smtp: Path,
) -> None:
    email = unique("mover")
    add_individual(engine, settings, email, chat=10)
    gate = asyncio.Event()
    async with new_worker(dev_env.client, settings, engine,
                          activities=gated_activities(settings, engine, gate)):
        assert (await starter("invite", "--account", str(world.org), "--by", world.admin,
                              email)).code == 0
        wid = invitation_id(world.org, email)
        handle = dev_env.client.get_workflow_handle(wid)
        client = InvitationsClient(dev_env.client, settings, engine)
        assert (await client.accept(wid)).outcome == "accepted"
        refused = await starter("revoke", wid)
        assert refused.code == 1, refused.out
        assert "error (already_moving_data): The invitation can no longer be revoked" in \
            refused.err
        as_json = await starter("revoke", wid, "--json")
        assert as_json.code == 1 and as_json.json["error"]["code"] == "already_moving_data"
        gate.set()
        assert (await handle.result())["status"] == "completed"


async def test_usage_and_connection_errors(starter: Starter, world: World) -> None:
    neither = await starter("invite", "--account", str(world.org), "--by", world.admin)
    assert neither.code == 2 and "EMAIL arguments or --csv" in neither.err
    days = await starter("invite", "--account", "1", "--by", "a@b.co", "x@y.co",
                         "--expires-in-days", "0")
    assert days.code == 2 and "1 to 365" in days.err
    starter.env["INVITES_TEMPORAL_ADDRESS"] = f"127.0.0.1:{free_port()}"
    down = await starter("status", "invitation-1-x@example.com", "--json")
    assert down.code == 1 and down.json["error"]["code"] == "temporal_unavailable"
