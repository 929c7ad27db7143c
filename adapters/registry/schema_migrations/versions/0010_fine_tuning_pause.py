"""fine-tuning jobs can be paused

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 21:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('fine_tuning_jobs') as batch:
        batch.add_column(sa.Column('pause_requested', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('fine_tuning_jobs') as batch:
        batch.drop_column('pause_requested')
