"""Every label people read, defined once: the words for a data category, an invitation's
status, a category's progress state, a refund destination, a user type and a blocking
condition. Mail, pages, the console (as Jinja filters, `content.present`), the command line
and the operator's summary in the Web UI (`workflows.details`) all take them from here;
`tests/test_labels.py` fails when a second definition appears.

Pure data and functions, no I/O and nothing non-deterministic: workflow code imports it.
Keys are the enums' values: a StrEnum member equals its value and hashes like it, so
`CATEGORY_LABELS[Category.CHAT]` and `CATEGORY_LABELS["chat"]` are the same entry. The
values themselves are the wire format and never change here; only their wording does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, get_args

from messages.payloads import (
    BlockingItem,
    Category,
    CategoryProgress,
    InvitationStatus,
    RefundDestination,
    UserType,
)

CATEGORY_LABELS: Final[Mapping[str, str]] = {
    Category.PROFILE: "Profile",
    Category.MEETINGS: "Scheduled meetings and webinars",
    Category.RECORDINGS: "Cloud recordings",
    Category.CHAT: "Chat history",
    Category.CONTACTS: "Contacts",
    Category.SETTINGS: "Settings",
}
# What a category holds where its label alone does not say (the invitee's preview).
CATEGORY_CONTENTS: Final[Mapping[str, str]] = {
    Category.PROFILE: "name, picture, time zone, language",
}

STATUS_LABELS: Final[Mapping[str, str]] = {
    InvitationStatus.PENDING: "Pending",
    InvitationStatus.BLOCKED: "Blocked (error 1009)",
    InvitationStatus.AWAITING_REFUND_CHOICE: "Accepted: choosing where the refund goes",
    InvitationStatus.ACCEPTED: "Accepted",
    InvitationStatus.TRANSFERRING: "Moving data",
    InvitationStatus.COMPLETED: "Completed",
    InvitationStatus.DECLINED: "Declined",
    InvitationStatus.EXPIRED: "Expired",
    InvitationStatus.REVOKED: "Revoked",
    InvitationStatus.FAILED_COMPENSATED: "Failed, everything undone",
    InvitationStatus.JOINED_ELSEWHERE: "Joined another account",
    InvitationStatus.CANCELLED: "Cancelled",  # by an operator (the step says so)
    InvitationStatus.NEEDS_ATTENTION: "Needs attention: an undo failed",
}

# CategoryProgress.state, as the pages' progress table shows it.
PROGRESS_STATES: Final[tuple[str, ...]] = get_args(
    CategoryProgress.model_fields["state"].annotation)
PROGRESS_STATE_LABELS: Final[Mapping[str, str]] = {
    "pending": "Waiting",
    "running": "Moving",
    "staged": "Copied",  # copied, waiting for the others and the final commit
    "live": "Done",
    "failed": "Failed",
    "compensated": "Removed again",
}

# Read after an amount ("USD 8.99, to the original payment method") or a verb ("paid ...").
DESTINATION_LABELS: Final[Mapping[str, str]] = {
    RefundDestination.ORIGINAL_PAYMENT_METHOD: "to the original payment method",
    RefundDestination.ACCOUNT_CREDIT: "as credit to the organisation account",
}

USER_TYPE_LABELS: Final[Mapping[str, str]] = {
    UserType.BASIC: "Basic",
    UserType.LICENSED: "Licensed",
}
# What a Basic user loses, said once: the preview, the invitation and the reminder quote it.
BASIC_LIMITS: Final = (
    "A Basic user cannot host meetings longer than 40 minutes with 3 or more participants, "
    "and cannot record meetings to the cloud. An admin of the account can assign a licence "
    "later."
)

# BlockingItem.kind: what keeps the invitee from joining (error 1009 and its kin).
BLOCKING_KINDS: Final[tuple[str, ...]] = get_args(BlockingItem.model_fields["kind"].annotation)
BLOCKING_KIND_LABELS: Final[Mapping[str, str]] = {
    "other_user": "Another user on the account",
    "room": "Meeting room",
    "other_business_account": "Another business account",
    "account_closed": "Closed account",
}


def _label(labels: Mapping[str, str], value: object) -> str:
    """The label of a value (an enum member or its value); an unknown one reads as is."""
    key = str(value)
    return labels.get(key, key)


def category_label(category: object) -> str:
    return _label(CATEGORY_LABELS, category)


def category_in_full(category: object) -> str:
    """"Profile (name, picture, time zone, language)": the label and what it holds."""
    contents = CATEGORY_CONTENTS.get(str(category))
    return f"{category_label(category)} ({contents})" if contents else category_label(category)


def categories_in_words() -> str:
    """"profile, scheduled meetings and webinars, ... and settings": everything that moves,
    in Category order, for a sentence."""
    words = [CATEGORY_LABELS[c].lower() for c in Category]
    return ", ".join(words[:-1]) + " and " + words[-1]


def status_label(status: object) -> str:
    return _label(STATUS_LABELS, status)


def progress_state_label(state: object) -> str:
    return _label(PROGRESS_STATE_LABELS, state)


def destination_label(destination: object) -> str:
    return _label(DESTINATION_LABELS, destination)


def user_type_label(user_type: object) -> str:
    return _label(USER_TYPE_LABELS, user_type)


def blocking_kind_label(kind: object) -> str:
    return _label(BLOCKING_KIND_LABELS, kind)
