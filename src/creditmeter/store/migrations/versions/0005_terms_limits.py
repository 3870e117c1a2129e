"""Accounts keep their terms (recurring allowances, limits, the policy when credits run out);
holds record the key they were made with and whether they were made for a fallback model.

Revision ID: 0005
Revises: 0004

Accounts and holds stored before this revision have no terms (null), no key and no fallback.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("terms", sa.Text, nullable=True))
    with op.batch_alter_table("holds") as batch:
        batch.add_column(sa.Column("key_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("fallback", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_index("ix_holds_account_created", "holds", ["account_id", "created_at_us"])


def downgrade() -> None:
    op.drop_index("ix_holds_account_created", table_name="holds")
    with op.batch_alter_table("holds") as batch:
        batch.drop_column("fallback")
        batch.drop_column("key_id")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("terms")
