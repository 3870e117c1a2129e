"""``creditmeter topup``: set, show and turn off an account's auto top-up, on each store; a
setting made here requests its pack when usage takes the credits below the threshold; bad input
exits 2 (an unknown pack or account 3) naming the option and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from creditmeter.engine import open_engine
from tests.api.test_http_bad_input import tables
from tests.cli.test_cli import Cli, cli, db_url, invoke, js, priced  # noqa: F401 - fixtures

AT = ("--at", "2026-03-01T12:00:00Z")
SET = ("topup", "set", "alice", "--below", "20", "--pack", "addon-1000", "--max-per-month", "2")


@pytest.fixture
def run(priced: Cli) -> Cli:  # noqa: F811
    """The example prices and an account 'alice' (no plan; the shipped plan catalog), on each store."""
    return priced


@pytest.fixture
def url(db_url: str) -> str:  # noqa: F811
    return db_url


def every_row(url: str) -> dict[str, Any]:
    engine = open_engine(url)
    try:
        return tables(engine)
    finally:
        engine.close()


def test_topup_set_show_and_off(run: Cli) -> None:
    assert run("topup", "show", "alice").stdout == "alice: no auto top-up\n"
    assert js(run("topup", "show", "alice", "--json")) == {"auto_topup": None}
    said = run(*SET, *AT).stdout
    assert said == ("alice: auto top-up: addon-1000 when the available credits fall below 20, "
                    "at most 2 a month\n")
    setting = {"below": "20", "pack": "addon-1000", "max_per_month": 2, "grant_now": False}
    assert js(run("topup", "show", "alice", "--json")) == {"auto_topup": setting}
    replaced = js(run("topup", "set", "alice", "--below", "7.5", "--pack", "package-3000",
                      "--max-per-month", "1", "--grant-now", *AT, "--json"))
    assert replaced == {"auto_topup": {"below": "7.5", "pack": "package-3000", "max_per_month": 1,
                                       "grant_now": True}}
    shown = run("topup", "show", "alice").stdout
    assert shown.endswith("at most 1 a month (granted at once, before payment)\n")
    assert run("topup", "off", "alice", *AT).stdout == "alice: no auto top-up\n"
    assert js(run("topup", "show", "alice", "--json")) == {"auto_topup": None}
    assert run("topup", "off", "alice", *AT).stdout == "alice: no auto top-up\n"  # off again


def test_a_setting_made_here_requests_the_pack(run: Cli) -> None:
    run("grants", "add", "alice", "100", "--kind", "addon", "--at", "2026-03-01")
    run(*SET, "--grant-now", *AT)
    run("usage", "record", "alice", "--model", "gpt-4o", "--output", "85000", "--at", "2026-03-01T13:00:00Z")
    notes = js(run("notifications", "list", "alice", "--json", "--at", "2026-03-01T14:00:00Z"))
    (request,) = [n for n in notes["notifications"] if n["type"] == "topup.requested"]
    assert (request["data"]["pack_id"], request["data"]["available"], request["data"]["granted"]) == (
        "addon-1000", "15", True)
    # Granted at once, before payment: 15 + 1,000.
    balance = js(run("balance", "alice", "--json", "--at", "2026-03-01T14:00:00Z"))
    assert balance["available_credits"] == "1015"


@pytest.mark.parametrize(("args", "code", "field"), [
    (["--below", "0"], 2, "below"),
    (["--below", "-5"], 2, "below"),
    (["--below", "1.0000001"], 2, "below"),
    (["--below", "lots"], 2, "below"),
    (["--max-per-month", "0"], 2, "max_per_month"),
    (["--max-per-month", "101"], 2, "max_per_month"),
    (["--pack", "addon\n1000"], 2, "pack"),
    (["--pack", "p" * 256], 2, "pack"),
    (["--pack", "professional-monthly"], 2, "pack"),
    (["--pack", "addon-7"], 3, "pack"),
])
def test_topup_set_bad_input_names_the_option_and_writes_nothing(run: Cli, url: str, args: list[str],
                                                                 code: int, field: str) -> None:
    run("topup", "set", "alice", "--below", "3", "--pack", "addon-1000", "--max-per-month", "1", *AT)
    before = every_row(url)
    options = {"--below": "20", "--pack": "addon-1000", "--max-per-month": "2"}
    options.update(dict(zip(args[::2], args[1::2], strict=True)))
    result = run("topup", "set", "alice", *[part for item in options.items() for part in item], *AT, ok=False)
    assert result.exit_code == code, result.output
    assert result.stderr.startswith(f"error: {field}: ") and "Traceback" not in result.output
    assert every_row(url) == before
    assert js(run("topup", "show", "alice", "--json"))["auto_topup"]["below"] == "3"


def test_topup_options_click_refuses_and_an_unknown_account(run: Cli) -> None:
    wrong = run("topup", "set", "alice", "--below", "20", "--pack", "addon-1000", "--max-per-month", "x",
                ok=False)
    assert wrong.exit_code == 2 and "--max-per-month" in wrong.stderr
    missing = run("topup", "set", "alice", "--below", "20", "--pack", "addon-1000", ok=False)
    assert missing.exit_code == 2 and "--max-per-month" in missing.stderr
    for args in (["show", "nobody"], ["off", "nobody"], [*SET[1:2], "nobody", *SET[3:]]):
        result = run("topup", *args, ok=False)
        assert result.exit_code == 3 and "error: account_id: unknown account 'nobody'" in result.stderr, args
    assert js(run("topup", "show", "alice", "--json")) == {"auto_topup": None}
