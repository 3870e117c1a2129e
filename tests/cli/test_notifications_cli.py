"""``creditmeter notifications list`` and ``read`` on each store: the words, newest first, the
operator's own read marks (never the account's people's), and refusals that mark nothing."""

from __future__ import annotations

import pytest
from click.testing import Result

from creditmeter.alerts import Alert, AlertType, alert_id
from creditmeter.engine import Engine
from tests.cli.test_cli import Cli, invoke, js
from tests.conftest import EngineFactory, at

T = "2026-03-01T12:00:00Z"
HOUR_US = 3_600 * 1_000_000


@pytest.fixture
def engine(make_engine: EngineFactory) -> Engine:
    engine = make_engine()
    engine.create_account("alice", at(T))
    with engine.store.transaction(write=True) as tx:
        for n, (kind, data) in enumerate([
                (AlertType.DEPLETED, {}),
                (AlertType.LIMIT_REACHED,
                 {"window": "1d", "credits": "120", "frees_at": "2026-03-02T00:00:00Z"}),
                (AlertType.TOPUP_REQUESTED, {"pack_id": "addon-1000"})]):
            tx.insert_alert(Alert("alice", kind, f"k{n}", at(T) + n * HOUR_US, data), at(T))
    return engine


@pytest.fixture
def cli(engine: Engine) -> Cli:
    """Run a command on the engine's database; ``ok=True`` (default) asserts exit 0."""
    def run(*args: str, ok: bool = True) -> Result:
        result = invoke([*args, "--db", engine.store.url])
        if ok:
            assert result.exit_code == 0, (args, result.output)
        return result
    return run


def test_list_and_read(cli: Cli, engine: Engine) -> None:
    listed = js(cli("notifications", "list", "alice", "--json", "--at", T))
    assert [n["text"] for n in listed["notifications"]] == [
        "Auto top-up: pack addon-1000 requested",
        "You reached your daily usage limit of 120 credits; it frees up at 2026-03-02 00:00 UTC",
        "Your credits are used up"]
    assert listed["unread"] == 3 and listed["next_before"] is None
    page = js(cli("notifications", "list", "alice", "--limit", "2", "--json"))
    assert len(page["notifications"]) == 2 and page["next_before"] == page["notifications"][1]["seq"]
    older = js(cli("notifications", "list", "alice", "--before", str(page["next_before"]), "--json"))
    assert [n["id"] for n in older["notifications"]] == [alert_id("alice", "k0")]

    table = invoke(["notifications", "list", "alice", "--at", T, "--db", engine.store.url],
                   env={"COLUMNS": "200"}).output
    assert "(3 unread)" in table
    assert "│ 2026-03-01 14:00:00 │ new   │ Auto top-up: pack addon-1000 requested " in table, table

    assert js(cli("notifications", "read", "alice", alert_id("alice", "k2"), "--json")) == {
        "marked": 1, "unread": 2}
    assert cli("notifications", "read", "alice", "--all").output == "2 marked read; 0 unread\n"
    assert js(cli("notifications", "list", "alice", "--unread", "--json"))["notifications"] == []
    # The operator's marks are its own: the account's people still have all three unread.
    assert engine.notifications("alice", "account:alice", at(T)).unread == 3


@pytest.mark.parametrize(("args", "code", "said"), [
    (["alice"], 2, "ids: give notification ids, or --all"),
    (["alice", "--all", "msg_x"], 2, "ids: give notification ids, or --all"),
    (["alice", "msg_nothing"], 3, "ids: unknown notification 'msg_nothing'"),
    (["nobody", "--all"], 3, "account_id: unknown account 'nobody'"),
])
def test_read_refusals_mark_nothing(cli: Cli, engine: Engine, args: list[str], code: int, said: str) -> None:
    result = cli("notifications", "read", *args, ok=False)
    assert result.exit_code == code and f"error: {said}" in result.output, result.output
    assert engine.notifications("alice", "operator", at(T)).unread == 3


def test_list_refusals(cli: Cli) -> None:
    for args, said in ((["--limit", "0"], "limit: must be a whole number from 1 to 200"),
                       (["--before", "0"], "before: must be a whole number from 1 to")):
        result = cli("notifications", "list", "alice", *args, ok=False)
        assert result.exit_code == 2 and said in result.output, result.output
