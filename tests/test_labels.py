"""Unit tier: one definition per label (issue #16). Every category, invitation status,
progress state, refund destination, user type and blocking kind has exactly one label, in
`content.labels`; no other source file or template defines one again. A second definition
shows as a dict keyed by those values with words for values, a value turned into words on
the spot (`status.value|replace("_", " ")`), a label's wording written out, or one of the
wordings that used to disagree ("Chat messages" beside "Chat history")."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from content import labels
from content.present import make_environment
from messages.payloads import (
    BlockingItem,
    Category,
    CategoryProgress,
    InvitationStatus,
    RefundDestination,
    UserType,
)

ROOT = Path(__file__).resolve().parent.parent
LABELS_MODULE = ROOT / "content" / "labels.py"
SKIPPED = {".git", ".venv", ".data", "node_modules", "__pycache__", "test-artifacts",
           "tests", "migrations"}
# The frozen first version keeps its own copy: invitations started before the
# `invitation-v2` patch finish on it unchanged (workflows/v1/ is not edited).
FROZEN = ROOT / "workflows" / "v1"

# Each mapping and the values it must label: all of them, and nothing else.
MAPPINGS = {
    "CATEGORY_LABELS": (labels.CATEGORY_LABELS, [c.value for c in Category]),
    "STATUS_LABELS": (labels.STATUS_LABELS, [s.value for s in InvitationStatus]),
    "PROGRESS_STATE_LABELS": (labels.PROGRESS_STATE_LABELS,
                              list(get_args(CategoryProgress.model_fields["state"].annotation))),
    "DESTINATION_LABELS": (labels.DESTINATION_LABELS, [d.value for d in RefundDestination]),
    "USER_TYPE_LABELS": (labels.USER_TYPE_LABELS, [t.value for t in UserType]),
    "BLOCKING_KIND_LABELS": (labels.BLOCKING_KIND_LABELS,
                             list(get_args(BlockingItem.model_fields["kind"].annotation))),
}

# Wordings that were defined a second time, differently, before the labels were one module.
OLD_WORDINGS = (
    "Chat messages", "Meetings and webinars", "Profile (name, picture",
    "credit moved to the account you join", "refund to your original payment method",
    "Accepted: choosing a refund", "Failed, undone", "failed (undone)",
    "awaiting refund details", "transferring data", "Another user on your account",
    "STATE_LABELS",
)


def _keys(values: list[str]) -> str:
    return "|".join(re.escape(v) for v in values)


ENUMS = "Category|InvitationStatus|RefundDestination|UserType"
# Values that mean nothing else: a status name ("expired", "revoked") also keys sentences
# that are not labels (the link handler's titles per reason, the console's notices), and
# "pending" and "failed" are statuses too; those are caught by their enum member or their
# labels' wording instead.
UNAMBIGUOUS = [*MAPPINGS["CATEGORY_LABELS"][1], *MAPPINGS["DESTINATION_LABELS"][1],
               *MAPPINGS["USER_TYPE_LABELS"][1], *MAPPINGS["BLOCKING_KIND_LABELS"][1],
               "running", "staged", "live", "compensated"]
# `"chat": "Chat history"`, `Category.CHAT: "Chat"`: a value mapped to words (a capital or a
# space: not a table name, an address or another value).
DICT_ENTRY = re.compile(
    rf"""(?:["'](?:{_keys(UNAMBIGUOUS)})["']|\b(?:{ENUMS})\.[A-Z_]+)"""
    r"""\s*:\s*["'](?=[A-Z]|[^"'\n]*\s)""")
# A value turned into words where it is shown.
HUMANISED = re.compile(
    r"""\b(?:status|state|user_type|destination|category)(?:\.value)?"""
    r"""(?:\s*\|\s*(?:replace|title|capitalize)\b|\.(?:replace\(|title\(\)|capitalize\(\)))""")


def spelled_labels() -> list[str]:
    """The labels distinctive enough that writing one out elsewhere is a second definition
    (single words such as "Completed" or "Settings" are ordinary prose too)."""
    return [label for mapping, _ in MAPPINGS.values() for label in mapping.values()
            if " " in label]


def offences(text: str, template: bool) -> list[str]:
    found = [f"old wording {w!r}" for w in OLD_WORDINGS if w in text]
    found += [f"label mapping {m.group(0)!r}" for m in DICT_ENTRY.finditer(text)]
    found += [f"value turned into words {m.group(0)!r}" for m in HUMANISED.finditer(text)]
    for label in spelled_labels():
        quoted = re.search(rf"""["']{re.escape(label)}["']""", text)
        if quoted or (template and label in text):
            found.append(f"label written out {label!r}")
    return found


def sources() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if (path.suffix not in (".py", ".html", ".txt") or not path.is_file()
                or SKIPPED & set(rel.parts) or path == LABELS_MODULE
                or path.is_relative_to(FROZEN)):
            continue
        files.append(path)
    return files


@pytest.mark.parametrize("name", list(MAPPINGS))
def test_every_value_has_exactly_one_label(name: str) -> None:
    mapping, values = MAPPINGS[name]
    assert sorted(mapping) == sorted(values), f"{name} must label exactly {values}"
    assert all(label.strip() for label in mapping.values())
    assert len(set(mapping.values())) == len(mapping), f"two values of {name} read the same"


def test_the_labels_are_what_every_reader_gets() -> None:
    env = make_environment()
    render = lambda source, **ctx: env.from_string(source).render(**ctx)  # noqa: E731
    assert render("{{ c|category }}", c=Category.CHAT) == labels.CATEGORY_LABELS["chat"]
    assert render("{{ s|status }}", s="failed_compensated") == labels.STATUS_LABELS[
        InvitationStatus.FAILED_COMPENSATED]
    assert render("{{ 'live'|progress_state }}") == labels.PROGRESS_STATE_LABELS["live"]
    assert render("{{ 'room'|blocking_kind }}") == labels.BLOCKING_KIND_LABELS["room"]
    assert render("{{ d|destination }}", d=RefundDestination.ACCOUNT_CREDIT) == \
        labels.DESTINATION_LABELS["account_credit"]
    assert render("{{ t|user_type }}", t="basic") == "Basic"
    assert labels.category_in_full(Category.PROFILE).startswith("Profile (")
    assert labels.categories_in_words().endswith("contacts and settings")
    from workflows import details  # the operator's summary and the saga's activity names
    assert details.CATEGORY_LABELS is labels.CATEGORY_LABELS


def test_the_scan_finds_a_second_definition() -> None:
    """The check below can fail: each kind of second definition is caught."""
    assert offences('X = {"chat": "Chat history", "contacts": "Contacts"}', template=False)
    assert offences("LABELS = {Category.MEETINGS: 'Meetings'}", template=False)
    assert offences('{{ {"failed_compensated": "Failed, undone"}.get(s) }}', template=True)
    assert offences('{{ p.status.value|replace("_", " ") }}', template=True)
    assert offences("f'{p.user_type.value.title()}'", template=False)
    assert offences("<td>Scheduled meetings and webinars</td>", template=True)
    assert offences('summary = "Moving data"', template=False)
    assert offences("Chat messages", template=True)
    assert not offences('{{ c.category|category }} {"other_user": "oscar@example.com"}',
                        template=True)


def test_no_label_is_defined_twice() -> None:
    found = {str(path.relative_to(ROOT)): hits for path in sources()
             if (hits := offences(path.read_text(encoding="utf-8"),
                                  template="templates" in path.parts))}
    assert not found, f"labels belong in content/labels.py only: {found}"
