"""API keys, enterprise members, and a covering index for period sums.

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
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(255), sa.ForeignKey("accounts.id"), nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("revoked_at_us", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_api_keys_account_id", "api_keys", ["account_id"])
    op.create_table(
        "members",
        sa.Column("enterprise_id", sa.String(255), sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("account_id", sa.String(255), sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("added_at_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_members_account", "members", ["account_id"])
    op.drop_index("ix_events_account_ts", table_name="events")
    op.create_index("ix_events_account_ts", "events", ["account_id", "ts_us", "seq", "cost_uc"])


def downgrade() -> None:
    op.drop_index("ix_events_account_ts", table_name="events")
    op.create_index("ix_events_account_ts", "events", ["account_id", "ts_us", "seq"])
    op.drop_index("ix_members_account", table_name="members")
    op.drop_table("members")
    op.drop_index("ix_api_keys_account_id", table_name="api_keys")
    op.drop_table("api_keys")
