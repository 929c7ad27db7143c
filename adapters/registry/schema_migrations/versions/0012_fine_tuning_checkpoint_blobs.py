"""fine-tuning checkpoints in the blob store: a job taken over on another machine resumes

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 23:50:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('fine_tuning_jobs') as batch:
        batch.add_column(sa.Column('checkpoint_sha256', sa.String(64), nullable=True))
        batch.add_column(sa.Column('checkpoint_step', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('fine_tuning_jobs') as batch:
        batch.drop_column('checkpoint_step')
        batch.drop_column('checkpoint_sha256')
