"""feature blocking: the feature a blocked one waits on (failed for good), and why; merge status widened

merge_attempts.status is one character wider since MergeStatus gained `abandoned` (db5ec46).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 01:16:34.944886
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('features', sa.Column('blocked_by', sa.String(length=64), nullable=True))
    op.add_column('features', sa.Column('status_reason', sa.Text(), nullable=True))
    op.alter_column('merge_attempts', 'status', existing_type=sa.String(length=16), type_=sa.String(length=17),
                    existing_nullable=False)


def downgrade() -> None:
    op.alter_column('merge_attempts', 'status', existing_type=sa.String(length=17), type_=sa.String(length=16),
                    existing_nullable=False)
    op.drop_column('features', 'status_reason')
    op.drop_column('features', 'blocked_by')
