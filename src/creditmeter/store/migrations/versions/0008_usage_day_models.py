"""The daily usage rollup is kept per model too, and sums each token kind, so the usage
summaries (by day or by model, of all models or one) read the rollup.

Revision ID: 0008
Revises: 0007

The rollup is made anew from the events (the events with no model under the model "").
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TOKENS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
          "reasoning_tokens", "cache_write_1h_tokens")
DAY = "ts_us - ts_us % 86400000000"


def upgrade() -> None:
    op.drop_table("usage_days")
    op.create_table(
        "usage_days",
        sa.Column("account_id", sa.String(255), primary_key=True),
        sa.Column("day_us", sa.BigInteger, primary_key=True),
        sa.Column("model", sa.String(255), primary_key=True),
        sa.Column("cost_uc", sa.BigInteger, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        *[sa.Column(name, sa.BigInteger, nullable=False) for name in TOKENS],
    )
    op.execute(f"INSERT INTO usage_days (account_id, day_us, model, cost_uc, events, {', '.join(TOKENS)}) "
               f"SELECT account_id, {DAY}, COALESCE(model, ''), SUM(cost_uc), COUNT(*), "
               f"{', '.join(f'SUM({name})' for name in TOKENS)} FROM events "
               f"GROUP BY account_id, {DAY}, COALESCE(model, '')")


def downgrade() -> None:
    op.drop_table("usage_days")
    op.create_table(
        "usage_days",
        sa.Column("account_id", sa.String(255), primary_key=True),
        sa.Column("day_us", sa.BigInteger, primary_key=True),
        sa.Column("cost_uc", sa.BigInteger, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
    )
    op.execute(f"INSERT INTO usage_days (account_id, day_us, cost_uc, events) "
               f"SELECT account_id, {DAY}, SUM(cost_uc), COUNT(*) FROM events GROUP BY account_id, {DAY}")
