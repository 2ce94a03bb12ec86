"""leader epochs: the fencing token of the scheduler leader

Revision ID: 0004
Revises: 0003
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
    op.create_table(
        'leader_epochs',
        sa.Column('name', sa.String(length=64), nullable=False, comment='the role, e.g. scheduler'),
        sa.Column('epoch', sa.BigInteger(), nullable=False,
                  comment='raised by one each time a leader takes office'),
        sa.Column('holder', sa.String(length=255), nullable=False,
                  comment='host:pid of the leader that took office last'),
        sa.Column('taken_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_leader_epochs')),
    )


def downgrade() -> None:
    op.drop_table('leader_epochs')
