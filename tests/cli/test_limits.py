"""``creditmeter limits`` and ``creditmeter policy``: set, list, remove and show them, on each
store; what ``balance`` and a refused ``holds reserve`` say of them; bad input exits non-zero
naming the field and writes nothing."""

from __future__ import annotations

import pytest

from tests.cli.test_cli import Cli, cli, db_url, invoke, js, priced  # noqa: F401 - fixtures

T = "2026-03-01T12:00:00Z"
AT = ("--at", T)
LIMIT_KEYS = {"id", "scope", "window", "calendar", "source", "limit_credits", "used_credits",
              "held_credits", "remaining_credits", "window_start", "resets_at", "description"}


@pytest.fixture
def run(priced: Cli) -> Cli:  # noqa: F811
    """The example prices and an account 'alice' (no plan), on each store."""
    return priced


def limits_of(run: Cli, account: str = "alice") -> list[dict[str, object]]:
    return js(run("limits", "list", account, "--json", *AT))  # type: ignore[no-any-return]


def test_limits_set_list_replace_and_remove(run: Cli) -> None:
    run("grants", "add", "alice", "100", "--kind", "addon", "--at", "2026-03-01")
    run("usage", "record", "alice", "--model", "gpt-4o", "--input", "40000", "--at", "2026-03-01T10:00:00Z")
    made = js(run("limits", "set", "alice", "--window", "1d", "--calendar", "Asia/Shanghai", "--credits",
                  "25", "--id", "daily-cap", *AT, "--json"))
    assert set(made) == LIMIT_KEYS
    assert (made["id"], made["scope"], made["window"], made["calendar"], made["source"]) == (
        "daily-cap", "account", "1d", "Asia/Shanghai", "operator")
    # The Shanghai day of 12:00 UTC runs from 16:00 UTC the day before; 40,000 gpt-4o input
    # tokens (10 credits) at 10:00 UTC count in it.
    assert (made["limit_credits"], made["used_credits"], made["remaining_credits"]) == ("25", "10", "15")
    assert (made["window_start"], made["resets_at"]) == ("2026-02-28T16:00:00Z", "2026-03-01T16:00:00Z")
    assert made["description"] == "25 credits per day (Asia/Shanghai)"
    said = run("limits", "set", "alice", "--window", "rolling 5h", "--credits", "300", *AT).stdout
    assert said.startswith("limit lim_") and "300 credits in any 5 hours (used 10, held 0)" in said
    assert [r["id"] for r in limits_of(run)][0] == "daily-cap" and len(limits_of(run)) == 2

    # The same id again replaces the limit.
    run("limits", "set", "alice", "--window", "7d", "--credits", "40.5", "--id", "daily-cap", *AT)
    replaced = [r for r in limits_of(run) if r["id"] == "daily-cap"]
    assert [(r["window"], r["limit_credits"], r["calendar"]) for r in replaced] == [("7d", "40.5", "UTC")]
    assert len(limits_of(run)) == 2

    table = run("limits", "list", "alice", *AT).stdout
    assert "daily-cap" in table and "10 / 40.5" in table and "10 / 300" in table

    removed = run("limits", "remove", "alice", "daily-cap", *AT)
    assert removed.stdout == "limit daily-cap removed from alice: 40.5 credits per 7 days\n"
    assert [r["id"] for r in limits_of(run)] != ["daily-cap"] and len(limits_of(run)) == 1
    again = run("limits", "remove", "alice", "daily-cap", *AT, ok=False)
    assert again.exit_code == 3 and "limit_id: unknown limit 'daily-cap'" in again.stderr


def test_a_limit_on_a_key_and_on_an_enterprise_member(run: Cli) -> None:
    key = js(run("keys", "create", "alice", "--name", "ci", *AT, "--json"))
    on_key = js(run("limits", "set", "alice", "--scope", "key", "--key-id", key["key_id"],
                    "--window", "total", "--credits", "5", *AT, "--json"))
    assert (on_key["scope"], on_key["key_id"], on_key["resets_at"]) == ("key", key["key_id"], None)
    assert on_key["description"] == f"5 credits in total through key {key['key_id']}"
    run("accounts", "create", "team", "--kind", "enterprise", *AT)
    run("enterprise", "add-member", "team", "alice", *AT)
    member = js(run("limits", "set", "alice", "--scope", "member", "--enterprise", "team", "--window", "1mo",
                    "--credits", "50", *AT, "--json"))
    assert (member["scope"], member["enterprise_id"]) == ("member", "team")
    table = run("limits", "list", "alice", *AT).stdout
    assert f"key {key['key_id']}" in table and "member of team" in table


