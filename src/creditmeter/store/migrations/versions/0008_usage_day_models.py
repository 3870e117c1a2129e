"""The daily usage rollup sums each token kind too, so a summary by day reads the rollup.

Revision ID: 0008
Revises: 0007

The new columns of the days already stored are filled from their events.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TOKENS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
          "reasoning_tokens", "cache_write_1h_tokens")


def upgrade() -> None:
    with op.batch_alter_table("usage_days") as batch:
        for name in TOKENS:
            batch.add_column(sa.Column(name, sa.BigInteger, nullable=False, server_default="0"))
    # UPDATE … FROM: PostgreSQL, and SQLite since 3.33.
    sums = ", ".join(f"SUM({name}) AS {name}" for name in TOKENS)
    op.execute(f"UPDATE usage_days SET {', '.join(f'{name} = d.{name}' for name in TOKENS)} "
               f"FROM (SELECT account_id, ts_us - ts_us % 86400000000 AS day_us, {sums} FROM events "
               f"GROUP BY account_id, ts_us - ts_us % 86400000000) AS d "
               f"WHERE usage_days.account_id = d.account_id AND usage_days.day_us = d.day_us")


def downgrade() -> None:
    with op.batch_alter_table("usage_days") as batch:
        for name in reversed(TOKENS):
            batch.drop_column(name)
