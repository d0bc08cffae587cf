"""audit events once: a unique index on (invitation_id, kind, at)

`records.changes.insert_event_once` keys an invitation's audit events by (invitation,
kind, time): the workflow's clock gives a retried activity the same key. The index makes
"once" hold on PostgreSQL too, where two overlapping attempts could both insert after
both found no row; duplicates written before it are removed first (the oldest is kept).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0009'
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM auditevent WHERE invitation_id IS NOT NULL AND id NOT IN ("
        " SELECT min(id) FROM auditevent WHERE invitation_id IS NOT NULL"
        " GROUP BY invitation_id, kind, at)")
    with op.batch_alter_table('auditevent', schema=None) as batch_op:
        batch_op.create_index('uq_auditevent_once', ['invitation_id', 'kind', 'at'],
                              unique=True)


def downgrade() -> None:
    with op.batch_alter_table('auditevent', schema=None) as batch_op:
        batch_op.drop_index('uq_auditevent_once')
