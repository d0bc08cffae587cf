"""Demo data for domain sweeps (`starter.py domain seed-demo`): the demo organisation Acme
(demo.seed.seed_demo) with a verified claim on acme-people.test, and three people there
with individual accounts: one on a paid plan, one on a free plan, and one blocked by 1009
(their account still has another user). Idempotent: a second run finds them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import select

from demo.seed import IndividualSpec, create_individual, seed_demo
from domains.tables import ClaimedDomain
from records.db import write_session
from records.tables import User

DEMO_DOMAIN = "acme-people.test"
DEMO_PEOPLE = {"paid": f"petra.paid@{DEMO_DOMAIN}", "free": f"felix.free@{DEMO_DOMAIN}",
               "other_user": f"otto.shared@{DEMO_DOMAIN}"}


def seed_domain_demo(engine: Engine, recordings_dir: Path) -> dict[str, Any]:
    acme = seed_demo(engine, recordings_dir)
    account_id = int(acme["account_id"])
    now = datetime.now(UTC)
    with write_session(engine) as s:
        created = s.exec(select(ClaimedDomain).where(ClaimedDomain.account_id == account_id,
                                                     ClaimedDomain.name == DEMO_DOMAIN)
                         ).first() is None
        if created:
            s.add(ClaimedDomain(account_id=account_id, name=DEMO_DOMAIN, status="verified",
                                token="invites-verification=demo", created_by="admin@acme.test",
                                verified_at=now, checked_at=now))
        specs = {
            "paid": IndividualSpec(email=DEMO_PEOPLE["paid"], first_name="Petra",
                                   last_name="Paid", price_minor=1299,
                                   period_start=now - timedelta(days=9),
                                   period_end=now + timedelta(days=21), chat=50),
            "free": IndividualSpec(email=DEMO_PEOPLE["free"], first_name="Felix",
                                   last_name="Free", chat=20),
            "other_user": IndividualSpec(email=DEMO_PEOPLE["other_user"], first_name="Otto",
                                         last_name="Shared",
                                         other_users=(f"olivia.colleague@{DEMO_DOMAIN}",)),
        }
        for key, spec in specs.items():
            if s.exec(select(User).where(User.email == DEMO_PEOPLE[key])).first() is None:
                create_individual(s, recordings_dir, spec)
        s.commit()
    return {"created": created, "account_id": account_id, "domain": DEMO_DOMAIN,
            "people": DEMO_PEOPLE}
