"""Notices: which reader marked which alert read.

Revision ID: 0007
Revises: 0006

One row per (alert, reader) once the reader marked the alert read; nothing else changes.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notice_reads",
        sa.Column("alert_seq", sa.BigInteger, sa.ForeignKey("alerts.seq"), nullable=False),
        sa.Column("reader", sa.String(300), nullable=False),
        sa.Column("read_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("alert_seq", "reader", name="pk_notice_reads"),
    )


def downgrade() -> None:
    op.drop_table("notice_reads")
