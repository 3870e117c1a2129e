"""The credits ledger: accounts, grants, entries, events, holds, price versions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("overage_uc", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("overage_since_us", sa.BigInteger, nullable=True),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "grants",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(255), nullable=False, unique=True),
        sa.Column("account_id", sa.String(255), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount_uc", sa.BigInteger, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("effective_at_us", sa.BigInteger, nullable=False),
        sa.Column("expires_at_us", sa.BigInteger, nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("voided_at_us", sa.BigInteger, nullable=True),
        sa.Column("used_uc", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("held_uc", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("closed_uc", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("request_fp", sa.String(64), nullable=False),
    )
    op.create_index("ix_grants_account_id", "grants", ["account_id"])
    op.create_table(
        "entries",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("grant_id", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount_uc", sa.BigInteger, nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("hold_id", sa.String(255), nullable=True),
        sa.Column("corrects", sa.BigInteger, nullable=True),
        sa.Column("note", sa.String(255), nullable=False),
        sa.Column("recorded_at_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_entries_account_id", "entries", ["account_id"])
    op.create_table(
        "events",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(255), nullable=False, unique=True),
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("ts_us", sa.BigInteger, nullable=False),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger, nullable=False),
        sa.Column("quantities", sa.Text, nullable=True),
        sa.Column("metadata", sa.Text, nullable=True),
        sa.Column("cost_uc", sa.BigInteger, nullable=False),
        sa.Column("overage_uc", sa.BigInteger, nullable=False),
        sa.Column("allocations", sa.Text, nullable=False),
        sa.Column("price_version", sa.Integer, nullable=True),
        sa.Column("hold_id", sa.String(255), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("recorded_at_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_events_account_ts", "events", ["account_id", "ts_us", "seq"])
    op.create_table(
        "holds",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("amount_uc", sa.BigInteger, nullable=False),
        sa.Column("parts", sa.Text, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("expires_at_us", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("settled_event_id", sa.String(255), nullable=True),
        sa.Column("ended_at_us", sa.BigInteger, nullable=True),
        sa.Column("request_fp", sa.String(64), nullable=False),
    )
    op.create_index("ix_holds_account_status", "holds", ["account_id", "status"])
    op.create_index("ix_holds_status_expires", "holds", ["status", "expires_at_us"])
    op.create_table(
        "price_versions",
        sa.Column("version", SeqType, primary_key=True, autoincrement=True),
        sa.Column("effective_at_us", sa.BigInteger, nullable=False),
        sa.Column("loaded_at_us", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("catalog", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("price_versions", "holds", "events", "entries", "grants", "accounts"):
        op.drop_table(table)
