"""Claiming and verifying domains (issue #14) against a real DNS server on 127.0.0.1
(tests/dns_server.py, one per module): add -> publish -> verify -> withdraw -> lost ->
verified again; refusals (public mail domains, bad names, not an admin, a name another
account verified, also when two accounts verify at the same instant, on both databases);
the command line; the Temporal schedule's re-check on the dev server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import (
    ScheduleActionExecutionStartWorkflow,
    ScheduleIntervalSpec,
    WorkflowHistory,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from config import ROOT, Settings
from demo.seed import create_org
from domains.claims import verified_domain
from domains.errors import (
    DnsUnavailable,
    DomainNotClaimed,
    DomainVerifiedElsewhere,
    InvalidDomain,
    PublicMailDomain,
    TxtRecordNotFound,
)
from domains.names import DomainNameError, normalise_domain
from domains.payloads import RecheckResult
from domains.schedule import ensure_domain_check_schedule
from domains.tables import ClaimedDomain, DomainStatus
from domains.verification import TOKEN_PREFIX, DomainClaims
from invitations.errors import NotAnAdmin
from records.tables import Role, User
from tests.conftest import new_worker
from tests.dns_server import Zone, dns_server
from tests.workflow_helpers import eventually
from workflows.domain_check import DomainCheckWorkflow

# Not in tests/histories/ itself: test_replay.py replays those against InvitationWorkflow.
HISTORY = Path(__file__).resolve().parent / "histories" / "domain_check" / "recheck_lost.json"


@pytest.fixture(scope="module")
def zone() -> Iterator[Zone]:
    with dns_server() as z:
        yield z


@pytest.fixture
def dns_settings(settings: Settings, zone: Zone) -> Settings:
    settings.dns_resolver = zone.address
    settings.dns_timeout_seconds = 2
    return settings


def org(engine: Engine, tag: str) -> int:
    with Session(engine) as session:
        account = create_org(session, f"Org {tag}", owner=f"owner@{tag}.test",
                             admins=(f"admin@{tag}.test",))
        assert account.id is not None
        session.add(User(email=f"member@{tag}.test", account_id=account.id, role=Role.MEMBER))
        session.commit()
        return account.id


def domain() -> str:
    return f"corp-{uuid.uuid4().hex[:10]}.example"


def claims_of(engine: Engine, name: str) -> list[ClaimedDomain]:
    with Session(engine) as session:
        return list(session.exec(select(ClaimedDomain).where(ClaimedDomain.name == name)
                                 .order_by(col(ClaimedDomain.account_id))).all())


async def test_the_committed_domain_check_history_replays() -> None:
    """Regenerate with `UPDATE_HISTORIES=1 pytest tests/test_domains.py -k schedule`."""
    history = WorkflowHistory.from_json(HISTORY.stem, HISTORY.read_text())
    replayer = Replayer(workflows=[DomainCheckWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)  # raises on any non-determinism


def test_names_are_normalised_and_bad_ones_say_why() -> None:
    assert normalise_domain(" Acme.COM. ") == "acme.com"
    assert normalise_domain("Bücher.example") == "xn--bcher-kva.example"
    for bad, why in [("", "empty"), ("acme", "no top-level domain"),
                     ("admin@acme.com", "not a domain name"), ("-acme.com", "invalid label"),
                     ("acme..com", "empty label"), ("http://acme.com", "not a domain name"),
                     ("acme.c0m", "top-level"), ("a" * 64 + ".com", "invalid label")]:
        with pytest.raises(DomainNameError, match=why):
            normalise_domain(bad)


@pytest.mark.sqlite_only
def test_verify_lose_and_verify_again(dns_settings: Settings, engine: Engine,
                                      zone: Zone) -> None:
    acme, name = org(engine, "acme"), domain()
    claims = DomainClaims(dns_settings, engine)
    claim = claims.add(acme, "admin@acme.test", name.upper())
    assert (claim.name, claim.status) == (name, DomainStatus.PENDING_VERIFICATION)
    assert claim.token.startswith(TOKEN_PREFIX) and len(claim.token) > len(TOKEN_PREFIX) + 20
    assert claims.add(acme, "owner@acme.test", name).token == claim.token  # idempotent

    with pytest.raises(TxtRecordNotFound, match=claim.token):
        claims.verify(acme, name)  # nothing published yet
    [row] = claims_of(engine, name)
    assert row.status == DomainStatus.PENDING_VERIFICATION and row.checked_at is not None

    zone.publish(name, "v=spf1 -all")  # other TXT records at the apex do not matter
    zone.publish(name, claim.token)
    verified = claims.verify(acme, name)
    assert verified.status == DomainStatus.VERIFIED and verified.verified_at is not None
    assert verified_domain(engine, acme, name.upper()) is not None

    zone.fail(name)  # the resolver in trouble: no conclusion, nothing written
    with pytest.raises(DnsUnavailable):
        claims.verify(acme, name)
    assert claims.recheck_all().unreachable == 1
    assert claims_of(engine, name)[0].status == DomainStatus.VERIFIED
    zone.fail(name, False)

    zone.withdraw(name, claim.token)
    counts = claims.recheck_all()
    assert (counts.lost, counts.checked) == (1, 1)
    [row] = claims_of(engine, name)
    assert row.status == DomainStatus.LOST and row.lost_at is not None
    assert verified_domain(engine, acme, name) is None

    zone.publish(name, claim.token)
    assert claims.verify(acme, name).status == DomainStatus.VERIFIED
    [row] = claims_of(engine, name)
    assert row.lost_at is None and row.verified_at is not None and row.verified_at > row.created_at

    claims.remove(acme, "admin@acme.test", name)
    assert claims_of(engine, name) == []


@pytest.mark.sqlite_only
def test_the_resolver_setting_takes_a_host_name_and_a_bad_one_says_so(
        dns_settings: Settings, engine: Engine, zone: Zone) -> None:
    acme, name = org(engine, "acme"), domain()
    claims = DomainClaims(dns_settings, engine)
    claim = claims.add(acme, "admin@acme.test", name)
    zone.publish(name, claim.token)
    dns_settings.dns_resolver = f"localhost:{zone.port}"  # a host name, looked up
    assert claims.verify(acme, name).status == DomainStatus.VERIFIED
    for bad in ("127.0.0.1:abc", f"[::1{zone.port}", "127.0.0.1:99999",
                f"no-such-host.invalid:{zone.port}"):
        dns_settings.dns_resolver = bad
        with pytest.raises(DnsUnavailable, match="INVITES_DNS_RESOLVER") as exc:
            claims.verify(acme, name)
        assert exc.value.code == "dns_unavailable" and repr(bad) in exc.value.message
        assert claims.recheck_all().unreachable >= 1  # the schedule's check: no traceback
    assert claims_of(engine, name)[0].status == DomainStatus.VERIFIED


@pytest.mark.sqlite_only
def test_refused_claims_change_nothing(dns_settings: Settings, engine: Engine) -> None:
    acme = org(engine, "acme")
    claims = DomainClaims(dns_settings, engine)
    with pytest.raises(PublicMailDomain, match="gmail.com is a public mail provider") as exc:
        claims.add(acme, "admin@acme.test", "GMail.com")
    assert (exc.value.code, exc.value.field) == ("public_mail_domain", "domain")
    with pytest.raises(InvalidDomain, match="no top-level domain") as bad:
        claims.add(acme, "admin@acme.test", "intranet")
    assert bad.value.field == "domain"
    with pytest.raises(NotAnAdmin, match="member@acme.test is not an owner or admin"):
        claims.add(acme, "member@acme.test", domain())
    with pytest.raises(DomainNotClaimed):
        claims.verify(acme, domain())
    with Session(engine) as session:
        assert session.exec(select(ClaimedDomain)).all() == []


def test_two_accounts_verifying_one_name_at_once_make_one_winner(
    dns_settings: Settings, engine: Engine, zone: Zone,
) -> None:
    """Both accounts published their token; both verify at the same instant. The partial
    unique index lets one commit; the other is refused and its claim is unchanged."""
    first, second, name = org(engine, "first"), org(engine, "second"), domain()
    claims = DomainClaims(dns_settings, engine)
    tokens = {a: claims.add(a, f"admin@{t}.test", name).token
              for a, t in ((first, "first"), (second, "second"))}
    for token in tokens.values():
        zone.publish(name, token)

    barrier = threading.Barrier(2)
    outcomes: dict[int, Any] = {}

    def verify(account: int) -> None:
        barrier.wait()
        try:
            outcomes[account] = claims.verify(account, name).status
        except DomainVerifiedElsewhere as exc:
            outcomes[account] = exc

    threads = [threading.Thread(target=verify, args=(a,)) for a in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [a for a, o in outcomes.items() if o == DomainStatus.VERIFIED]
    losers = [a for a, o in outcomes.items() if isinstance(o, DomainVerifiedElsewhere)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert outcomes[losers[0]].code == "domain_verified_by_another_account"
    by_account = {c.account_id: c for c in claims_of(engine, name)}
    assert by_account[winners[0]].status == DomainStatus.VERIFIED
    assert by_account[losers[0]].status == DomainStatus.PENDING_VERIFICATION
    assert by_account[losers[0]].checked_at is None  # refused: nothing written

    third = org(engine, "third")
    with pytest.raises(DomainVerifiedElsewhere):
        claims.add(third, "admin@third.test", name)  # refused at once, no pending claim
    assert {c.account_id for c in claims_of(engine, name)} == set(tokens)

    # The winner loses the record; the other account's claim can now be verified.
    zone.withdraw(name, tokens[winners[0]])
    assert claims.recheck_all().lost == 1
    assert claims.verify(losers[0], name).status == DomainStatus.VERIFIED


def starter(settings: Settings, *args: str) -> tuple[int, Any]:
    env = {**os.environ, "INVITES_DATABASE_URL": settings.database_url,
           "INVITES_DATA_DIR": str(settings.data_dir), "INVITES_DNS_RESOLVER":
           settings.dns_resolver, "INVITES_DNS_TIMEOUT_SECONDS": "2",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "starter.py"), "--json", *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    return done.returncode, json.loads(done.stdout)


@pytest.mark.sqlite_only
def test_the_command_line_adds_verifies_lists_and_refuses(
    dns_settings: Settings, engine: Engine, zone: Zone,
) -> None:
    acme, name = org(engine, "acme"), domain()
    code, added = starter(dns_settings, "domain", "add", "--account", str(acme),
                          "--by", "admin@acme.test", name)
    assert code == 0 and added["status"] == "pending_verification"
    assert added["txt_record"]["name"] == name and added["txt_record"]["type"] == "TXT"
    code, missing = starter(dns_settings, "domain", "verify", "--account", str(acme), name)
    assert code == 1 and missing["error"]["code"] == "txt_record_not_found"
    zone.publish(name, added["txt_record"]["value"])
    code, verified = starter(dns_settings, "domain", "verify", "--account", str(acme), name)
    assert code == 0 and verified["status"] == "verified"
    code, listed = starter(dns_settings, "domain", "list", "--account", str(acme))
    assert code == 0 and [d["status"] for d in listed["domains"]] == ["verified"]
    code, refused = starter(dns_settings, "domain", "add", "--account", str(acme),
                            "--by", "admin@acme.test", "yahoo.com")
    assert code == 1 and refused["error"]["code"] == "public_mail_domain"
    assert refused["error"]["field"] == "domain"


@pytest.mark.sqlite_only
async def test_the_schedule_rechecks_and_marks_a_withdrawn_record_lost(
    dev_env: WorkflowEnvironment, dns_settings: Settings, engine: Engine, zone: Zone,
) -> None:
    acme, name = org(engine, "acme"), domain()
    claims = DomainClaims(dns_settings, engine)
    token = claims.add(acme, "admin@acme.test", name).token
    zone.publish(name, token)
    claims.verify(acme, name)
    zone.withdraw(name, token)

    schedule_id = f"domain-check-{uuid.uuid4().hex[:8]}"
    handle = await ensure_domain_check_schedule(dev_env.client, dns_settings, schedule_id)
    try:
        dns_settings.domain_recheck_interval_seconds = 7200
        await ensure_domain_check_schedule(dev_env.client, dns_settings, schedule_id)
        spec = (await handle.describe()).schedule.spec
        assert spec.intervals == [ScheduleIntervalSpec(every=timedelta(hours=2))]  # updated
        async with new_worker(dev_env.client, dns_settings, engine):
            await handle.trigger()

            def lost() -> bool:
                return claims_of(engine, name)[0].status == DomainStatus.LOST

            await eventually(lost, within=30, what="the scheduled re-check marks it lost")
            runs = (await handle.describe()).info.recent_actions
            action = runs[-1].action if runs else None
            assert isinstance(action, ScheduleActionExecutionStartWorkflow)
            assert action.workflow_id.startswith(f"{schedule_id}-run")
            run = dev_env.client.get_workflow_handle(action.workflow_id)
            assert (await run.result()) == RecheckResult(checked=1, lost=1).model_dump()
            if os.environ.get("UPDATE_HISTORIES") == "1":
                HISTORY.parent.mkdir(parents=True, exist_ok=True)
                HISTORY.write_text((await run.fetch_history()).to_json())
    finally:
        await handle.delete()
