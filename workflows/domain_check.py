"""DomainCheckWorkflow: the periodic re-check of every claimed domain.

A Temporal Schedule (`domain-check`, created by the worker at start-up, every
INVITES_DOMAIN_RECHECK_INTERVAL_SECONDS) starts one run at a time; the run asks the
`recheck_domains` activity to look every claim's TXT record up again: verified claims
whose record is gone become lost, pending or lost ones whose record is back become
verified. A DNS outage changes nothing (the activity counts it as unreachable).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domains.activities import DomainActivities
    from domains.payloads import RecheckInput, RecheckResult


@workflow.defn
class DomainCheckWorkflow:
    @workflow.run
    async def run(self, inp: RecheckInput) -> RecheckResult:
        return await workflow.execute_activity_method(
            DomainActivities.recheck_domains, inp,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1),
                                     maximum_interval=timedelta(minutes=1),
                                     maximum_attempts=5),
        )
