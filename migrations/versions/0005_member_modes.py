"""member modes and mtimes; directories and symbolic links of datasets

Revision ID: 0005
Revises: 0004
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
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            'mode', sa.Integer(), nullable=True,
            comment='permission bits of the registered file (0o644...); null when not known (adopted objects)'))
        batch_op.add_column(sa.Column(
            'mtime_ns', sa.BigInteger(), nullable=True,
            comment='modification time of the registered file, ns since the epoch; null when not known'))
    op.create_table('tree_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False, comment='relative path inside the dataset'),
    sa.Column('kind', sa.String(length=8), nullable=False, comment='dir | link'),
    sa.Column('target', sa.String(length=4096), nullable=True,
              comment="a link's target, relative to the link's directory and inside the dataset"),
    sa.Column('mode', sa.Integer(), nullable=True, comment="a directory's permission bits"),
    sa.Column('mtime_ns', sa.BigInteger(), nullable=True, comment='ns since the epoch'),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_tree_entries_dataset_id_datasets'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tree_entries')),
    sa.UniqueConstraint('dataset_id', 'path', name='uq_tree_entries_dataset_path')
    )
    with op.batch_alter_table('tree_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tree_entries_dataset_id'), ['dataset_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tree_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tree_entries_dataset_id'))
    op.drop_table('tree_entries')
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_column('mtime_ns')
        batch_op.drop_column('mode')
