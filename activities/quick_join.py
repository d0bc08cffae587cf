"""`join_quick`: the join's link, refund and small transfers as ONE local activity.

Run inside the accepting workflow task (workflows/moving.py, patch `quick-join`), it
replaces up to eight local activities (link, refund, six quick transfers), each of which
cost the worker a scheduling round trip, a thread hand-off and a history marker. It calls
the very activity functions the worker has registered under those names (so a test that
replaces one is honoured), in the workflow's order, each in its own transaction, and
reports how far it got. A step that failed, a transfer that ran out of its budget, or one
not started in time, is left to the workflow, which runs it as its own step with its own retries.
Nothing here is a failure for good: the step run alone decides that.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from temporalio import activity

from messages.activity_io import Membership, QuickJoin, QuickJoined, Transfer, Transferred
from messages.payloads import Category, Payment

log = logging.getLogger(__name__)

LINK, PAY, QUICK_JOIN = "link_member", "pay_refund", "join_quick"


def transfer_name(category: Category) -> str:
    return f"transfer_{category.value}"


def needed_steps() -> list[str]:
    return [LINK, PAY, *(transfer_name(c) for c in Category)]


class QuickJoinActivities:
    def __init__(self, steps: Mapping[str, Callable[..., Any]]) -> None:
        """`steps`: the worker's activity functions by activity name (link_member,
        pay_refund, transfer_<category>)."""
        self.steps = dict(steps)

    async def _call(self, name: str, arg: Any) -> Any:
        """One step. On a cancel (of the workflow) the step is cancelled and waited for:
        the cancel is reported only once it has stopped, and the steps wait for their
        database thread to commit or roll back (activities.fencing.in_thread), so that no
        undo runs beside them."""
        fn = self.steps[name]
        step = asyncio.ensure_future(
            fn(arg) if inspect.iscoroutinefunction(fn) else asyncio.to_thread(fn, arg))
        try:
            return await asyncio.shield(step)
        except asyncio.CancelledError:
            step.cancel()
            await asyncio.wait({step})
            raise

    @activity.defn(name=QUICK_JOIN)
    async def join_quick(self, req: QuickJoin) -> QuickJoined:
        started = time.monotonic()
        out = QuickJoined()
        try:
            member: Membership = await self._call(LINK, req.link)
        except Exception as err:  # noqa: BLE001  the link run alone decides
            return self._stopped(out, "link", err)
        out.member = member
        if req.pay is not None:
            try:
                payment: Payment = await self._call(PAY, req.pay)
            except Exception as err:  # noqa: BLE001  the refund run alone decides
                return self._stopped(out, "refund", err)
            out.payment = payment
        assert req.source_account_id is not None or not req.categories
        for category in req.categories:
            if time.monotonic() - started > req.start_transfers_within:
                out.stopped = f"no time left to start transfer {category.value}"
                break
            out.tried.append(category)
            step = Transfer(invitation_id=req.link.invitation_id, category=category,
                            user_id=member.user_id,
                            source_account_id=req.source_account_id or 0,
                            org_account_id=req.link.account_id, group=req.link.group,
                            budget_seconds=req.budget_seconds, scheduled_at=req.scheduled_at)
            try:
                done: Transferred = await self._call(transfer_name(category), step)
            except Exception as err:  # noqa: BLE001  the transfer activity goes on
                self._stopped(out, f"transfer {category.value}", err)
                continue
            if done.finished:
                out.transferred.append(done)
        return out

    @staticmethod
    def _stopped(out: QuickJoined, step: str, err: Exception) -> QuickJoined:
        out.stopped = f"{step}: {err}"
        log.info("quick join: %s left to its own step (%s)", step, err)
        return out
