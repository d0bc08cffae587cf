"""Compensation plumbing: undo steps registered before their step runs, run in reverse,
shielded from cancellation (samples-python `waiting_for_handlers_and_compensation`).

An undo step that fails for good stays registered: `run()` reports it, and a later
`run()` (after an operator fixed the cause: the `retry_compensation` update) retries
exactly what is left, in the same order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio import workflow

from workflows.details import describe_failure

T = TypeVar("T")


async def shielded(make: Callable[[], Awaitable[T]]) -> T:
    """Run `make()` to the end even if the workflow is cancelled meanwhile: the cancel
    reaches the awaiter, never the task, and we simply wait for the task again."""
    task = asyncio.ensure_future(make())
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                return task.result()


class Compensations:
    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], Awaitable[object]]]] = []

    def register(self, name: str, undo: Callable[[], Awaitable[object]]) -> None:
        """Call *before* the step runs: a step that fails half-way is undone too, which is
        why every undo must be idempotent and harmless when its step never happened."""
        self._undo.append((name, undo))

    async def run(self) -> list[str]:
        """Undo everything registered, newest first; returns "step: why" for each undo
        that failed for good (each is still attempted: one failed undo must not stop the
        others). Those stay registered for the next run."""
        return await shielded(self._run)

    async def _run(self) -> list[str]:
        failed: list[str] = []
        left: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        while self._undo:
            name, undo = self._undo.pop()
            try:
                await undo()
            except Exception as err:  # an undo failed for good: keep it, carry on
                reason = describe_failure(err)
                workflow.logger.error("compensation %s failed: %s", name, reason)
                failed.append(f"{name}: {reason}")
                left.append((name, undo))
        self._undo = list(reversed(left))
        return failed
