"""Frozen with workflows/v1/invitation.py (see there).

Compensation plumbing: undo steps registered before their step runs, run in reverse,
shielded from cancellation (samples-python `waiting_for_handlers_and_compensation`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio import workflow

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

    def __bool__(self) -> bool:
        return bool(self._undo)

    async def run(self) -> list[str]:
        """Undo everything registered, newest first; returns the undo steps that failed
        (each is still attempted: one failed undo must not stop the others)."""
        return await shielded(self._run)

    async def _run(self) -> list[str]:
        failed: list[str] = []
        while self._undo:
            name, undo = self._undo.pop()
            try:
                await undo()
            except Exception as err:  # an undo failed for good: record it, carry on
                workflow.logger.error("compensation %s failed: %s", name, err)
                failed.append(f"{name}: {err}")
        return failed
