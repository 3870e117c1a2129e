"""Plan catalogs, subscriptions, enterprise allocations and the daily usage rollup.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "plan_catalogs",
        sa.Column("version", SeqType, primary_key=True, autoincrement=True),
        sa.Column("loaded_at_us", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("catalog", sa.Text, nullable=False),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("account_id", sa.String(255), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("plan_id", sa.String(255), nullable=False),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("seats", sa.Integer, nullable=True),
        sa.Column("anchor_us", sa.BigInteger, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("next_period", sa.Integer, nullable=False),
        sa.Column("next_start_us", sa.BigInteger, nullable=True),
        sa.Column("cancel_at_us", sa.BigInteger, nullable=True),
        sa.Column("cancelled_at_us", sa.BigInteger, nullable=True),
        sa.Column("request_fp", sa.String(64), nullable=False),
    )
    op.create_index("ix_subscriptions_account_id", "subscriptions", ["account_id"])
    op.create_index("ix_subscriptions_next_start", "subscriptions", ["next_start_us"])
    op.create_table(
        "allocations",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("enterprise_id", sa.String(255), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("member_id", sa.String(255), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("amount_uc", sa.BigInteger, nullable=False),
        sa.Column("parts", sa.Text, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("revoked_at_us", sa.BigInteger, nullable=True),
        sa.Column("returned_uc", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("request_fp", sa.String(64), nullable=False),
    )
    op.create_index("ix_allocations_enterprise_id", "allocations", ["enterprise_id"])
    op.create_table(
        "usage_days",
        sa.Column("account_id", sa.String(255), primary_key=True),
        sa.Column("day_us", sa.BigInteger, primary_key=True),
        sa.Column("cost_uc", sa.BigInteger, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
    )
    # Existing events (none before this revision is used, but an upgrade stays exact).
    op.execute("INSERT INTO usage_days (account_id, day_us, cost_uc, events) "
               "SELECT account_id, ts_us - ts_us % 86400000000, SUM(cost_uc), COUNT(*) FROM events "
               "GROUP BY account_id, ts_us - ts_us % 86400000000")


def downgrade() -> None:
    op.drop_table("usage_days")
    op.drop_index("ix_allocations_enterprise_id", table_name="allocations")
    op.drop_table("allocations")
    op.drop_index("ix_subscriptions_next_start", table_name="subscriptions")
    op.drop_index("ix_subscriptions_account_id", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_table("plan_catalogs")
