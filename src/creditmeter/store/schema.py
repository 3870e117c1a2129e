"""The database schema as SQLAlchemy Core tables (what queries use).

Migrations in ``migrations/versions`` create and change it; a test checks both agree.
Amounts are BIGINT µc (``*_uc``), instants BIGINT microseconds since the epoch UTC (``*_us``).
Append-only tables: ``events`` (charges, with the packages that paid), ``entries`` (every other
ledger movement) and ``price_versions``. ``grants``, ``holds`` and ``accounts`` carry cached
counters and states that ``reconcile`` re-derives from the append-only tables.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# SQLite only auto-numbers an INTEGER PRIMARY KEY; elsewhere the key is a BIGINT identity.
SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The token counts of ``events`` that ``usage_days`` sums per day too, in the summary's order.
DAY_TOKENS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
              "reasoning_tokens", "cache_write_1h_tokens")

accounts = sa.Table(
    "accounts", metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at_us", sa.BigInteger, nullable=False),
    sa.Column("overage_uc", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("overage_since_us", sa.BigInteger, nullable=True),
    # Bumped by every write to the account's book: lets a process reuse a book it loaded before.
    sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
    # What recurs on the account (creditmeter.terms), as JSON; null: nothing.
    sa.Column("terms", sa.Text, nullable=True),
)

grants = sa.Table(
    "grants", metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(255), nullable=False, unique=True),
    sa.Column("account_id", sa.String(255), sa.ForeignKey("accounts.id"), nullable=False, index=True),
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

entries = sa.Table(
    "entries", metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(255), nullable=False, index=True),
    sa.Column("grant_id", sa.String(255), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("amount_uc", sa.BigInteger, nullable=False),
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("hold_id", sa.String(255), nullable=True),
    sa.Column("corrects", sa.BigInteger, nullable=True),
    sa.Column("note", sa.String(255), nullable=False),
    sa.Column("recorded_at_us", sa.BigInteger, nullable=False),
)

events = sa.Table(
    "events", metadata,
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
    # Later token kinds (each not also counted above) and the tier (null: standard).
    sa.Column("reasoning_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("cache_write_1h_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("service_tier", sa.String(16), nullable=True),
    # Newest-first pages, time ranges, and period sums read from the index alone (cost_uc).
    sa.Index("ix_events_account_ts", "account_id", "ts_us", "seq", "cost_uc"),
)

holds = sa.Table(
    "holds", metadata,
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
    sa.Column("key_id", sa.String(64), nullable=True),
    sa.Column("fallback", sa.Boolean, nullable=False, server_default=sa.false()),
    # An account's open holds by expiry: those past their ttl, and what open holds hold in all.
    sa.Index("ix_holds_open_expires", "account_id", "expires_at_us", sqlite_where=sa.text("status = 'open'"),
             postgresql_where=sa.text("status = 'open'")),
    sa.Index("ix_holds_status_expires", "status", "expires_at_us"),
    sa.Index("ix_holds_account_created", "account_id", "created_at_us"),
)

price_versions = sa.Table(
    "price_versions", metadata,
    sa.Column("version", SeqType, primary_key=True, autoincrement=True),
    sa.Column("effective_at_us", sa.BigInteger, nullable=False),
    sa.Column("loaded_at_us", sa.BigInteger, nullable=False),
    sa.Column("source", sa.String(255), nullable=False),
    sa.Column("catalog", sa.Text, nullable=False),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    # SHA-256 of the key; the key itself is shown once and never stored.
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("account_id", sa.String(255), sa.ForeignKey("accounts.id"), nullable=True, index=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("created_at_us", sa.BigInteger, nullable=False),
    sa.Column("revoked_at_us", sa.BigInteger, nullable=True),
)

members = sa.Table(
    "members", metadata,
    sa.Column("enterprise_id", sa.String(255), sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("account_id", sa.String(255), sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("added_at_us", sa.BigInteger, nullable=False),
    sa.Index("ix_members_account", "account_id"),
)

plan_catalogs = sa.Table(
    "plan_catalogs", metadata,
    sa.Column("version", SeqType, primary_key=True, autoincrement=True),
    sa.Column("loaded_at_us", sa.BigInteger, nullable=False),
    sa.Column("source", sa.String(255), nullable=False),
    sa.Column("catalog", sa.Text, nullable=False),
)

subscriptions = sa.Table(
    "subscriptions", metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("account_id", sa.String(255), sa.ForeignKey("accounts.id"), nullable=False, index=True),
    # The plan's terms when subscribed (a later catalog does not change a running subscription).
    sa.Column("plan_id", sa.String(255), nullable=False),
    sa.Column("plan", sa.Text, nullable=False),
    sa.Column("seats", sa.Integer, nullable=True),
    sa.Column("anchor_us", sa.BigInteger, nullable=False),
    sa.Column("created_at_us", sa.BigInteger, nullable=False),
    # The first period not yet granted; renewals are idempotent by (subscription, period start)
    # because each period's grant id is derived from them (grants.id is unique).
    sa.Column("next_period", sa.Integer, nullable=False),
    sa.Column("next_start_us", sa.BigInteger, nullable=True),  # null: nothing more to grant
    sa.Column("cancel_at_us", sa.BigInteger, nullable=True),
    sa.Column("cancelled_at_us", sa.BigInteger, nullable=True),
    sa.Column("request_fp", sa.String(64), nullable=False),
    sa.Index("ix_subscriptions_next_start", "next_start_us"),
)

allocations = sa.Table(
    "allocations", metadata,
    # The member's enterprise grant has this id too.
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("enterprise_id", sa.String(255), sa.ForeignKey("accounts.id"), nullable=False, index=True),
    sa.Column("member_id", sa.String(255), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("amount_uc", sa.BigInteger, nullable=False),
    sa.Column("parts", sa.Text, nullable=False),  # the pool grants it came from: [[grant, µc], …]
    sa.Column("created_at_us", sa.BigInteger, nullable=False),
    sa.Column("revoked_at_us", sa.BigInteger, nullable=True),
    sa.Column("returned_uc", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("request_fp", sa.String(64), nullable=False),
)

usage_days = sa.Table(
    "usage_days", metadata,
    # Credits, events and tokens charged per account, UTC day (by event time) and model ("": the
    # events with no model), kept with every charge, so the usage of a period, and its summary
    # by day or by model, is read from a few rows per day however many events it had.
    sa.Column("account_id", sa.String(255), primary_key=True),
    sa.Column("day_us", sa.BigInteger, primary_key=True),
    sa.Column("model", sa.String(255), primary_key=True),
    sa.Column("cost_uc", sa.BigInteger, nullable=False),
    sa.Column("events", sa.BigInteger, nullable=False),
    *[sa.Column(name, sa.BigInteger, nullable=False) for name in DAY_TOKENS],
)

alerts = sa.Table(
    "alerts", metadata,
    # The outbox: every alert raised, once per (account, dedupe key), in the transaction that
    # raised it (no foreign key: like events, it is written on the charging path).
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("account_id", sa.String(255), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("dedupe_key", sa.String(255), nullable=False),
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("recorded_at_us", sa.BigInteger, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    # When delivery made this alert's deliveries (one per matching endpoint); null: not yet.
    sa.Column("routed_at_us", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("account_id", "dedupe_key", name="uq_alerts_account_dedupe"),
    sa.Index("ix_alerts_account_seq", "account_id", "seq"),
    sa.Index("ix_alerts_unrouted", "seq", sqlite_where=sa.text("routed_at_us IS NULL"),
             postgresql_where=sa.text("routed_at_us IS NULL")),
)

webhook_endpoints = sa.Table(
    "webhook_endpoints", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("events", sa.Text, nullable=True),  # a JSON list of alert types; null: every type
    sa.Column("description", sa.String(255), nullable=False),
    sa.Column("secret", sa.String(128), nullable=False),  # kept to sign with: whsec_ + base64
    sa.Column("created_at_us", sa.BigInteger, nullable=False),
    sa.Column("disabled_at_us", sa.BigInteger, nullable=True),
    sa.Column("disabled_reason", sa.String(255), nullable=True),
    # The current run of failed attempts (reset by any 2xx): how many, since when.
    sa.Column("failures", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("failing_since_us", sa.BigInteger, nullable=True),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("endpoint_id", sa.String(64), sa.ForeignKey("webhook_endpoints.id"), nullable=False),
    sa.Column("alert_seq", sa.BigInteger, sa.ForeignKey("alerts.seq"), nullable=False),
    sa.Column("alert_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, delivered, failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at_us", sa.BigInteger, nullable=False),
    sa.Column("next_at_us", sa.BigInteger, nullable=False),  # when it is due (pending)
    sa.Column("horizon_at_us", sa.BigInteger, nullable=False),  # no retry is due after this
    # A worker's claim: until when it is the worker's, and which claim (its result must match).
    sa.Column("lease_until_us", sa.BigInteger, nullable=True),
    sa.Column("lease_token", sa.String(64), nullable=True),
    sa.Column("ended_at_us", sa.BigInteger, nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.String(255), nullable=True),
    sa.UniqueConstraint("endpoint_id", "alert_seq", name="uq_webhook_deliveries_endpoint_alert"),
    sa.Index("ix_webhook_deliveries_endpoint_seq", "endpoint_id", "seq"),
    sa.Index("ix_webhook_deliveries_due", "next_at_us", sqlite_where=sa.text("status = 'pending'"),
             postgresql_where=sa.text("status = 'pending'")),
)

webhook_attempts = sa.Table(
    "webhook_attempts", metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(64), sa.ForeignKey("webhook_deliveries.id"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),  # null: no answer (timeout, refused…)
    sa.Column("latency_ms", sa.Integer, nullable=True),
    sa.Column("error", sa.String(255), nullable=True),
    sa.Index("ix_webhook_attempts_delivery", "delivery_id", "seq"),
)

notice_reads = sa.Table(
    "notice_reads", metadata,
    # A reader's mark on one of an account's alerts (creditmeter.notices): present once the
    # reader marked it read. One row per (alert, reader): each reader's marks are its own.
    sa.Column("alert_seq", sa.BigInteger, sa.ForeignKey("alerts.seq"), nullable=False),
    sa.Column("reader", sa.String(300), nullable=False),
    sa.Column("read_at_us", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("alert_seq", "reader", name="pk_notice_reads"),
)
