"""Replay tier of the domain sweep: every committed DomainWorkflow history (tests/histories/
domain/) replays against today's DomainWorkflow, so a change that would break running
sweeps fails here. Regenerate with
`UPDATE_HISTORIES=1 pytest -k sqlite tests/test_domain_sweep.py`."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from messages.domain_sweep import SweepInput, SweepResult
from workflows.domain import DomainWorkflow
from workflows.invitation import InvitationWorkflow

ROOT = Path(__file__).resolve().parent / "histories" / "domain"
HISTORIES = sorted(ROOT.glob("*.json"))
EXPECTED = {
    "notify_completed", "notify_continued_as_new", "invite_then_cancel_revoking",
    "invite_watched_until_all_ended", "paused_resumed_cancelled",
    "consolidate_grace_email_changed", "refused_unverified",
}


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_every_sweep_path_has_a_committed_history() -> None:
    assert EXPECTED <= {p.stem for p in HISTORIES}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_sweep_history_replays(path: Path) -> None:
    replayer = Replayer(workflows=[DomainWorkflow, InvitationWorkflow],
                        data_converter=pydantic_data_converter)
    await replayer.replay_workflow(load(path))  # raises on any non-determinism


@workflow.defn(name="DomainWorkflow", sandboxed=False)
class ChangedDomainWorkflow(DomainWorkflow):
    """A careless edit: the claim is checked twice. Replaying must fail."""

    @workflow.run
    async def run(self, input: SweepInput) -> SweepResult:
        await self._checked()
        return await super().run(input)


async def test_sweep_replay_detects_a_non_deterministic_change() -> None:
    replayer = Replayer(workflows=[ChangedDomainWorkflow], data_converter=pydantic_data_converter)
    with pytest.raises(workflow.NondeterminismError):
        await replayer.replay_workflow(load(ROOT / "notify_completed.json"))
