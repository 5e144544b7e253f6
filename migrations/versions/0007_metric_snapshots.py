"""metric snapshots: the monitor's figures of a run at every tick, a table of their own (the history charts)

They were `metrics.snapshot` events: those move here (and leave the event feed), and the monitor prunes the
table by age and by rows per run (SNAPSHOT_RETENTION_HOURS, SNAPSHOT_MAX_ROWS).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 04:20:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'metric_snapshots',
        sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('taken_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_metric_snapshots_run_id_runs'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_metric_snapshots')),
    )
    op.create_index('ix_metric_snapshots_run_id_taken_at', 'metric_snapshots', ['run_id', 'taken_at'])
    op.execute("insert into metric_snapshots (run_id, taken_at, data) select run_id, created_at, data from events "
               "where kind = 'metrics.snapshot' and run_id is not null order by id")
    op.execute("delete from events where kind = 'metrics.snapshot'")


def downgrade() -> None:
    op.execute("insert into events (run_id, kind, message, data, created_at) select run_id, 'metrics.snapshot', '', "
               "data, taken_at from metric_snapshots order by id")
    op.drop_index('ix_metric_snapshots_run_id_taken_at', table_name='metric_snapshots')
    op.drop_table('metric_snapshots')