@pytest.mark.parametrize(("args", "code", "field"), [
    (["--window", "rolling 1mo", "--credits", "5"], 2, "limit.window"),
    (["--window", "sometimes", "--credits", "5"], 2, "limit.window"),
    (["--window", "1d", "--credits", "1.0000001"], 2, "limit.credits"),
    (["--window", "1d", "--credits", "-5"], 2, "limit.credits"),
    (["--window", "1d", "--credits", "0"], 2, "limit.credits"),
    (["--window", "1d", "--credits", "5", "--calendar", "Mars/Olympus"], 2, "limit.calendar"),
    (["--window", "1d", "--credits", "5", "--id", "plan-9"], 2, "id"),
    (["--window", "1d", "--credits", "5", "--scope", "key"], 2, "key_id"),
    (["--window", "1d", "--credits", "5", "--key-id", "key_x"], 2, "key_id"),
    (["--window", "1d", "--credits", "5", "--scope", "key", "--key-id", "key_nobody"], 3, "key_id"),
    (["--window", "1d", "--credits", "5", "--scope", "member", "--enterprise", "nowhere"], 2,
     "enterprise_id"),
])
def test_limits_set_bad_input_names_the_field_and_writes_nothing(run: Cli, args: list[str], code: int,
                                                                  field: str) -> None:
    before = limits_of(run)
    result = run("limits", "set", "alice", *args, *AT, ok=False)
    assert result.exit_code == code, result.output
    assert f"error: {field}" in result.stderr and "Traceback" not in result.output
    assert limits_of(run) == before


def test_limits_of_an_unknown_account(run: Cli) -> None:
    for args in (["set", "nobody", "--window", "1d", "--credits", "5"], ["list", "nobody"],
                 ["remove", "nobody", "lim_1"]):
        result = run("limits", *args, *AT, ok=False)
        assert result.exit_code == 3 and "unknown account 'nobody'" in result.stderr, args


def test_policy_set_and_show(run: Cli) -> None:
    shown = js(run("policy", "show", "alice", *AT, "--json"))
    assert shown == {"mode": "block", "description": "when your credits run out, requests are refused"}
    said = run("policy", "show", "alice", *AT).stdout
    assert said == "alice: when your credits run out, requests are refused\n"

    overage = js(run("policy", "set", "alice", "overage", "10.50", *AT, "--json"))
    assert (overage["mode"], overage["overage_cap_credits"]) == ("overage", "10.5")
    assert js(run("policy", "show", "alice", *AT, "--json")) == overage
    fallback = run("policy", "set", "alice", "fallback", "demo-small", "--daily-cap", "3", *AT).stdout
    assert fallback == "alice: when your credits run out, requests use demo-small, up to 3 a day\n"
    shown = js(run("policy", "show", "alice", *AT, "--json"))
    assert (shown["mode"], shown["fallback_model"], shown["daily_cap"]) == ("fallback", "demo-small", 3)
    assert js(run("policy", "set", "alice", "fallback", "demo-small", *AT, "--json"))["daily_cap"] is None
    assert js(run("policy", "set", "alice", "block", *AT, "--json"))["mode"] == "block"
    run("policy", "set", "alice", "overage", "1", *AT)
    # plan: back to the plan's policy (alice has no plan: block)
    assert js(run("policy", "set", "alice", "plan", *AT, "--json"))["mode"] == "block"
    assert js(run("policy", "show", "alice", *AT, "--json"))["mode"] == "block"


