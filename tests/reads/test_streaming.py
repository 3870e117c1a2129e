"""A listing of every event (an export) is read a batch at a time: on PostgreSQL through a
server-side cursor, so its first rows arrive before the query's result is all fetched."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from creditmeter.engine import Engine
from creditmeter.store.reads import STREAM_ROWS
from tests.conftest import EngineFactory, at

N = STREAM_ROWS * 2 + 17  # over two batches and a part
T0 = at("2026-03-01T00:00:00Z")


def _usage(engine: Engine) -> None:
    engine.create_account("u", T0)
    engine.add_grant("u", 10**12, "addon", T0)
    batch = [{"id": f"e{i:05d}", "account_id": "u", "model": "gpt-4o-mini", "input_tokens": 10 + i,
              "timestamp": f"2026-03-01T00:{i // 3600 % 60:02d}:{i // 60 % 60:02d}.{i % 60:06d}Z"}
             for i in range(N)]
    engine.record_batch(batch, T0 + 3_600_000_000)


def test_a_long_listing_is_every_event_newest_first(engine: Engine) -> None:
    _usage(engine)
    listed = [(s.charge.timestamp_us, s.seq, s.event.id) for s in engine.usage("u")]
    assert len(listed) == N
    assert listed == sorted(listed, reverse=True)
    paged, mark = [], None
    while True:
        page, mark = engine.usage_page("u", limit=1_000, after=mark)
        paged += [(s.charge.timestamp_us, s.seq, s.event.id) for s in page]
        if mark is None:
            break
    assert paged == listed


def test_an_export_streams_from_a_server_side_cursor(make_engine: EngineFactory, store_kind: str,
                                                     example_catalog: object) -> None:
    if store_kind != "postgres":
        pytest.skip("server-side cursors are PostgreSQL's")
    engine = make_engine()
    engine.load_prices(example_catalog, at("2026-01-01"), at("2026-01-01"))  # type: ignore[arg-type]
    _usage(engine)
    cursors: list[Any] = []

    def keep(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM events" in statement and "ORDER BY" in statement:
            cursors.append(cursor)

    sa.event.listen(engine.store.engine, "before_cursor_execute", keep)  # type: ignore[attr-defined]
    stream = engine.usage("u")
    first = next(stream)  # the first row is here while the rest is still in the database
    assert first.event.id == f"e{N - 1:05d}"
    (cursor,) = cursors
    assert 0 < cursor.pgresult.ntuples <= STREAM_ROWS < N  # rows fetched so far: one batch
    assert sum(1 for _ in stream) == N - 1
