"""adapter eval sets (kept for base-model migrations)

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("adapters") as batch_op:
        batch_op.add_column(sa.Column("eval_set_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("eval_scoring", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("eval_items", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("adapters") as batch_op:
        batch_op.drop_column("eval_items")
        batch_op.drop_column("eval_scoring")
        batch_op.drop_column("eval_set_sha256")
