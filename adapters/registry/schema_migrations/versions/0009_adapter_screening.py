"""adapter screening signals

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 20:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('adapters') as batch:
        batch.add_column(sa.Column('screening', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('adapters') as batch:
        batch.drop_column('screening')
