"""Unit tier: ARCHITECTURE.md says what the code has. Renaming, adding or removing an
invitation status or a table fails here until the page is updated."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from sqlmodel import SQLModel

import records.db  # noqa: F401  (registers every table on SQLModel.metadata, as init_db sees it)
from messages.payloads import FINAL_STATUSES, InvitationStatus

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "ARCHITECTURE.md"
START = "[*]"
TRANSITION = re.compile(r"^(\S+)\s*-->\s*(\S+)\s*(?::\s*(.*))?$")
# Lines of a state diagram that name no state and no transition.
IGNORED = re.compile(r"^(%%.*|stateDiagram-v2|direction\s+\w+|classDef\s.*|class\s.*)$")


def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def state_diagram(text: str) -> list[str]:
    """The lines of the page's one Mermaid stateDiagram-v2 block."""
    blocks = [b for b in re.findall(r"^```mermaid\n(.*?)^```", text, flags=re.M | re.S)
              if b.lstrip().startswith("stateDiagram-v2")]
    assert len(blocks) == 1, f"ARCHITECTURE.md should have one stateDiagram-v2, has {len(blocks)}"
    return [line.strip() for line in blocks[0].splitlines() if line.strip()]


def transitions(lines: list[str]) -> list[tuple[str, str, str]]:
    """(from, to, label) of every transition. Any other line that is not a comment or a
    style fails: a state declared some other way would escape the checks below."""
    found = []
    for line in lines:
        if IGNORED.match(line):
            continue
        match = TRANSITION.match(line)
        assert match is not None, f"unexpected line in the state diagram: {line!r}"
        found.append((match[1], match[2], match[3] or ""))
    return found


def section(text: str, title: str) -> str:
    """The body of the `## <title>` section, up to the next heading of its level."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match is not None, f"ARCHITECTURE.md has no '## {title}' section"
    return match[1]


def metadata_tables() -> set[str]:
    """Every table of the ORM metadata, after importing each module that defines one (so a
    table module nobody imports yet is caught too)."""
    for path in ROOT.glob("*/*.py"):
        if path.parts[-2] in ("tests", "migrations", "bench") or path.parts[-2].startswith("."):
            continue
        if "table=True" in path.read_text(encoding="utf-8"):
            importlib.import_module(f"{path.parts[-2]}.{path.stem}")
    return set(SQLModel.metadata.tables)


def test_the_state_diagram_has_exactly_the_invitation_statuses() -> None:
    edges = transitions(state_diagram(page()))
    states = {s for a, b, _ in edges for s in (a, b)} - {START}
    statuses = {s.value for s in InvitationStatus}
    assert not statuses - states, f"statuses missing from the diagram: {statuses - states}"
    assert not states - statuses, f"states the code does not have: {states - statuses}"


def test_the_state_diagram_ends_exactly_at_the_final_statuses() -> None:
    edges = transitions(state_diagram(page()))
    ends = {a for a, b, _ in edges if b == START}
    assert ends == {s.value for s in FINAL_STATUSES}
    starts = {b for a, b, _ in edges if a == START}
    assert starts == {InvitationStatus.PENDING.value}


def test_every_transition_is_labelled_and_every_state_is_reached() -> None:
    edges = transitions(state_diagram(page()))
    unlabelled = [(a, b) for a, b, label in edges if a != START and b != START and not label]
    assert not unlabelled, f"transitions without their trigger: {unlabelled}"
    reached = {b for _, b, _ in edges}
    assert {s.value for s in InvitationStatus} <= reached


def test_every_table_is_in_who_writes_each_table() -> None:
    body = section(page(), "Who writes each table")
    named: set[str] = set()
    for row in re.findall(r"^\|([^|\n]+)\|", body, flags=re.M):
        named |= set(re.findall(r"`([a-z_]+)`", row))
    tables = metadata_tables()
    assert tables, "no table registered: records.db should import them"
    assert not tables - named, f"tables nobody documents: {sorted(tables - named)}"
    assert not named - tables, f"documented tables the ORM does not have: {sorted(named - tables)}"
