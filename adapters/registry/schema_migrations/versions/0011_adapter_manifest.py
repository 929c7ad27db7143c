"""adapter manifests: workers fetch adapters from the blob store by this content address

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 21:20:00
"""
import hashlib

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('adapters') as batch:
        batch.add_column(sa.Column('manifest_sha256', sa.String(64), nullable=True))
    # Existing rows: the sha256 of "<config sha256>:<weights sha256>" (Adapter.manifest). The
    # manifest blob itself is written when a fetching worker first needs it.
    adapters = sa.table('adapters', sa.column('id', sa.Integer), sa.column('config_sha256', sa.String),
                        sa.column('weights_sha256', sa.String), sa.column('manifest_sha256', sa.String))
    bind = op.get_bind()
    for row in bind.execute(sa.select(adapters.c.id, adapters.c.config_sha256, adapters.c.weights_sha256)):
        digest = hashlib.sha256(f"{row.config_sha256}:{row.weights_sha256}".encode()).hexdigest()
        bind.execute(adapters.update().where(adapters.c.id == row.id).values(manifest_sha256=digest))


def downgrade() -> None:
    with op.batch_alter_table('adapters') as batch:
        batch.drop_column('manifest_sha256')
