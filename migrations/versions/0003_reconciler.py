"""reconciler main checks and flaky tests

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 22:01:04.700529
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('flaky_tests',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('file', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=19), nullable=False),
    sa.Column('observations', sa.Integer(), nullable=False),
    sa.Column('passes_in_row', sa.Integer(), nullable=False),
    sa.Column('last_source', sa.String(length=16), nullable=False),
    sa.Column('last_tree', sa.String(length=64), nullable=True),
    sa.Column('run_id', sa.String(length=32), nullable=True),
    sa.Column('fix_task_id', sa.String(length=32), nullable=True),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('quarantined_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_flaky_tests_run_id_runs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flaky_tests')),
    sa.UniqueConstraint('name', name=op.f('uq_flaky_tests_name'))
    )
    op.create_index(op.f('ix_flaky_tests_status'), 'flaky_tests', ['status'], unique=False)
    op.create_table('main_checks',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=True),
    sa.Column('sha', sa.String(length=64), nullable=False),
    sa.Column('result', sa.String(length=16), nullable=False),
    sa.Column('checks', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('output', sa.Text(), nullable=False),
    sa.Column('failing_tests', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('quarantined', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=True),
    sa.Column('culprit_sha', sa.String(length=64), nullable=True),
    sa.Column('culprit_task_id', sa.String(length=32), nullable=True),
    sa.Column('revert_task_id', sa.String(length=32), nullable=True),
    sa.Column('bisect', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('screenshot', sa.String(length=128), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_main_checks_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_main_checks'))
    )
    op.create_index('ix_main_checks_run_id_started_at', 'main_checks', ['run_id', 'started_at'], unique=False)
    op.create_index(op.f('ix_main_checks_sha'), 'main_checks', ['sha'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_main_checks_sha'), table_name='main_checks')
    op.drop_index('ix_main_checks_run_id_started_at', table_name='main_checks')
    op.drop_table('main_checks')
    op.drop_index(op.f('ix_flaky_tests_status'), table_name='flaky_tests')
    op.drop_table('flaky_tests')
