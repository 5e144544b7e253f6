"""the gate: presubmit runs on handoffs; batch, position, head, tested tree and gate record on merge attempts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 20:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONB = postgresql.JSONB(astext_type=sa.Text())


def upgrade() -> None:
    op.add_column('handoffs', sa.Column('presubmit', JSONB, nullable=False, server_default='[]'))
    op.add_column('merge_attempts', sa.Column('head_sha', sa.String(length=64), nullable=True))
    op.add_column('merge_attempts', sa.Column('batch_id', sa.String(length=32), nullable=True))
    op.add_column('merge_attempts', sa.Column('position', sa.Integer(), nullable=True))
    op.add_column('merge_attempts', sa.Column('tree_sha', sa.String(length=64), nullable=True))
    op.add_column('merge_attempts', sa.Column('gate', JSONB, nullable=False, server_default='{}'))
    op.create_index(op.f('ix_merge_attempts_batch_id'), 'merge_attempts', ['batch_id'], unique=False)
    op.alter_column('handoffs', 'presubmit', server_default=None)
    op.alter_column('merge_attempts', 'gate', server_default=None)


def downgrade() -> None:
    op.drop_index(op.f('ix_merge_attempts_batch_id'), table_name='merge_attempts')
    for name in ('gate', 'tree_sha', 'position', 'batch_id', 'head_sha'):
        op.drop_column('merge_attempts', name)
    op.drop_column('handoffs', 'presubmit')
