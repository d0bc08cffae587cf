"""`BareInvitationShape`: what a paid invitation accepted at once is, with nothing else,
the baseline of bench_flow.py. Its worker (`stack.py worker bare ...`) runs it in the
workflow sandbox, which imports this module again for every run: keep it this small.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow

CATEGORIES = ("profile", "meetings", "recordings", "chat", "contacts", "settings")


@activity.defn(name="bare_step")
async def bare_step(step: str) -> str:
    return step


@workflow.defn(name="BareInvitationShape")
class BareShape:
    """An `accept` update, link and refund one after the other, six transfers in
    parallel, a result."""

    def __init__(self) -> None:
        self._destination: str | None = None

    @workflow.run
    async def run(self, invitee: str) -> str:
        await workflow.wait_condition(lambda: self._destination is not None)
        timeout = timedelta(seconds=60)
        for step in ("link", "refund"):
            await workflow.execute_activity(bare_step, step, start_to_close_timeout=timeout)
        await asyncio.gather(*(workflow.execute_activity(
            bare_step, f"transfer {c}", start_to_close_timeout=timeout) for c in CATEGORIES))
        return "completed"

    @workflow.update
    async def accept(self, destination: str) -> str:
        self._destination = destination
        return "accepted"
