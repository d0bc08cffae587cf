"""The activity of DomainCheckWorkflow: re-check every claimed domain's TXT record.

Safe to run twice: each claim's new state is a function of what DNS answers now (found:
verified; missing: a verified claim is lost), so a retry writes the same thing again.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from sqlalchemy import Engine
from temporalio import activity

from config import Settings
from domains.payloads import RecheckInput, RecheckResult
from domains.verification import DomainClaims


class DomainActivities:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.claims = DomainClaims(settings, engine)

    @activity.defn(name="recheck_domains")
    async def recheck_domains(self, inp: RecheckInput) -> RecheckResult:
        counts = await asyncio.to_thread(self.claims.recheck_all)
        activity.logger.info("domains re-checked: %s", counts)
        return RecheckResult(**asdict(counts))
