"""steering and live steps: a paused run, a caller's request key per task, live transcript pieces

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 00:50:42.320847
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('live_steps',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('task_id', sa.String(length=32), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('lines', sa.Text(), nullable=False),
    sa.Column('events', sa.Integer(), nullable=False),
    sa.Column('gate_calls', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_live_steps_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_live_steps'))
    )
    op.create_index('ix_live_steps_task_id_attempt', 'live_steps', ['task_id', 'attempt', 'id'], unique=False)
    op.add_column('runs', sa.Column('paused_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('tasks', sa.Column('request_key', sa.String(length=128), nullable=True))
    op.create_index('uq_tasks_run_id_request_key', 'tasks', ['run_id', 'request_key'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_tasks_run_id_request_key', table_name='tasks')
    op.drop_column('tasks', 'request_key')
    op.drop_column('runs', 'paused_at')
    op.drop_index('ix_live_steps_task_id_attempt', table_name='live_steps')
    op.drop_table('live_steps')
