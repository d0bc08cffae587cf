"""What a phase's histories say (bench_flow.py): events, workflow tasks, activities, local
activities, timers and an estimate of billable actions per workflow, when each closed, and
how long workflow tasks and activities queued before a worker started them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stack import bounded
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client


@dataclass
class Histories:
    events: list[int]
    workflow_tasks: list[int]
    activities: list[int]  # scheduled, retries not counted
    local_activities: list[int]  # MARKER_RECORDED
    timers: list[int]
    actions: list[int]  # estimate, see README
    closed_at: dict[str, datetime]
    by_type: Counter[str]
    # Scheduled -> started, in seconds, of every workflow task and activity: queueing.
    workflow_task_waits: list[float] = field(default_factory=list)
    activity_waits: list[float] = field(default_factory=list)


ACTION_EVENTS = {  # what a Temporal Cloud "action" is, approximately, as history events
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
    EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
}


def version_only_upserts(events: Any) -> int:
    """Upserts of `TemporalChangeVersion` alone (made by `workflow.patched`) are not billed."""
    return sum(1 for e in events
               if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
               and set(e.upsert_workflow_search_attributes_event_attributes
                       .search_attributes.indexed_fields) == {"TemporalChangeVersion"})


def local_activity_actions(types: list[EventType.ValueType]) -> int:
    """Temporal Cloud bills the local activities of one workflow task as one action: count
    the workflow tasks whose completion recorded at least one marker."""
    tasks, in_task = set(), -1
    for i, t in enumerate(types):
        if t == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            in_task = i
        elif t == EventType.EVENT_TYPE_MARKER_RECORDED:
            tasks.add(in_task)
    return len(tasks)


async def read_histories(temporal: Client, ids: list[str]) -> Histories:
    h = Histories([], [], [], [], [], [], {}, Counter())

    async def one(wid: str) -> None:
        history = await temporal.get_workflow_handle(wid).fetch_history()
        types = [e.event_type for e in history.events]
        counts = Counter(types)
        h.events.append(len(types))
        h.workflow_tasks.append(counts[EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED])
        h.activities.append(counts[EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED])
        h.local_activities.append(counts[EventType.EVENT_TYPE_MARKER_RECORDED])
        h.timers.append(counts[EventType.EVENT_TYPE_TIMER_STARTED])
        h.actions.append(sum(n for t, n in counts.items() if t in ACTION_EVENTS)
                         + local_activity_actions(types) - version_only_upserts(history.events))
        h.by_type.update(EventType.Name(t).removeprefix("EVENT_TYPE_").lower() for t in types)
        last = history.events[-1]
        h.closed_at[wid] = last.event_time.ToDatetime(tzinfo=UTC)
        scheduled = {e.event_id: e.event_time.ToNanoseconds() for e in history.events}
        for e in history.events:
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                since, waits = (e.workflow_task_started_event_attributes.scheduled_event_id,
                                h.workflow_task_waits)
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                since, waits = (e.activity_task_started_event_attributes.scheduled_event_id,
                                h.activity_waits)
            else:
                continue
            if since in scheduled:
                waits.append((e.event_time.ToNanoseconds() - scheduled[since]) / 1e9)

    await bounded(ids, 16, one)
    return h
