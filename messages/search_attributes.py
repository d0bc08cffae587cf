"""Custom search attributes, defined once. `make run` registers them on the dev server;
see README ("Operators") for the `temporal operator search-attribute create` commands."""

from temporalio.common import SearchAttributeKey

STATUS = SearchAttributeKey.for_keyword("InvitationStatus")
ACCOUNT_ID = SearchAttributeKey.for_keyword("InvitationAccountId")
INVITEE_EMAIL = SearchAttributeKey.for_keyword("InviteeEmail")
USER_TYPE = SearchAttributeKey.for_keyword("InvitationUserType")
REFUND_MINOR = SearchAttributeKey.for_int("InvitationRefundMinor")
# What needs an operator: "none", "finalising_stuck", "needs_attention", "mail_undelivered".
ALERT = SearchAttributeKey.for_keyword("InvitationAlert")
NO_ALERT = "none"
# The claimed domain a sweep (workflows/domain.py) works on: on the sweep and its invitations.
DOMAIN = SearchAttributeKey.for_keyword("InvitationDomain")

ALL = (STATUS, ACCOUNT_ID, INVITEE_EMAIL, USER_TYPE, REFUND_MINOR, ALERT, DOMAIN)


def cli_flags() -> list[str]:
    """`--search-attribute Name=Type` flags for `temporal server start-dev`."""
    kinds = {"KEYWORD": "Keyword", "INT": "Int"}
    return [
        f"--search-attribute={key.name}={kinds[key.indexed_value_type.name.split('_')[-1]]}"
        for key in ALL
    ]
