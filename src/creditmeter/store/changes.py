"""What the books' transitions produced, as rows: collected once, whatever the database, then
written by the dialect's writer (``sqlite_writer`` or ``postgres_writer``).

Collecting also moves each changed book to the version its write will store, and clears its
changes: the write that follows must store exactly these rows or fail whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from creditmeter.domain import EntryKind, GrantId, HoldId
from creditmeter.ledger import Book
from creditmeter.store.rows import HOLD_INSERT_COLUMNS, insert_sql, parts_json
from creditmeter.store.schema import DAY_TOKENS, holds
from creditmeter.timeutil import DAY_US

# Entries that close a grant: a later one corrects the first (see ``Writes.persist``).
CLOSING = (EntryKind.EXPIRE, EntryKind.VOID)

# Adds a batch's day rollups to the stored ones; ``{values}`` is one or more rows of ``DAY_COLUMNS``.
DAY_COLUMNS = ("account_id", "day_us", "model", "cost_uc", "events", *DAY_TOKENS)
DAY_UPSERT = (f"INSERT INTO usage_days ({', '.join(DAY_COLUMNS)}) VALUES {{values}} "
              "ON CONFLICT (account_id, day_us, model) DO UPDATE SET "
              + ", ".join(f"{c} = usage_days.{c} + excluded.{c}" for c in DAY_COLUMNS[3:]))

# A grant's counters and an account's version, each row by its key (the version checked: a write
# that finds the account at another one changes nothing).
COUNTERS_UPDATE = "UPDATE grants SET used_uc = {m}, held_uc = {m}, closed_uc = {m} WHERE seq = {m}"
VERSION_UPDATE = ("UPDATE accounts SET overage_uc = {m}, overage_since_us = {m}, version = {m} "
                  "WHERE id = {m} AND version = {m}")

Row = tuple[Any, ...]


@dataclass(slots=True)
class Changes:
    """The rows to write, in the column orders of the statements that write them.

    Attributes:
      grants: rows of ``GRANT_INSERT_COLUMNS``, one per new grant (written before everything else).
      closings: expire/void entries (``ENTRY_COLUMNS``), each written with the entry it corrects.
      voids: (voided_at_us, grant id).
      new_holds: rows of ``HOLD_INSERT_COLUMNS``.
      ended_holds: (status, settled event id, ended at, hold id).
      events: rows of ``EVENT_COLUMNS``.
      entries: the other entries (``ENTRY_COLUMNS``).
      days: rows of ``DAY_COLUMNS``: (account, day, model or "", Σ cost, event count, Σ of each
        token kind), one per (account, day, model).
      counters: (used, held, closed, grant seq) of each grant whose counters changed.
      versions: (overage, overage since, new version, account id, loaded version) of each
        changed book; the write must find every account still at its loaded version.
      savepoint: the write opens and releases the savepoint it runs after itself (PostgreSQL:
        in its one pipeline, rather than in round trips of their own).
    """

    grants: list[Row] = dataclasses.field(default_factory=list)
    closings: list[Row] = dataclasses.field(default_factory=list)
    voids: list[Row] = dataclasses.field(default_factory=list)
    new_holds: list[Row] = dataclasses.field(default_factory=list)
    ended_holds: list[Row] = dataclasses.field(default_factory=list)
    events: list[Row] = dataclasses.field(default_factory=list)
    entries: list[Row] = dataclasses.field(default_factory=list)
    days: list[Row] = dataclasses.field(default_factory=list)
    counters: list[tuple[int, int, int, int]] = dataclasses.field(default_factory=list)
    versions: list[tuple[int, int | None, int, str, int]] = dataclasses.field(default_factory=list)
    savepoint: bool = False


def collect(books: Iterable[Book], recorded_at_us: int, grant_fps: Mapping[GrantId, str] | None,
            hold_fps: Mapping[HoldId, str] | None) -> Changes:
    """The rows of everything ``books`` changed, recorded at ``recorded_at_us``."""
    changes = Changes()
    days: dict[tuple[str, int, str], list[int]] = {}
    for book in books:
        _collect_book(changes, days, book, recorded_at_us, grant_fps or {}, hold_fps or {})
    changes.days = [(*key, *sums) for key, sums in days.items()]  # one row per key: no clash
    return changes


def _collect_book(changes: Changes, days: dict[tuple[str, int, str], list[int]], book: Book,
                  recorded_at_us: int, grant_fps: Mapping[GrantId, str],
                  hold_fps: Mapping[HoldId, str]) -> None:
    if book.new_grants:  # most books of an import make, void and hold nothing
        changes.grants += [(grant.seq, grant.id, grant.account_id, grant.kind.value, grant.amount_uc,
                            grant.priority, grant.effective_at_us, grant.expires_at_us, grant.name,
                            grant.source, grant.created_at_us, grant_fps.get(grant.id, ""))
                           for grant in book.new_grants]
    if book.voided:
        changes.voids += [(grant.voided_at_us, grant.id) for grant in book.voided]
    if book.new_holds:
        changes.new_holds += [(hold.id, hold.account_id, hold.amount_uc, parts_json(hold.parts),
                               hold.created_at_us, hold.expires_at_us, hold.status.value,
                               hold_fps.get(hold.id, ""), hold.key_id, hold.fallback)
                              for hold in book.new_holds]
    if book.ended_holds:
        changes.ended_holds += [(hold.status.value, hold.settled_event_id, recorded_at_us, hold.id)
                                for hold in book.ended_holds]
    event_rows = changes.events
    for event, charge in book.charges:
        event_rows.append((
            event.id, event.account_id, charge.timestamp_us, event.model,
            event.input_tokens, event.output_tokens, event.cached_input_tokens,
            event.cache_write_tokens,
            orjson.dumps(event.quantities).decode() if event.quantities else None,
            orjson.dumps(event.metadata).decode() if event.metadata else None,
            charge.cost_uc, charge.overage_uc,
            orjson.dumps([[p.grant_id, p.amount_uc] for p in charge.allocations]).decode(),
            charge.price_version, charge.hold_id, event.fingerprint, recorded_at_us,
            event.reasoning_tokens, event.cache_write_1h_tokens, event.service_tier))
        key = (event.account_id, charge.timestamp_us - charge.timestamp_us % DAY_US, event.model or "")
        day = days.get(key)
        if day is None:
            days[key] = [charge.cost_uc, 1, event.input_tokens, event.output_tokens,
                         event.cached_input_tokens, event.cache_write_tokens, event.reasoning_tokens,
                         event.cache_write_1h_tokens]
        else:
            day[0] += charge.cost_uc
            day[1] += 1
            day[2] += event.input_tokens
            day[3] += event.output_tokens
            day[4] += event.cached_input_tokens
            day[5] += event.cache_write_tokens
            day[6] += event.reasoning_tokens
            day[7] += event.cache_write_1h_tokens
    for e in book.entries:
        row = (e.account_id, e.grant_id, e.kind.value, e.amount_uc, e.at_us, e.hold_id,
               e.note[:255], recorded_at_us)
        (changes.closings if e.kind in CLOSING else changes.entries).append(row)
    if book.changed:  # in the order of the grants' seq (a book may keep many expired grants)
        counters = book.counters
        rows = []
        for grant_id in book.changed:
            c, grant = counters[grant_id], book.grant(grant_id)
            assert grant is not None
            rows.append((c.used_uc, c.held_uc, c.closed_uc, grant.seq))
        rows.sort(key=lambda row: row[3])
        changes.counters += rows
    if book.has_changes:
        changes.versions.append((book.overage_uc, book.overage_since_us, book.version + 1,
                                 book.account.id, book.version))
        book.version += 1
        book.reset_changes()


def plain_writes(changes: Changes, mark: str) -> list[tuple[str, list[Any]]]:
    """The writes both dialects run first and alike, in order: (statement, rows) each run for
    every row."""
    m = mark
    return [
        (f"UPDATE grants SET voided_at_us = {m} WHERE id = {m}", changes.voids),
        (insert_sql(holds, HOLD_INSERT_COLUMNS, m), changes.new_holds),
        (f"UPDATE holds SET status = {m}, settled_event_id = {m}, ended_at_us = {m} WHERE id = {m}",
         changes.ended_holds),
    ]
