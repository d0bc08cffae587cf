"""Replay tier: every committed history replays against today's InvitationWorkflow, in
the SDK's sandbox (the Replayer's default runner), which also refuses any
non-deterministic call on the paths replayed (the worker itself runs unsandboxed: see
worker.py). tests/histories/*.json are this version's paths; tests/histories/v3/ holds
those recorded before the "quick-join" patch (a local activity each for the link, the
refund and every quick transfer), tests/histories/v2/ those recorded before the
"quick-first-tries" patch (activities only for transfers,
finalise and release) and tests/histories/v1/ those of the first version (before the
"invitation-v2" patch, run by the frozen workflows/v1): both must keep replaying as long
as such invitations may run. A change that would break running invitations fails here.
Regenerate this version's histories with `UPDATE_HISTORIES=1 pytest -k sqlite
tests/test_workflow*.py tests/test_saga*.py tests/test_concurrency.py` (never the v1, v2
or v3 ones)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from messages.payloads import InvitationInput, InvitationResult
from workflows.invitation import InvitationWorkflow

ROOT = Path(__file__).resolve().parent / "histories"
HISTORIES = sorted(ROOT.glob("*.json"))
V1_HISTORIES = sorted((ROOT / "v1").glob("*.json"))
V2_HISTORIES = sorted((ROOT / "v2").glob("*.json"))
V3_HISTORIES = sorted((ROOT / "v3").glob("*.json"))
# Every path of the process has a committed history (see the tests named in each file).
V1_PATHS = {
    "free_user_completed", "paid_user_refund_completed", "blocked_by_other_user_then_completed",
    "blocked_by_room_then_completed", "declined", "expired", "resent_then_expired", "revoked",
    "accepted_by_signal", "two_clicks_one_refund", "transfer_failed_compensated",
    "transient_failure_retried", "worker_restarted_mid_chat", "completed_with_search_attributes",
}
EXPECTED = V1_PATHS | {
    "cancel_during_mail", "cancel_during_check", "cancel_during_link", "cancel_during_refund",
    "cancel_during_finalise", "finalise_stuck_then_completed", "needs_attention_then_retried",
    "continued_as_new_then_completed", "failed_join_told_what_was_undone",
    "refused_already_joining_then_joined_elsewhere",
}


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_every_path_has_a_committed_history() -> None:
    assert EXPECTED <= {p.stem for p in HISTORIES}
    assert EXPECTED <= {p.stem for p in V2_HISTORIES}
    assert EXPECTED <= {p.stem for p in V3_HISTORIES}
    assert V1_PATHS <= {p.stem for p in V1_HISTORIES}


@pytest.mark.parametrize("path", HISTORIES + V3_HISTORIES + V2_HISTORIES + V1_HISTORIES,
                         ids=[p.stem for p in HISTORIES] + [f"v3-{p.stem}" for p in V3_HISTORIES]
                         + [f"v2-{p.stem}" for p in V2_HISTORIES]
                         + [f"v1-{p.stem}" for p in V1_HISTORIES])
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
    for histories in (HISTORIES, V3_HISTORIES, V2_HISTORIES, V1_HISTORIES):
        history = load(next(p for p in histories if p.stem == "free_user_completed"))
        with pytest.raises(workflow.NondeterminismError):
            await replayer.replay_workflow(history)
