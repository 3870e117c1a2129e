"""Holds: the open ones of an account found by their expiry.

Revision ID: 0009
Revises: 0008

A command loads only the holds it needs: the account's open holds past their ttl (an index on
the open holds' (account, expiry), which replaces the (account, status) one) and the hold it
settles or releases (by id). What open holds hold in all is summed through the same index.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OPEN = sa.text("status = 'open'")


def upgrade() -> None:
    op.create_index("ix_holds_open_expires", "holds", ["account_id", "expires_at_us"],
                    sqlite_where=OPEN, postgresql_where=OPEN)
    op.drop_index("ix_holds_account_status", table_name="holds")


def downgrade() -> None:
    op.create_index("ix_holds_account_status", "holds", ["account_id", "status"])
    op.drop_index("ix_holds_open_expires", table_name="holds")
