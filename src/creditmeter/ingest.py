"""Usage files: batch import of events from JSONL, and export of usage as CSV.

Each batch of lines is one transaction: a crash mid-file leaves every event either charged or
not, and running the same file again charges only what was not (the rest answer duplicate).

A batch is made of whole accounts: the lines are read a window at a time (several batches'
worth) and each account's lines go together, in the file's order, so a batch touches fewer
accounts (each costs a load, a lock, its alerts and its rows' updates, whatever its events).
Accounts are independent, so each event is charged as it would be in the file's order: the
same results, line by line. The one case where the order between accounts matters, an event id
given to two accounts in one window (the first in the file is charged, the other refused), is
charged in the file's order.
"""

from __future__ import annotations

import codecs
import csv
import io
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from creditmeter.collector import collect, collector_paused
from creditmeter.domain import Charge, Rejected, StoredEvent
from creditmeter.engine import Engine
from creditmeter.errors import InputError
from creditmeter.events import STANDARD_TIER
from creditmeter.money import format_credits
from creditmeter.timeutil import format_instant_once


@dataclass
class ImportSummary:
    """Counts of what an import did; ``rejected`` lists (line, event id, field, reason)."""

    charged: int = 0
    duplicate: int = 0
    cost_uc: int = 0
    rejected: list[tuple[int, str | None, str | None, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.charged + self.duplicate + len(self.rejected)

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.total, "charged": self.charged, "duplicate": self.duplicate,
            "rejected": len(self.rejected), "charged_credits": format_credits(self.cost_uc),
            "seconds": round(self.seconds, 3),
            "rejections": [{"line": line, "event_id": eid, "field": fld, "reason": reason}
                           for line, eid, fld, reason in self.rejected],
        }


def read_batches(path: Path, batch_size: int) -> Iterator[tuple[list[tuple[int, Any]], int]]:
    """Batches of (line number, parsed JSON or an InputError), with the bytes read so far.

    Blank lines are skipped; a malformed line becomes an error for that line only. A UTF-8 byte
    order mark at the start of the file (as some editors and exports write) is not part of it.
    """
    batch: list[tuple[int, Any]] = []
    consumed = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            consumed += len(line)
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8):]
            if not line.strip():
                continue
            try:
                item: Any = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                item = InputError(f"line {number}", f"malformed JSON: {exc}")
            batch.append((number, item))
            if len(batch) >= batch_size:
                yield batch, consumed
                batch = []
    if batch:
        yield batch, consumed


WINDOW_BATCHES = 8  # batches' worth of lines regrouped by account at a time
MAX_WINDOW = 40_000  # lines: what a window of parsed events may hold in memory


def window_lines(batch_size: int) -> int:
    """How many lines an import reads before regrouping them into batches by account."""
    return max(batch_size, min(batch_size * WINDOW_BATCHES, MAX_WINDOW))


def by_account(lines: list[tuple[int, Any]], batch_size: int) -> Iterator[list[tuple[int, Any]]]:
    """``lines`` in batches of at most ``batch_size``, each account's lines together and in the
    file's order (accounts in the order they first appear; lines naming no account last). In the
    file's order throughout when an event id comes with two accounts (see the module docstring)."""
    groups: dict[Any, list[tuple[int, Any]]] = {}
    owners: dict[Any, Any] = {}
    ordered: list[tuple[int, Any]] = []
    for line in lines:
        item = line[1]
        key = event_id = None
        if type(item) is dict:
            key, event_id = item.get("account_id"), item.get("id")
            key = key if type(key) is str else None
        if type(event_id) is str and owners.setdefault(event_id, key) != key:
            ordered = lines
            break
        group = groups.get(key)
        if group is None:
            group = groups[key] = []
        group.append(line)
    else:
        none = groups.pop(None, [])
        ordered = [line for group in groups.values() for line in group] + none
    for start in range(0, len(ordered), batch_size):
        yield ordered[start:start + batch_size]


COLLECT_EVERY = 500_000  # lines read between an import's own cycle collections


def import_jsonl(engine: Engine, path: Path, at_us: int, *, batch_size: int = 5_000,
                 progress: Callable[[int], None] | None = None) -> ImportSummary:
    """Charge every event of a JSONL file, batch by batch; ``progress`` hears the bytes read so far."""
    summary = ImportSummary()
    started = time.perf_counter()
    read = 0
    with collector_paused():  # see creditmeter.collector
        for window, consumed in read_batches(path, window_lines(batch_size)):
            for n, item in window:
                if isinstance(item, InputError):
                    summary.rejected.append((n, None, None, item.reason))
            good = [(n, item) for n, item in window if not isinstance(item, InputError)]
            for batch in by_account(good, batch_size):
                results = engine.record_batch([item for _, item in batch], at_us)
                for (n, _), result in zip(batch, results, strict=True):
                    _count(summary, n, result)
            if progress is not None:
                progress(consumed)
            read += len(window)
            if read >= COLLECT_EVERY:
                collect()
                read = 0
    summary.rejected.sort(key=lambda r: r[0])
    summary.seconds = time.perf_counter() - started
    return summary


def _count(summary: ImportSummary, line: int, result: Charge | Rejected) -> None:
    if isinstance(result, Rejected):
        summary.rejected.append((line, result.event_id, result.field, result.reason))
    elif result.status == "duplicate":
        summary.duplicate += 1
    else:
        summary.charged += 1
        summary.cost_uc += result.cost_uc


# Columns added later go at the end, so a script that reads columns by position keeps working.
CSV_COLUMNS = ["timestamp", "event_id", "model", "input_tokens", "output_tokens",
               "cached_input_tokens", "cache_write_tokens", "quantities", "cost_credits",
               "overage_credits", "paid_by", "price_version", "hold_id", "reasoning_tokens",
               "cache_write_1h_tokens", "service_tier"]


def _cell(text: str) -> str:
    """Text that a spreadsheet would read as a formula gets a leading quote (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_filename(account_id: str) -> str:
    """The file name a download of an account's usage gets (any id made safe for a header)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in account_id)[:100]
    return f"usage-{safe}.csv"


def csv_chunks(stream: Iterable[StoredEvent], rows_per_chunk: int = 500) -> Iterator[str]:
    """Events as CSV text, a header then a chunk every ``rows_per_chunk`` rows, as they stream in."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    pending = 0
    for stored in stream:
        e, c = stored.event, stored.charge
        writer.writerow([
            format_instant_once(c.timestamp_us), _cell(e.id), _cell(e.model or ""), e.input_tokens,
            e.output_tokens, e.cached_input_tokens, e.cache_write_tokens,
            _cell(";".join(f"{k}={v}" for k, v in e.quantities)), format_credits(c.cost_uc),
            format_credits(c.overage_uc),
            _cell(";".join(f"{p.grant_id}={format_credits(p.amount_uc)}" for p in c.allocations)),
            c.price_version if c.price_version is not None else "", _cell(c.hold_id or ""),
            e.reasoning_tokens, e.cache_write_1h_tokens, e.service_tier or STANDARD_TIER,
        ])
        pending += 1
        if pending == rows_per_chunk:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if buffer.tell():
        yield buffer.getvalue()


def write_csv(stream: Iterable[StoredEvent], out: IO[str]) -> int:
    """Write events as CSV rows as they stream in (never all in memory); returns the row count."""
    count = 0

    def counted() -> Iterator[StoredEvent]:
        nonlocal count
        for stored in stream:
            count += 1
            yield stored

    for chunk in csv_chunks(counted()):
        out.write(chunk)
    return count
