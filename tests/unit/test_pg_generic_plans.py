"""The statements prepared on PostgreSQL by the commands of one account (reserve, settle, release,
record) read and write by key whatever plan the server keeps for them: the generic plan it may
switch a prepared statement to, made here on tables never analysed and all but empty, scans no
table whole (a plan kept like that would read every row once the tables are big)."""

from __future__ import annotations

import pytest

from creditmeter.domain import Hold
from creditmeter.engine import Engine, Usage
from creditmeter.store import driver
from tests.conftest import at

CREDIT = 1_000_000
T0 = at("2026-11-02T10:00")


def _prepared_plans(engine: Engine) -> dict[str, str]:
    """Each statement prepared on the store's connection, with its generic plan."""
    plans = {}
    with engine.store.engine.connect() as conn:  # type: ignore[attr-defined]
        driver = conn.connection.driver_connection
        assert driver is not None
        prepared = driver.execute("SELECT name, statement, cardinality(parameter_types) "
                                  "FROM pg_prepared_statements WHERE NOT from_sql").fetchall()
        driver.execute("SET plan_cache_mode = force_generic_plan")
        for name, statement, count in prepared:
            args = f"({', '.join(['NULL'] * count)})" if count else ""
            plan = driver.execute(f"EXPLAIN EXECUTE {name}{args}").fetchall()
            plans[statement] = "\n".join(row[0] for row in plan)
        conn.rollback()
    return plans


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)  # PostgreSQL's alone
def test_the_generic_plans_of_one_accounts_commands_read_by_key(engine: Engine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver, "PREPARE", True)  # whatever CREDITMETER_PG_PREPARE says here
    engine.create_account("a", T0)
    engine.add_grant("a", 100 * CREDIT, "addon", T0, grant_id="g")
    for i in range(3):
        assert isinstance(engine.reserve("a", CREDIT, T0 + i, hold_id=f"h-{i}", ttl_s=60), Hold)
    engine.settle("h-0", Usage("gpt-4o", 1_000, 100), T0 + 10)
    engine.release("h-1", T0 + 10)
    engine.record({"id": "e-1", "account_id": "a", "model": "gpt-4o", "input_tokens": 100,
                   "timestamp": "2026-11-02T10:00:05Z"}, T0 + 20)
    plans = _prepared_plans(engine)
    one_row = ("UPDATE grants", "UPDATE accounts", "INSERT INTO usage_days")
    writes = [s for s in plans if s.startswith(one_row)]
    reads = [s for s in plans if s.startswith("SELECT") and "FOR UPDATE" in s]
    assert len(writes) >= 3 and reads, sorted(plans)  # the one-row writes and the lock, prepared
    scans = {s: p for s, p in plans.items() if "Seq Scan" in p}
    assert scans == {}
