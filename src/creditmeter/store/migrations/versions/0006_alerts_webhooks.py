"""Alerts (the outbox every raised alert is kept in) and webhooks: endpoints, the deliveries of
alerts to them, and each delivery's attempts.

Revision ID: 0006
Revises: 0005

Nothing stored before this revision changes.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("dedupe_key", sa.String(255), nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("recorded_at_us", sa.BigInteger, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("routed_at_us", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("account_id", "dedupe_key", name="uq_alerts_account_dedupe"),
    )
    op.create_index("ix_alerts_account_seq", "alerts", ["account_id", "seq"])
    op.create_index("ix_alerts_unrouted", "alerts", ["seq"], sqlite_where=sa.text("routed_at_us IS NULL"),
                    postgresql_where=sa.text("routed_at_us IS NULL"))
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("events", sa.Text, nullable=True),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("disabled_at_us", sa.BigInteger, nullable=True),
        sa.Column("disabled_reason", sa.String(255), nullable=True),
        sa.Column("failures", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("failing_since_us", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("endpoint_id", sa.String(64), sa.ForeignKey("webhook_endpoints.id"), nullable=False),
        sa.Column("alert_seq", sa.BigInteger, sa.ForeignKey("alerts.seq"), nullable=False),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("next_at_us", sa.BigInteger, nullable=False),
        sa.Column("horizon_at_us", sa.BigInteger, nullable=False),
        sa.Column("lease_until_us", sa.BigInteger, nullable=True),
        sa.Column("lease_token", sa.String(64), nullable=True),
        sa.Column("ended_at_us", sa.BigInteger, nullable=True),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.String(255), nullable=True),
        sa.UniqueConstraint("endpoint_id", "alert_seq", name="uq_webhook_deliveries_endpoint_alert"),
    )
    op.create_index("ix_webhook_deliveries_endpoint_seq", "webhook_deliveries", ["endpoint_id", "seq"])
    pending = sa.text("status = 'pending'")
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["next_at_us"],
                    sqlite_where=pending, postgresql_where=pending)
    op.create_table(
        "webhook_attempts",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.String(64), sa.ForeignKey("webhook_deliveries.id"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("latency_ms", sa.Integer, nullable=True),
        sa.Column("error", sa.String(255), nullable=True),
    )
    op.create_index("ix_webhook_attempts_delivery", "webhook_attempts", ["delivery_id", "seq"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    op.drop_table("alerts")
