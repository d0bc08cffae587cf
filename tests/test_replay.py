"""Replay tier: every committed history (tests/histories/*.json, one per path) replays
against today's InvitationWorkflow. A change that would break running invitations fails
here. Regenerate the histories with `UPDATE_HISTORIES=1 pytest tests/test_workflow*.py`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from models.payloads import InvitationInput, InvitationResult
from workflows.invitation import InvitationWorkflow

HISTORIES = sorted((Path(__file__).resolve().parent / "histories").glob("*.json"))
# Every path of the process has a committed history (see the tests named in each file).
EXPECTED = {
    "free_user_completed", "paid_user_refund_completed", "blocked_by_other_user_then_completed",
    "blocked_by_room_then_completed", "declined", "expired", "resent_then_expired", "revoked",
    "accepted_by_signal", "two_clicks_one_refund", "transfer_failed_compensated",
    "transient_failure_retried", "worker_restarted_mid_chat", "completed_with_search_attributes",
}


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_every_path_has_a_committed_history() -> None:
    assert EXPECTED <= {p.stem for p in HISTORIES}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    replayer = Replayer(workflows=[InvitationWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(load(path))  # raises on any non-determinism


# Unsandboxed: the sandbox would re-import this test module, which reads files at import.
@workflow.defn(name="InvitationWorkflow", sandboxed=False)
class ChangedInvitationWorkflow(InvitationWorkflow):
    """Today's workflow with a change a careless edit could make (a new timer before the
    registration). Replaying a real history against it must fail."""

    @workflow.run
    async def run(self, input: InvitationInput) -> InvitationResult:
        await workflow.sleep(timedelta(seconds=1))
        return await super().run(input)


async def test_replay_detects_a_non_deterministic_change() -> None:
    replayer = Replayer(workflows=[ChangedInvitationWorkflow],
                        data_converter=pydantic_data_converter)
    history = load(next(p for p in HISTORIES if p.stem == "free_user_completed"))
    with pytest.raises(workflow.NondeterminismError):
        await replayer.replay_workflow(history)
