"""fine-tuning jobs that continue an existing adapter

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 18:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('fine_tuning_jobs') as batch:
        batch.add_column(sa.Column('init_weights_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('fine_tuning_jobs') as batch:
        batch.drop_column('init_weights_sha256')
