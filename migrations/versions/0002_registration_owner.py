"""registration owner: a registering dataset row names the registration that owns it, with a lease

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # rows left "registering" by an older version get no owner: a registration may take them over at once
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            'registration_owner', sa.String(length=128), nullable=True,
            comment='host:pid:token of the registration under way; NULL once registered'))
        batch_op.add_column(sa.Column(
            'registration_lease_until', sa.DateTime(timezone=True), nullable=True,
            comment='the owner renews it while it uploads; past it, another registration may take over'))
        batch_op.create_index('ix_datasets_adopted_prefix', ['location_prefix'], unique=False,
                              sqlite_where=sa.text("location_prefix != ''"),
                              postgresql_where=sa.text("location_prefix != ''"))


def downgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_index('ix_datasets_adopted_prefix')
        batch_op.drop_column('registration_lease_until')
        batch_op.drop_column('registration_owner')
