"""How records sit in the tables: the column lists the store reads and writes, and the
conversions between a row and a record.

Rows read through the driver are plain tuples in the order of the ``*_SELECT`` lists here (an
event's is named by ``EventRow``); rows read through SQLAlchemy are named.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from creditmeter.domain import (
    Account,
    AccountId,
    AccountKind,
    Allocation,
    Charge,
    EventId,
    Grant,
    GrantId,
    GrantKind,
    Hold,
    HoldId,
    HoldStatus,
    StoredEvent,
    UsageEvent,
)
from creditmeter.enterprise import QuotaAllocation
from creditmeter.invariants import GrantRow
from creditmeter.keys import ApiKey, Role
from creditmeter.plans import parse_plan
from creditmeter.subscriptions import Subscription

CHUNK = 500  # ids per IN (...) list

EVENT_COLUMNS = ("id", "account_id", "ts_us", "model", "input_tokens", "output_tokens",
                 "cached_input_tokens", "cache_write_tokens", "quantities", "metadata",
                 "cost_uc", "overage_uc", "allocations", "price_version", "hold_id",
                 "fingerprint", "recorded_at_us", "reasoning_tokens", "cache_write_1h_tokens",
                 "service_tier")
GRANT_INSERT_COLUMNS = ("seq", "id", "account_id", "kind", "amount_uc", "priority", "effective_at_us",
                        "expires_at_us", "name", "source", "created_at_us", "request_fp")
HOLD_INSERT_COLUMNS = ("id", "account_id", "amount_uc", "parts", "created_at_us", "expires_at_us",
                       "status", "request_fp", "key_id", "fallback")
ENTRY_COLUMNS = ("account_id", "grant_id", "kind", "amount_uc", "at_us", "hold_id", "note",
                 "recorded_at_us")

GRANT_KINDS = {k.value: k for k in GrantKind}
# Grant's fields in order, then the cached counters.
GRANT_SELECT = ("id, account_id, kind, amount_uc, priority, effective_at_us, expires_at_us, name, "
                "source, seq, created_at_us, voided_at_us, used_uc, held_uc, closed_uc")
HOLD_SELECT = ("id, account_id, amount_uc, parts, created_at_us, expires_at_us, status, settled_event_id, "
               "key_id, fallback")
KEY_SELECT = "id, hash, prefix, role, account_id, name, created_at_us, revoked_at_us"
ACCOUNT_SELECT = "id, name, kind, created_at_us, overage_uc"
SUBSCRIPTION_SELECT = ("id, account_id, plan, seats, anchor_us, created_at_us, next_period, cancel_at_us, "
                       "cancelled_at_us")
ALLOCATION_SELECT = ("id, enterprise_id, member_id, amount_uc, parts, created_at_us, revoked_at_us, "
                     "returned_uc")


def chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def insert_sql(table: sa.Table, columns: Sequence[str], mark: str) -> str:
    return (f"INSERT INTO {table.name} ({', '.join(columns)}) "
            f"VALUES ({', '.join([mark] * len(columns))})")


def parts_from_json(text: str) -> tuple[Allocation, ...]:
    return tuple(Allocation(GrantId(g), a) for g, a in orjson.loads(text))


def parts_json(parts: Iterable[Allocation]) -> str:
    return orjson.dumps([[p.grant_id, p.amount_uc] for p in parts]).decode()


def grant_from_row(row: Any) -> Grant:
    """A grant from a named row of the whole ``grants`` table."""
    return Grant(
        id=GrantId(row.id), account_id=AccountId(row.account_id), kind=GrantKind(row.kind),
        amount_uc=row.amount_uc, priority=row.priority, effective_at_us=row.effective_at_us,
        expires_at_us=row.expires_at_us, name=row.name, source=row.source, seq=row.seq,
        created_at_us=row.created_at_us, voided_at_us=row.voided_at_us,
    )


def grant_row_from_row(row: Any) -> GrantRow:
    """A grant with its cached counters, from a named row of the whole ``grants`` table."""
    return GrantRow(grant_from_row(row), row.used_uc, row.held_uc, row.closed_uc, row.request_fp)


def hold_from_row(r: Sequence[Any]) -> Hold:
    """A hold from a row of ``HOLD_SELECT``."""
    return Hold(id=HoldId(r[0]), account_id=AccountId(r[1]), amount_uc=r[2], parts=parts_from_json(r[3]),
                created_at_us=r[4], expires_at_us=r[5], status=HoldStatus(r[6]),
                settled_event_id=EventId(r[7]) if r[7] else None, key_id=r[8], fallback=bool(r[9]))


def account_from_row(r: Sequence[Any]) -> Account:
    """An account from a row of ``ACCOUNT_SELECT``."""
    return Account(AccountId(r[0]), r[1], AccountKind(r[2]), r[3])


def key_from_row(r: Sequence[Any]) -> ApiKey:
    """A key from a row of ``KEY_SELECT``."""
    return ApiKey(r[0], r[2], Role(r[3]), r[4], r[5], r[6], r[7])


def subscription_from_row(r: Sequence[Any]) -> Subscription:
    """A subscription from a row of ``SUBSCRIPTION_SELECT``."""
    return Subscription(r[0], AccountId(r[1]), parse_plan(orjson.loads(r[2])), r[3], r[4], r[5], r[6], r[7],
                        r[8])


def allocation_from_row(r: Sequence[Any]) -> QuotaAllocation:
    """A quota allocation from a row of ``ALLOCATION_SELECT``."""
    return QuotaAllocation(r[0], r[1], r[2], r[3], parts_from_json(r[4]), r[5], r[6], r[7])


# The events table's columns, named: a row read straight from the driver (``EventRow(*row)`` of
# ``SELECT {EVENT_SELECT}``) reads as a SQLAlchemy row of the table does.
EventRow = collections.namedtuple("EventRow", ("seq", *EVENT_COLUMNS))  # type: ignore[misc]
EVENT_SELECT = ", ".join(EventRow._fields)


def stored_event(row: Any) -> StoredEvent:
    """An event with its charge, from a named row of the whole ``events`` table."""
    quantities = tuple(tuple(q) for q in orjson.loads(row.quantities)) if row.quantities else ()
    event = UsageEvent(
        id=EventId(row.id), account_id=AccountId(row.account_id), timestamp_us=row.ts_us,
        model=row.model, input_tokens=row.input_tokens, output_tokens=row.output_tokens,
        cached_input_tokens=row.cached_input_tokens, cache_write_tokens=row.cache_write_tokens,
        quantities=quantities,
        metadata=orjson.loads(row.metadata) if row.metadata else {},
        fingerprint=row.fingerprint, reasoning_tokens=row.reasoning_tokens,
        cache_write_1h_tokens=row.cache_write_1h_tokens, service_tier=row.service_tier,
    )
    charge = Charge(
        event_id=EventId(row.id), account_id=AccountId(row.account_id), status="charged",
        cost_uc=row.cost_uc, allocations=parts_from_json(row.allocations), overage_uc=row.overage_uc,
        price_version=row.price_version, timestamp_us=row.ts_us,
        hold_id=HoldId(row.hold_id) if row.hold_id else None,
    )
    return StoredEvent(event, charge, row.seq)
