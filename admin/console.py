"""The admin console (issue #15): sign in by a mailed link, then User Management > Users
(members, and the Pending tab with Resend and Revoke), Add users (addresses or a CSV file,
per-row results), and one invitation's live progress.

Every page acts for the signed-in admin's account only (`Principal.account_id`): another
account's invitation is 404. Inviting goes through `InvitationsClient` with the signed-in
admin as the inviter, so validation and errors are the client's, field by field. Forms
carry a CSRF token (admin/sessions.py); a POST without a valid one changes nothing (403).
"""

from __future__ import annotations

from fastapi import APIRouter

from admin import console_add, console_invitation, console_signin, console_users

router = APIRouter()
for part in (console_signin, console_users, console_add, console_invitation):
    router.include_router(part.router)
