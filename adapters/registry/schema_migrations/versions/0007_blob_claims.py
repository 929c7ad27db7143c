"""blob claims

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 16:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blob_claims',
                    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
                    sa.Column('sha256', sa.String(length=64), nullable=False),
                    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_blob_claims_sha256', 'blob_claims', ['sha256'])
    op.create_index('ix_blob_claims_claimed_at', 'blob_claims', ['claimed_at'])


def downgrade() -> None:
    op.drop_index('ix_blob_claims_claimed_at', table_name='blob_claims')
    op.drop_index('ix_blob_claims_sha256', table_name='blob_claims')
    op.drop_table('blob_claims')
