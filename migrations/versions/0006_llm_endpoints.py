"""llm endpoints: each call's endpoint, when it started, its attempt, and whether its usage was estimated

`endpoint` names the LLM_ENDPOINTS entry that answered ('' for rows before endpoints existed);
`started_at` lets GPU-hour endpoints be charged by the wall-clock time they were in use (overlapping
calls share it); `attempt` lets the spend of attempts that never landed be told from the one that did.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 04:05:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('llm_calls', sa.Column('endpoint', sa.String(length=64), server_default='', nullable=False))
    op.add_column('llm_calls', sa.Column('usage_estimated', sa.Boolean(), server_default=sa.false(),
                                         nullable=False))
    op.add_column('llm_calls', sa.Column('started_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('llm_calls', sa.Column('attempt', sa.Integer(), nullable=True))
    op.create_index('ix_llm_calls_run_id_endpoint', 'llm_calls', ['run_id', 'endpoint'])


def downgrade() -> None:
    op.drop_index('ix_llm_calls_run_id_endpoint', table_name='llm_calls')
    op.drop_column('llm_calls', 'attempt')
    op.drop_column('llm_calls', 'started_at')
    op.drop_column('llm_calls', 'usage_estimated')
    op.drop_column('llm_calls', 'endpoint')
