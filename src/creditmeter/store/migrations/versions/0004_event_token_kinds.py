"""Usage events record reasoning tokens, 1-hour cache writes and the service tier.

Revision ID: 0004
Revises: 0003

Events stored before this revision had none of them: 0 tokens of each, the standard tier
(``service_tier`` null).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("reasoning_tokens", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("cache_write_1h_tokens", sa.BigInteger, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("service_tier", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("service_tier")
        batch.drop_column("cache_write_1h_tokens")
        batch.drop_column("reasoning_tokens")
