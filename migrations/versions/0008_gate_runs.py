"""gate runs: the merge queue's requests to the gate workers, their leases and results

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 01:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    json = postgresql.JSONB(astext_type=sa.Text())
    op.create_table(
        'gate_runs',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('run_id', sa.String(length=32), nullable=True),
        sa.Column('batch_id', sa.String(length=32), nullable=False),
        sa.Column('stage', sa.String(length=32), nullable=False),
        sa.Column('lane', sa.Integer(), nullable=True),
        sa.Column('sha', sa.String(length=64), nullable=False),
        sa.Column('base', sa.String(length=64), nullable=False),
        sa.Column('tree', sa.String(length=64), nullable=False),
        sa.Column('options', json, nullable=False),
        sa.Column('spec', json, nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('worker', sa.String(length=128), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('result', json, nullable=False),
        sa.Column('tested_tree', sa.String(length=64), nullable=True),
        sa.Column('seconds', sa.Float(), nullable=True),
        sa.Column('outcome', sa.String(length=16), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_gate_runs_run_id_runs'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_gate_runs')),
    )
    op.create_index('ix_gate_runs_state', 'gate_runs', ['state', 'created_at'])
    op.create_index(op.f('ix_gate_runs_run_id'), 'gate_runs', ['run_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_gate_runs_run_id'), table_name='gate_runs')
    op.drop_index('ix_gate_runs_state', table_name='gate_runs')
    op.drop_table('gate_runs')