@pytest.mark.parametrize(("args", "field"), [
    (["sometimes"], "mode"),
    (["overage"], "cap"),
    (["overage", "-5"], "cap"),
    (["overage", "0"], "cap"),
    (["overage", "1.0000001"], "cap"),
    (["fallback"], "model"),
    (["block", "now"], "mode"),
    (["plan", "pro"], "mode"),
    (["overage", "10", "--daily-cap", "3"], "daily_cap"),
    (["fallback", "demo-small", "--daily-cap", "0"], "when_out_of_credits.daily_cap"),
])
def test_policy_set_bad_input_names_the_field_and_writes_nothing(run: Cli, args: list[str],
                                                                  field: str) -> None:
    run("policy", "set", "alice", "overage", "7", *AT)
    result = run("policy", "set", "alice", *args, *AT, ok=False)
    assert result.exit_code == 2, result.output
    assert f"error: {field}: " in result.stderr and "Traceback" not in result.output
    assert js(run("policy", "show", "alice", *AT, "--json"))["overage_cap_credits"] == "7"


def test_policies_at_work_in_holds_reserve(run: Cli) -> None:
    run("grants", "add", "alice", "5", "--kind", "addon", *AT)
    run("policy", "set", "alice", "overage", "10", *AT)
    # 12 with 5 available: 7 may run into overage (at most 10)
    assert js(run("holds", "reserve", "alice", "12", *AT, "--json"))["amount_credits"] == "12"
    capped = run("holds", "reserve", "alice", "4", *AT, "--json", ok=False)
    assert capped.exit_code == 6 and js(capped)["code"] == "insufficient_credits"
    assert "overage cap" in capped.stderr

    run("accounts", "create", "bo", *AT)
    run("policy", "set", "bo", "fallback", "demo-small", *AT)
    refused = run("holds", "reserve", "bo", "1", *AT, "--json", ok=False)
    assert refused.exit_code == 6
    assert (js(refused)["code"], js(refused)["fallback_model"]) == ("insufficient_credits", "demo-small")
    assert "the account's policy falls back to demo-small" in refused.stderr


def test_a_hold_refused_by_a_limit_says_which_and_when_it_frees_up(run: Cli) -> None:
    run("grants", "add", "alice", "100", "--kind", "addon", *AT)
    run("limits", "set", "alice", "--window", "1d", "--credits", "3", "--id", "day", *AT)
    run("usage", "record", "alice", "--model", "gpt-4o", "--input", "8000", "--at", "2026-03-01T09:30:00Z")
    refused = run("holds", "reserve", "alice", "1.5", *AT, ok=False)
    assert refused.exit_code == 6 and refused.stdout == ""
    assert refused.stderr == ("refused: limit day reached: 3 credits per day: used 2, held 0, requested 1.5; "
                              "enough frees up at 2026-03-02T00:00:00Z\n")
    as_json = js(run("holds", "reserve", "alice", "1.5", *AT, "--json", ok=False))
    assert (as_json["code"], as_json["limit"]["id"], as_json["limit"]["frees_at"]) == (
        "limit_reached", "day", "2026-03-02T00:00:00Z")
    # More than the limit itself: waiting alone frees nothing that would let it pass.
    never = run("holds", "reserve", "alice", "4", *AT, ok=False)
    assert never.exit_code == 6 and "waiting alone will not free enough" in never.stderr
    assert js(run("balance", "alice", *AT, "--json"))["held_credits"] == "0"
    assert js(run("holds", "reserve", "alice", "1", *AT, "--json"))["amount_credits"] == "1"


def test_balance_shows_limits_and_the_policy(run: Cli, db_url: str) -> None:  # noqa: F811
    run("grants", "add", "alice", "100", "--kind", "addon", *AT)
    run("limits", "set", "alice", "--window", "rolling 5h", "--credits", "300", "--id", "five-hours", *AT)
    run("usage", "record", "alice", "--model", "gpt-4o", "--input", "8000", "--at", "2026-03-01T09:30:00.5Z")
    run("policy", "set", "alice", "overage", "10", *AT)
    table = invoke(["balance", "alice", *AT, "--db", db_url], env={"COLUMNS": "200"}).stdout
    row = next(line for line in table.splitlines() if "five-hours" in line)
    assert "2 / 300" in row and "298" in row and "2026-03-01 14:30:00.500000" in row
    assert ("When your credits run out, requests go on as overage up to 10 credits, paid from your next "
            "credits.") in table
    data = js(run("balance", "alice", *AT, "--json"))
    assert [r["id"] for r in data["limits"]] == ["five-hours"]
    assert data["when_out_of_credits"]["mode"] == "overage" and data["allowances"] == []
