"""Two writers charging the same event id at the same moment, raced deterministically.

The first writer is the engine's own charging, in a write transaction the test keeps open (its
account locked, its event written but not committed). The second runs in a thread with one
write attempt only, so an answer that needed the transaction to be started over fails. The test
waits until the second one is blocked by the first (on PostgreSQL: a lock wait the server
reports; on SQLite the database lock serialises them anyway), then lets the first commit.
SPEC §5: the second answers duplicate (same body) or conflict (another body, here another
account), charges the rest of its batch, and writes nothing for the event it did not charge.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa

from creditmeter.domain import Charge, Rejected
from creditmeter.engine import Engine, Settings
from creditmeter.errors import Conflict
from creditmeter.events import parse_event
from creditmeter.pricing import parse_catalog
from creditmeter.store.sql import SqlStore, _driver_url
from tests.conftest import EngineFactory, at

CREDIT = 1_000_000
T0 = at("2026-11-02T10:00")
NOW = at("2026-11-02T10:01")


def _event(event_id: str, account: str, tokens: int) -> dict[str, Any]:
    return {"id": event_id, "account_id": account, "model": "m", "input_tokens": tokens,
            "timestamp": "2026-11-02T10:00:30Z"}


def _setup(make_engine: EngineFactory) -> tuple[Engine, Engine]:
    first = make_engine()
    first.load_prices(parse_catalog({"models": {"m": {"input": 1, "output": 1}}}), at("2026-01-01"), T0)
    for account in ("a", "b"):
        first.create_account(account, T0)
        first.add_grant(account, 2 * CREDIT, "trial", T0, grant_id=f"{account}-trial",
                        expires_at_us=at("2026-12-01"))
        first.add_grant(account, 100 * CREDIT, "addon", T0, grant_id=f"{account}-addon")
    url: str = first.store.url  # type: ignore[attr-defined]
    return first, Engine(SqlStore(url), Settings(write_attempts=1))


def _wait_until_blocked(url: str, thread: threading.Thread) -> None:
    """Until the second writer waits on a lock the first one holds (PostgreSQL), or a while."""
    if url.startswith("sqlite"):
        time.sleep(0.3)
        return
    db = sa.create_engine(_driver_url(url), poolclass=sa.pool.NullPool)
    try:
        deadline = time.monotonic() + 20
        with db.connect() as conn:
            while conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'").scalar_one() == 0:
                assert thread.is_alive(), "the second writer finished without waiting"
                assert time.monotonic() < deadline, "the second writer never waited on the first"
                conn.rollback()
                time.sleep(0.01)
    finally:
        db.dispose()


def _race(first: Engine, second: Engine, held: dict[str, Any],
          batch: list[dict[str, Any]]) -> tuple[Charge, list[Charge | Rejected]]:
    """``first`` charges ``held`` in a transaction kept open while ``second`` records ``batch``."""
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(_answer(second, batch)))
    results: list[Charge | Rejected | None] = [None]
    with first.store.transaction(write=True) as tx:
        first._charge_events(tx, [(0, parse_event(held))], results, NOW)
        thread.start()
        _wait_until_blocked(first.store.url, thread)  # type: ignore[attr-defined]
    thread.join(timeout=30)
    assert not thread.is_alive()
    original = results[0]
    assert isinstance(original, Charge) and original.status == "charged"
    if isinstance(answers[0], BaseException):
        raise answers[0]
    return original, answers[0]


def _answer(engine: Engine, batch: list[dict[str, Any]]) -> list[Charge | Rejected] | BaseException:
    try:
        return engine.record_batch(batch, NOW)
    except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
        return exc
    finally:
        engine.store.close()


def _stored(engine: Engine) -> dict[str, tuple[str, int]]:
    url: str = engine.store.url  # type: ignore[attr-defined]
    db = sa.create_engine(_driver_url(url), poolclass=sa.pool.NullPool)
    try:
        with db.connect() as conn:
            return {r[0]: (r[1], r[2]) for r in conn.exec_driver_sql(
                "SELECT id, account_id, cost_uc FROM events")}
    finally:
        db.dispose()


def test_a_writer_waiting_for_the_account_answers_the_same_event_as_a_duplicate(
        make_engine: EngineFactory) -> None:
    first, second = _setup(make_engine)
    shared = _event("shared", "a", 3_000_000)
    original, answers = _race(first, second, shared, [_event("own", "a", 1_500_000), shared])

    own, again = answers
    assert isinstance(own, Charge) and (own.status, own.cost_uc) == ("charged", 1_500_000)
    assert again == original._replace(status="duplicate")
    assert _stored(first) == {"shared": ("a", 3_000_000), "own": ("a", 1_500_000)}
    assert first.balance("a", NOW).overage_uc == 0
    assert sum(p.used_uc for p in first.balance("a", NOW).packages) == 4_500_000
    assert first.check_invariants() == []


def test_the_same_id_for_another_account_meanwhile_is_a_conflict_and_the_rest_is_charged(
        make_engine: EngineFactory) -> None:
    first, second = _setup(make_engine)
    # 60 events: written by COPY on PostgreSQL; the taken id is among them.
    batch = [_event(f"b-{i:02d}", "b", 10_000 * (i + 1)) for i in range(60)]
    batch[30] = _event("shared", "b", 7_000_000)
    original, answers = _race(first, second, _event("shared", "a", 3_000_000), batch)

    rejected = answers[30]
    assert isinstance(rejected, Rejected) and isinstance(rejected.error, Conflict), rejected
    charged = [r for i, r in enumerate(answers) if i != 30]
    assert all(isinstance(r, Charge) and r.status == "charged" for r in charged), charged
    expected_b = sum(10_000 * (i + 1) for i in range(60) if i != 30)
    assert sum(r.cost_uc for r in charged) == expected_b  # type: ignore[union-attr]
    # Nothing of the event it did not charge: not its row, not its cost in b's packages.
    stored = _stored(first)
    assert stored["shared"] == ("a", original.cost_uc) == ("a", 3_000_000)
    assert len(stored) == 60 and sum(cost for acct, cost in stored.values() if acct == "b") == expected_b
    assert sum(p.used_uc for p in first.balance("b", NOW).packages) == expected_b
    assert sum(p.used_uc for p in first.balance("a", NOW).packages) == 3_000_000
    assert first.check_invariants() == []


def test_a_taken_id_in_a_small_batch_is_a_conflict_too(make_engine: EngineFactory) -> None:
    first, second = _setup(make_engine)
    _, answers = _race(first, second, _event("shared", "a", 3_000_000),
                       [_event("shared", "b", 5_000_000), _event("own", "b", 2_500_000)])

    taken, own = answers
    assert isinstance(taken, Rejected) and isinstance(taken.error, Conflict), taken
    assert isinstance(own, Charge) and (own.status, own.cost_uc) == ("charged", 2_500_000)
    assert _stored(first) == {"shared": ("a", 3_000_000), "own": ("b", 2_500_000)}
    assert sum(p.used_uc for p in first.balance("b", NOW).packages) == 2_500_000
    assert first.check_invariants() == []


def test_a_settle_whose_event_id_another_account_took_meanwhile_is_a_conflict(
        make_engine: EngineFactory) -> None:
    """A settle writes its event without a savepoint: the taken id fails its transaction whole,
    the attempt after it finds the event (another account's) and answers conflict; nothing of
    the settle is written and the hold stays open."""
    from creditmeter.engine import Usage

    first, _ = _setup(make_engine)
    url: str = first.store.url  # type: ignore[attr-defined]
    second = Engine(SqlStore(url), Settings(write_attempts=2))
    hold = first.reserve("b", 4 * CREDIT, NOW, hold_id="h-b")
    assert not isinstance(hold, Rejected) and hasattr(hold, "parts")
    answers: list[Any] = []

    def settle() -> None:
        try:
            answers.append(second.settle("h-b", Usage("m", input_tokens=1_000_000), NOW, event_id="shared"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            answers.append(exc)
        finally:
            second.store.close()

    thread = threading.Thread(target=settle)
    results: list[Charge | Rejected | None] = [None]
    with first.store.transaction(write=True) as tx:
        first._charge_events(tx, [(0, parse_event(_event("shared", "a", 3_000_000)))], results, NOW)
        thread.start()
        _wait_until_blocked(url, thread)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert isinstance(answers[0], Conflict), answers
    assert _stored(first) == {"shared": ("a", 3_000_000)}
    packages = first.balance("b", NOW).packages
    assert sum(p.used_uc for p in packages) == 0 and sum(p.held_uc for p in packages) == 4 * CREDIT
    released = first.release("h-b", NOW)
    assert released.status.value == "released"
    assert first.check_invariants() == []
