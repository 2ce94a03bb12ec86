"""tiers remember the place their copies are on

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08 01:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # '' for an existing tier: its place is recorded from the config the next time the catalog is opened
    with op.batch_alter_table('tiers') as batch:
        batch.add_column(sa.Column(
            'backend_identity', sa.String(length=2048), nullable=False, server_default='',
            comment="normalised endpoint+bucket+prefix or directory the catalog's copies are on; never credentials",
        ))


def downgrade() -> None:
    with op.batch_alter_table('tiers') as batch:
        batch.drop_column('backend_identity')
