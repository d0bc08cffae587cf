"""Join claims (one person joins one account at a time) and case-insensitive email
identity (a unique index on lower(email)).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

from records.types import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "joinclaim",
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("invitation_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("org_account_id", sa.Integer(), nullable=False),
        sa.Column("source_account_id", sa.Integer(), nullable=True),
        sa.Column("user_type", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_account_id"], ["account.id"]),
        sa.PrimaryKeyConstraint("email"),
    )
    with op.batch_alter_table("joinclaim", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_joinclaim_invitation_id"), ["invitation_id"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_joinclaim_org_account_id"), ["org_account_id"],
                              unique=False)
    # Rows stored before emails were normalised may be mixed-case: one identity each.
    op.create_index("uq_user_email_lower", "user", [sa.text("lower(email)")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_user_email_lower", table_name="user")
    with op.batch_alter_table("joinclaim", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_joinclaim_org_account_id"))
        batch_op.drop_index(batch_op.f("ix_joinclaim_invitation_id"))
    op.drop_table("joinclaim")
