"""Every bad input of SPEC §11 that applies to the engine and the CLI.

Each case checks (a) the error names the field (and, on the CLI, the exit code: InputError 2,
NotFound 3, Conflict 4) and (b) nothing was written: every table of the database, the balance,
the usage list and the grants are the same before and after, and every invariant still holds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from creditmeter.cli import main
from creditmeter.domain import Charge, Hold, Rejected
from creditmeter.engine import Engine, Settings, Usage
from creditmeter.errors import Conflict, CreditmeterError, InputError, NotFound
from creditmeter.money import MAX_UC, parse_credits
from creditmeter.pricing import Catalog
from creditmeter.store.sql import SqlStore, _driver_url
from tests.conftest import EngineFactory, at

T = at("2026-03-01T12:00:00Z")
T_TEXT = "2026-03-01T12:00:00Z"
S = 1_000_000  # µs per second
LONG = "x" * 256
MAX_ID = "y" * 255


# -- the state that must not change ---------------------------------------------------------------

def dump_tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (the strongest 'nothing was written')."""
    engine = sa.create_engine(_driver_url(url))
    try:
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            return {name: sorted((tuple(row) for row in conn.execute(sa.text(f'SELECT * FROM "{name}"'))),
                                 key=repr)
                    for name in names}
    finally:
        engine.dispose()


def views(engine: Engine, at_us: int = T) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for account, overage in engine.accounts():
        out[account.id] = (overage, engine.balance(account.id, at_us),
                           [(s.event, s.charge) for s in engine.usage(account.id)])
    return out


def state(engine: Engine) -> tuple[Any, Any]:
    return dump_tables(engine.store.url), views(engine)


def populate(engine: Engine, catalog: Catalog) -> None:
    """alice: a trial, an expiring add-on, a charged event and an open hold; bob: nothing."""
    engine.load_prices(catalog, at("2026-01-01"), at("2026-01-01"))
    engine.create_account("alice", T - 3600 * S)
    engine.create_account("bob", T - 3600 * S)
    engine.add_grant("alice", 10_000_000, "trial", T - 3600 * S, grant_id="g-trial",
                     expires_at_us=T + 14 * 86_400 * S)
    engine.add_grant("alice", 100_000_000, "addon", T - 3600 * S, grant_id="g-addon",
                     expires_at_us=T + 365 * 86_400 * S)
    charge = engine.record({"id": "e-first", "account_id": "alice", "model": "gpt-4o",
                            "input_tokens": 1000, "output_tokens": 1000}, T - 60 * S)
    assert isinstance(charge, Charge) and charge.cost_uc == 1_250_000
    hold = engine.reserve("alice", 2_000_000, T - 30 * S, hold_id="h-open", ttl_s=3600)
    assert isinstance(hold, Hold)
    hold2 = engine.reserve("alice", 1_000_000, T - 30 * S, hold_id="h-settled", ttl_s=3600)
    assert isinstance(hold2, Hold)
    engine.settle("h-settled", Usage("gpt-4o", 100, 0), T - 20 * S)


@pytest.fixture
def world(make_engine: EngineFactory, example_catalog: Catalog) -> Engine:
    engine = make_engine()
    populate(engine, example_catalog)
    assert engine.check_invariants() == []
    return engine


_DROP = object()  # a field left out of the event


def ev(**fields: Any) -> dict[str, Any]:
    event = {"id": "e-new", "account_id": "alice", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 10}
    event.update(fields)
    return {k: v for k, v in event.items() if v is not _DROP}


def record(**fields: Any) -> Callable[[Engine], object]:
    return lambda e: e.record(ev(**fields), T)


def grant(amount: int = 5_000_000, kind: str = "addon", account: str = "alice", **kw: Any
          ) -> Callable[[Engine], object]:
    return lambda e: e.add_grant(account, amount, kind, T, **kw)


# (case id, operation, error type, field)
ENGINE_CASES: list[tuple[str, Callable[[Engine], object], type[CreditmeterError], str | None]] = [
    ("negative input tokens", record(input_tokens=-1), InputError, "input_tokens"),
    ("negative output tokens", record(output_tokens=-5), InputError, "output_tokens"),
    ("negative cached tokens", record(cached_input_tokens=-1), InputError, "cached_input_tokens"),
    ("negative cache write tokens", record(cache_write_tokens=-1), InputError, "cache_write_tokens"),
    ("fractional input tokens", record(input_tokens=1.5), InputError, "input_tokens"),
    ("string output tokens", record(output_tokens="10"), InputError, "output_tokens"),
    ("boolean cached tokens", record(cached_input_tokens=True), InputError, "cached_input_tokens"),
    ("null-ish list tokens", record(cache_write_tokens=[1]), InputError, "cache_write_tokens"),
    ("absurd token count", record(input_tokens=10**12 + 1), InputError, "input_tokens"),
    ("negative feature quantity", record(quantities={"web_search": -1}), InputError,
     "quantities.web_search"),
    ("fractional feature quantity", record(quantities={"web_search": 1.5}), InputError,
     "quantities.web_search"),
    ("unknown model", record(model="gpt-99"), InputError, "model"),
    ("unknown feature", record(quantities={"teleport": 1}), InputError, "quantities.teleport"),
    ("no model and no quantities", record(model=_DROP, input_tokens=_DROP, output_tokens=_DROP),
     InputError, "model"),
    ("tokens without a model", record(model=None), InputError, "model"),
    ("unknown account on an event", record(account_id="carol"), NotFound, "account_id"),
    ("event id over 255 chars", record(id=LONG), InputError, "id"),
    ("empty event id", record(id=""), InputError, "id"),
    ("missing event id", record(id=_DROP), InputError, "id"),
    ("event account id over 255 chars", record(account_id=LONG), InputError, "account_id"),
    ("unknown event field", record(tokens=5), InputError, "tokens"),
    ("unknown event field (typo)", record(input_token=5), InputError, "input_token"),
    ("timestamp 5 minutes and 1 µs in the future", record(timestamp="2026-03-01T12:05:00.000001Z"),
     InputError, "timestamp"),
    ("timestamp an hour in the future", record(timestamp="2026-03-01T13:00:00Z"), InputError, "timestamp"),
    ("timestamp just older than the lateness window", record(timestamp="2026-02-22T11:59:59.999999Z"),
     InputError, "timestamp"),
    ("timestamp a month old", record(timestamp="2026-01-20T00:00:00Z"), InputError, "timestamp"),
    ("timestamp not ISO 8601", record(timestamp="yesterday"), InputError, "timestamp"),
    ("timestamp a number", record(timestamp=1772366400), InputError, "timestamp"),
    ("metadata not an object", record(metadata=[1, 2]), InputError, "metadata"),
    ("grant amount negative", grant(amount=-1), InputError, "amount"),
    ("grant amount zero", grant(amount=0), InputError, "amount"),
    ("grant amount over 10^12 credits", grant(amount=MAX_UC + 1), InputError, "amount"),
    # the library takes µc: a fraction of a µc is an amount with more than 6 decimals of credits
    ("grant amount a fraction of a micro-credit", grant(amount=1_000_000.5), InputError, "amount"),  # type: ignore[arg-type]
    ("expiry before effective time", grant(effective_at_us=T + 86_400 * S, expires_at_us=T + 3600 * S),
     InputError, "expires"),
    ("expiry equal to effective time", grant(effective_at_us=T + 3600 * S, expires_at_us=T + 3600 * S),
     InputError, "expires"),
    ("expiry in the past", grant(expires_at_us=T - 1), InputError, "expires"),
    ("expiry in the past with an older effective time",
     grant(effective_at_us=T - 10 * 86_400 * S, expires_at_us=T - 86_400 * S), InputError, "expires"),
    ("expiry now", grant(expires_at_us=T), InputError, "expires"),
    ("grant on an unknown account", grant(account="carol"), NotFound, "account_id"),
    ("grant id over 255 chars", grant(grant_id=LONG), InputError, "id"),
    ("priority below 0", grant(priority=-1), InputError, "priority"),
    ("priority above 100", grant(priority=101), InputError, "priority"),
    ("unknown grant kind", grant(kind="gold"), InputError, "kind"),
    ("grant kind in the wrong case", grant(kind="Trial"), InputError, "kind"),
    ("grant name over 255 chars", grant(name="n" * 256), InputError, "name"),
    ("account id over 255 chars", lambda e: e.create_account(LONG, T), InputError, "id"),
    ("empty account id", lambda e: e.create_account("", T), InputError, "id"),
    ("unknown account kind", lambda e: e.create_account("dave", T, kind="robot"), InputError, "kind"),
    ("hold id over 255 chars", lambda e: e.reserve("alice", 1_000_000, T, hold_id=LONG), InputError, "id"),
    ("hold amount zero", lambda e: e.reserve("alice", 0, T), InputError, "amount"),
    ("hold amount negative", lambda e: e.reserve("alice", -1, T), InputError, "amount"),
    ("hold amount over 10^12 credits", lambda e: e.reserve("alice", MAX_UC + 1, T), InputError, "amount"),
    ("hold amount a fraction of a micro-credit", lambda e: e.reserve("alice", 0.5, T), InputError, "amount"),
    ("hold ttl zero", lambda e: e.reserve("alice", 1_000_000, T, ttl_s=0), InputError, "ttl"),
    ("hold ttl beyond any representable time", lambda e: e.reserve("alice", 1_000_000, T, ttl_s=10**13),
     InputError, "ttl"),
    ("hold on an unknown account", lambda e: e.reserve("carol", 1_000_000, T), NotFound, "account_id"),
    ("settle an unknown hold", lambda e: e.settle("h-nope", Usage("gpt-4o", 1, 1), T), NotFound, "hold_id"),
    ("settle with negative tokens", lambda e: e.settle("h-open", Usage("gpt-4o", -1, 1), T),
     InputError, "input_tokens"),
    ("settle with an unknown model", lambda e: e.settle("h-open", Usage("gpt-99", 1, 1), T),
     InputError, "model"),
    ("settle with an unknown feature",
     lambda e: e.settle("h-open", Usage("gpt-4o", 1, 1, quantities=(("teleport", 1),)), T),
     InputError, "quantities.teleport"),
    ("settle with a negative feature quantity",
     lambda e: e.settle("h-open", Usage("gpt-4o", 1, 1, quantities=(("web_search", -5),)), T),
     InputError, "quantities.web_search"),
    ("settle with a fractional feature quantity",
     lambda e: e.settle("h-open", Usage("gpt-4o", 1, 1, quantities=(("web_search", 1.5),)), T),  # type: ignore[arg-type]
     InputError, "quantities.web_search"),
    ("settle with an event id over 255 chars",
     lambda e: e.settle("h-open", Usage("gpt-4o", 1, 1), T, event_id=LONG), InputError, "id"),
    ("release an unknown hold", lambda e: e.release("h-nope", T), NotFound, "hold_id"),
    ("void an unknown grant", lambda e: e.void_grant("g-nope", T), NotFound, "grant_id"),
    ("balance of an unknown account", lambda e: e.balance("carol", T), NotFound, "account_id"),
    ("usage of an unknown account", lambda e: list(e.usage("carol")), NotFound, "account_id"),
    ("event id reused with another body", record(id="e-first", input_tokens=999), Conflict, None),
    ("grant id reused with another amount", grant(amount=1_000_000, grant_id="g-addon"), Conflict, None),
    ("hold id reused with another amount", lambda e: e.reserve("alice", 5_000_000, T, hold_id="h-open"),
     Conflict, None),
    ("settle a settled hold with other usage", lambda e: e.settle("h-settled", Usage("gpt-4o", 5, 5), T),
     Conflict, None),
    ("release a settled hold", lambda e: e.release("h-settled", T), Conflict, None),
]


@pytest.mark.parametrize(("op", "error", "field"), [c[1:] for c in ENGINE_CASES],
                         ids=[c[0] for c in ENGINE_CASES])
def test_engine_bad_input_names_the_field_and_writes_nothing(
        world: Engine, op: Callable[[Engine], object], error: type[CreditmeterError],
        field: str | None) -> None:
    before = state(world)
    with pytest.raises(error) as info:
        op(world)
    if field is not None:
        assert getattr(info.value, "field", None) == field, str(info.value)
        assert str(info.value)
    assert state(world) == before
    assert world.check_invariants() == []


def test_batch_rejects_only_the_bad_events(world: Engine) -> None:
    before = world.balance("alice", T)
    results = world.record_batch([ev(id="b1"), ev(id="b2", input_tokens=-1), ev(id="b3", model="gpt-99"),
                                  ev(id="b4", account_id="carol"), ev(id="b5", extra=1),
                                  ev(id="b6", timestamp="2027-01-01"), ev(id="b7")], T)
    assert [r.status for r in results] == ["charged", "rejected", "rejected", "rejected", "rejected",
                                           "rejected", "charged"]
    fields = [r.field for r in results if isinstance(r, Rejected)]
    assert fields == ["input_tokens", "model", "account_id", "extra", "timestamp"]
    ids = {s.event.id for s in world.usage("alice")}
    assert {"b1", "b7"} <= ids and not {"b2", "b3", "b4", "b5", "b6"} & ids
    cost = sum(r.cost_uc for r in results if isinstance(r, Charge))
    assert cost == 2 * 12_500
    assert world.balance("alice", T).available_uc == before.available_uc - cost
    assert world.check_invariants() == []


@pytest.mark.parametrize("op", [
    record(id="e-edge-future", timestamp="2026-03-01T12:05:00Z"),         # exactly 5 minutes ahead
    record(id="e-edge-late", timestamp="2026-02-22T12:00:00Z"),           # exactly 7 days old
    record(id=MAX_ID),                                                    # a 255-char id
    grant(priority=0), grant(priority=100),
    grant(amount=MAX_UC, grant_id=MAX_ID),                                 # 10^12 credits, 255-char id
    lambda e: e.create_account("z" * 255, T),
    lambda e: e.reserve("alice", 1_000_000, T, hold_id=MAX_ID),
], ids=["ts +5min", "ts -7d", "event id 255", "priority 0", "priority 100", "amount 10^12 credits",
        "account id 255", "hold id 255"])
def test_the_limits_themselves_are_accepted(world: Engine, op: Callable[[Engine], object]) -> None:
    op(world)
    assert world.check_invariants() == []


def test_lateness_window_is_configurable(make_engine: EngineFactory, example_catalog: Catalog) -> None:
    engine = make_engine(Settings(lateness_window_s=3600))
    engine.load_prices(example_catalog, at("2026-01-01"), at("2026-01-01"))
    engine.create_account("alice", T)
    with pytest.raises(InputError) as info:
        engine.record(ev(timestamp="2026-03-01T10:59:59Z"), T)
    assert info.value.field == "timestamp"
    assert list(engine.usage("alice")) == []
    assert engine.record(ev(timestamp="2026-03-01T11:00:00Z"), T).status == "charged"


@pytest.mark.parametrize(("value", "field"), [
    ("0.0000001", "amount"), ("1.1234567", "amount"), (0.0000001, "amount"), ("-1", "amount"),
    ("1000000000000.000001", "amount"), ("abc", "amount"), ("NaN", "amount"), (True, "amount"),
])
def test_amount_parsing(value: object, field: str) -> None:
    with pytest.raises(InputError) as info:
        parse_credits(value, field)
    assert info.value.field == field


def test_amount_parsing_limits() -> None:
    assert parse_credits("0.000001", "amount") == 1
    assert parse_credits("1000000000000", "amount") == MAX_UC
    assert parse_credits(12.5, "amount") == 12_500_000
    with pytest.raises(InputError):
        parse_credits("0", "amount", allow_zero=False)


# -- CLI -----------------------------------------------------------------------------------------

@pytest.fixture
def cli_db(template_db: Path, tmp_path: Path, example_catalog: Catalog) -> Iterator[str]:
    path = tmp_path / "x.db"
    shutil.copy(template_db, path)
    url = f"sqlite:///{path}"
    engine = Engine(SqlStore(url))
    populate(engine, example_catalog)
    engine.store.close()
    yield url


def run(url: str, args: Sequence[str]) -> Result:
    args = list(args)
    cut = args.index("--") if "--" in args else len(args)  # options go before a '--'
    return CliRunner().invoke(main, [*args[:cut], "--db", url, *args[cut:]])


def cli_state(url: str) -> tuple[Any, ...]:
    engine = Engine(SqlStore(url))
    try:
        return dump_tables(url), views(engine), engine.check_invariants()
    finally:
        engine.store.close()


AT = ["--at", T_TEXT]
REC = ["usage", "record", "alice", "--model", "gpt-4o", "--input", "10", "--id", "e-cli", *AT]
ADD = ["grants", "add", "alice", "5", "--kind", "addon", *AT]

# (case id, argv, exit code, text(s) the error must contain)
CLI_CASES: list[tuple[str, list[str], int, str | tuple[str, ...]]] = [
    ("negative tokens", [*REC, "--output", "-1"], 2, "output_tokens"),
    ("negative cached tokens", [*REC, "--cached-input", "-3"], 2, "cached_input_tokens"),
    ("non-integer tokens", [*REC, "--output", "1.5"], 2, "--output"),
    ("non-integer cache write", [*REC, "--cache-write", "ten"], 2, "--cache-write"),
    ("unknown model", ["usage", "record", "alice", "--model", "gpt-99", "--input", "1", *AT], 2, "model"),
    ("unknown feature", [*REC, "--quantity", "teleport=1"], 2, "quantities.teleport"),
    ("negative feature quantity", [*REC, "--quantity", "web_search=-1"], 2, "quantities.web_search"),
    ("fractional feature quantity", [*REC, "--quantity", "web_search=1.5"], 2, "quantities.web_search"),
    ("malformed quantity", [*REC, "--quantity", "web_search"], 2, "quantit"),
    ("unknown account on record", ["usage", "record", "carol", "--model", "gpt-4o", "--input", "1", *AT],
     3, ("account", "carol")),
    ("event id over 255", ["usage", "record", "alice", "--model", "gpt-4o", "--id", LONG, *AT], 2, "id"),
    ("account id over 255 on record", ["usage", "record", LONG, "--model", "gpt-4o", *AT], 2, "account_id"),
    ("timestamp > 5 min ahead", [*REC, "--timestamp", "2026-03-01T12:05:01Z"], 2, "timestamp"),
    ("timestamp older than the window", [*REC, "--timestamp", "2026-02-20T00:00:00Z"], 2, "timestamp"),
    ("timestamp not ISO", [*REC, "--timestamp", "last tuesday"], 2, "timestamp"),
    ("bad --at on record", ["usage", "record", "alice", "--model", "gpt-4o", "--at", "soon"], 2, "at"),
    ("event id reused with another body", ["usage", "record", "alice", "--model", "gpt-4o", "--input", "5",
                                           "--id", "e-first", *AT], 4, "id"),
    ("amount with 7 decimals", ["grants", "add", "alice", "0.0000001", "--kind", "addon", *AT], 2, "amount"),
    ("amount with 7 decimals (big)", ["grants", "add", "alice", "12.3456789", "--kind", "addon", *AT],
     2, "amount"),
    ("amount zero", ["grants", "add", "alice", "0", "--kind", "addon", *AT], 2, "amount"),
    ("amount negative", ["grants", "add", "alice", "--kind", "addon", *AT, "--", "-5"], 2, "amount"),
    ("amount over 10^12 credits", ["grants", "add", "alice", "1000000000001", "--kind", "addon", *AT],
     2, "amount"),
    ("amount not a number", ["grants", "add", "alice", "lots", "--kind", "addon", *AT], 2, "amount"),
    ("expiry before effective", [*ADD, "--effective", "2026-04-01", "--expires", "2026-03-15"], 2, "expires"),
    ("expiry in the past", [*ADD, "--expires", "2026-02-01"], 2, "expires"),
    ("expiry not ISO", [*ADD, "--expires", "next year"], 2, "expires"),
    ("effective not ISO", [*ADD, "--effective", "tomorrow"], 2, "effective"),
    ("grant on unknown account", ["grants", "add", "carol", "5", "--kind", "addon", *AT], 3,
     ("account", "carol")),
    ("grant id over 255", [*ADD, "--id", LONG], 2, "id"),
    ("grant id reused with another amount",
     ["grants", "add", "alice", "7", "--kind", "addon", "--id", "g-addon", *AT], 4, "g-addon"),
    ("priority above 100", [*ADD, "--priority", "101"], 2, "priority"),
    ("priority below 0", [*ADD, "--priority", "-1"], 2, "priority"),
    ("unknown grant kind", ["grants", "add", "alice", "5", "--kind", "gold", *AT], 2, "kind"),
    ("bad --at on grants add", ["grants", "add", "alice", "5", "--kind", "addon", "--at", "2026-13-01"],
     2, "at"),
    ("void unknown grant", ["grants", "void", "g-nope", *AT], 3, ("grant", "g-nope")),
    ("account id over 255", ["accounts", "create", LONG, *AT], 2, "id"),
    ("bad --at on accounts create", ["accounts", "create", "dave", "--at", "now-ish"], 2, "at"),
    ("hold id over 255", ["holds", "reserve", "alice", "1", "--id", LONG, *AT], 2, "id"),
    ("hold amount with 7 decimals", ["holds", "reserve", "alice", "0.0000001", *AT], 2, "amount"),
    ("hold amount zero", ["holds", "reserve", "alice", "0", *AT], 2, "amount"),
    ("hold amount over 10^12", ["holds", "reserve", "alice", "1000000000001", *AT], 2, "amount"),
    ("hold ttl zero", ["holds", "reserve", "alice", "1", "--ttl", "0", *AT], 2, "ttl"),
    ("hold ttl beyond any representable time",
     ["holds", "reserve", "alice", "1", "--ttl", "10000000000000", *AT], 2, "ttl"),
    ("hold on unknown account", ["holds", "reserve", "carol", "1", *AT], 3, ("account", "carol")),
    ("settle unknown hold", ["holds", "settle", "h-nope", "--model", "gpt-4o", *AT], 3, ("hold", "h-nope")),
    ("settle with unknown model", ["holds", "settle", "h-open", "--model", "gpt-99", "--input", "1", *AT],
     2, "model"),
    ("settle with negative tokens", ["holds", "settle", "h-open", "--model", "gpt-4o", "--input", "-1", *AT],
     2, "input_tokens"),
    ("settle a settled hold again with other usage",
     ["holds", "settle", "h-settled", "--model", "gpt-4o", "--input", "5000", *AT], 4, "id"),
    ("release unknown hold", ["holds", "release", "h-nope", *AT], 3, ("hold", "h-nope")),
    ("release a settled hold", ["holds", "release", "h-settled", *AT], 4, "h-settled"),
    ("balance of unknown account", ["balance", "carol", *AT], 3, ("account", "carol")),
    ("bad --at on balance", ["balance", "alice", "--at", "2026-02-30"], 2, "at"),
    ("bad --at on tick", ["tick", "--at", "noon"], 2, "at"),
    ("usage list of unknown account", ["usage", "list", "carol"], 3, ("account", "carol")),
    ("usage list with a bad --from", ["usage", "list", "alice", "--from", "then"], 2, "from"),
    ("usage list with --to before --from", ["usage", "list", "alice", "--from", "2026-03-01", "--to",
                                            "2026-02-01"], 2, "to"),
    ("grants list of unknown account", ["grants", "list", "carol", *AT], 3, ("account", "carol")),
    ("bad --effective on prices load", ["prices", "load", "CATALOG", "--effective", "later", *AT], 2,
     "effective"),
]


@pytest.mark.parametrize(("argv", "code", "needle"), [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_exits_non_zero_names_the_field_and_writes_nothing(
        cli_db: str, tmp_path: Path, argv: list[str], code: int, needle: str | tuple[str, ...]) -> None:
    if "CATALOG" in argv:
        catalog = tmp_path / "c.yaml"
        catalog.write_text("models:\n  m:\n    input: 1\n    output: 2\n", encoding="utf-8")
        argv = [str(catalog) if a == "CATALOG" else a for a in argv]
    before = cli_state(cli_db)
    assert before[2] == []
    result = run(cli_db, argv)
    assert result.exit_code == code, (result.exit_code, result.output)
    for text in (needle,) if isinstance(needle, str) else needle:
        assert text in result.stderr, result.stderr
    if code != 2 or "error:" in result.stderr:
        # our own errors (not click's usage errors) print 'error: ...' naming the field or object
        assert result.stderr.startswith("error: "), result.stderr
    assert cli_state(cli_db) == before


@pytest.mark.parametrize(("argv", "field"), [
    ([*REC, "--output", "-1"], "output_tokens"),
    (["grants", "add", "alice", "0.0000001", "--kind", "addon", *AT], "amount"),
    ([*ADD, "--priority", "101"], "priority"),
    ([*ADD, "--expires", "2026-02-01"], "expires"),
    (["grants", "add", "alice", "5", "--kind", "gold", *AT], "kind"),
    ([*REC, "--timestamp", "2026-03-01T12:05:01Z"], "timestamp"),
    (["balance", "alice", "--at", "2026-02-30"], "at"),
])
def test_cli_input_errors_print_field_colon_reason(cli_db: str, argv: list[str], field: str) -> None:
    result = run(cli_db, argv)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {field}: "), result.stderr
    assert result.stdout == ""


def test_cli_refused_reservation_exits_non_zero_and_writes_nothing(cli_db: str) -> None:
    before = cli_state(cli_db)
    result = run(cli_db, ["holds", "reserve", "bob", "1", "--id", "h-bob", *AT])
    assert result.exit_code != 0
    assert "refused" in result.stderr
    assert cli_state(cli_db) == before


def _jsonl(path: Path, lines: Sequence[str | dict[str, Any]]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
                    encoding="utf-8")
    return path


def test_cli_import_rejects_only_the_malformed_line(cli_db: str, tmp_path: Path) -> None:
    base = {"account_id": "alice", "model": "gpt-4o", "input_tokens": 1000, "timestamp": T_TEXT}
    path = _jsonl(tmp_path / "events.jsonl", [
        {"id": "i1", **base},
        '{"id": "i2", "account_id": "alice", "model": "gpt-4o", "input_tokens": 1000',   # malformed
        {"id": "i3", **base, "output_tokens": 1000},
    ])
    before_available = Decimal(json.loads(run(cli_db, ["balance", "alice", "--json", *AT]).stdout)
                               ["available_credits"])
    result = run(cli_db, ["usage", "import", str(path), "--json", *AT])
    assert result.exit_code != 0
    summary = json.loads(result.stdout)
    assert (summary["charged"], summary["duplicate"], summary["rejected"]) == (2, 0, 1)
    [rejection] = summary["rejections"]
    assert rejection["line"] == 2
    assert "JSON" in rejection["reason"] or "JSON" in (rejection["field"] or "")
    listed = json.loads(run(cli_db, ["usage", "list", "alice", "--json"]).stdout)
    ids = [row["event_id"] for row in listed]
    assert "i1" in ids and "i3" in ids and "i2" not in ids
    # i1 = 1000 × 250 µc = 0.25; i3 = 0.25 + 1000 × 1000 µc = 1.25; together 1.5 credits
    assert summary["charged_credits"] == "1.5"
    after_available = Decimal(json.loads(run(cli_db, ["balance", "alice", "--json", *AT]).stdout)
                              ["available_credits"])
    assert before_available - after_available == Decimal("1.5")
    assert run(cli_db, ["reconcile"]).exit_code == 0


def test_cli_import_rejects_each_bad_event_with_its_field(cli_db: str, tmp_path: Path) -> None:
    base = {"account_id": "alice", "model": "gpt-4o", "input_tokens": 1000, "timestamp": T_TEXT}
    path = _jsonl(tmp_path / "events.jsonl", [
        {"id": "j1", **base},
        {"id": "j2", **base, "input_tokens": -1},
        {"id": "j3", **base, "output_tokens": 2.5},
        {"id": "j4", **base, "model": "gpt-99"},
        {"id": "j5", **base, "account_id": "carol"},
        {"id": "j6", **base, "colour": "blue"},
        {"id": LONG, **base},
        {"id": "j8", **base, "timestamp": "2026-03-01T12:10:00Z"},
        {"id": "j9", **base, "timestamp": "2026-02-01T00:00:00Z"},
        {"id": "j10", **base, "quantities": {"teleport": 1}},
        "[1, 2, 3]",
        "",
        {"id": "j13", **base},
    ])
    result = run(cli_db, ["usage", "import", str(path), "--json", *AT])
    assert result.exit_code != 0
    summary = json.loads(result.stdout)
    assert summary["charged"] == 2
    assert summary["rejected"] == 10
    by_line = {r["line"]: r for r in summary["rejections"]}
    assert {n: by_line[n]["field"] for n in (2, 3, 4, 5, 6, 7, 8, 9, 10)} == {
        2: "input_tokens", 3: "output_tokens", 4: "model", 5: "account_id", 6: "colour", 7: "id",
        8: "timestamp", 9: "timestamp", 10: "quantities.teleport"}
    assert 11 in by_line
    ids = {row["event_id"] for row in json.loads(run(cli_db, ["usage", "list", "alice", "--json"]).stdout)}
    assert {"j1", "j13"} <= ids
    assert not {"j2", "j3", "j4", "j6", "j8", "j9", "j10"} & ids
    assert run(cli_db, ["reconcile"]).exit_code == 0


@pytest.mark.parametrize("value", [".inf"])
def test_cli_prices_load_rejects_a_non_finite_price(cli_db: str, tmp_path: Path, value: str) -> None:
    catalog = tmp_path / "inf.yaml"
    catalog.write_text(f"models:\n  m:\n    input: {value}\n    output: 1\n", encoding="utf-8")
    before = cli_state(cli_db)
    result = run(cli_db, ["prices", "load", str(catalog), *AT])
    assert result.exit_code == 2, (result.exit_code, result.exception)
    assert result.stderr.startswith("error: ")
    assert "models.m.input" in result.stderr or "inf.yaml" in result.stderr
    assert cli_state(cli_db) == before


LATER = T + 15 * 86_400 * S  # the trial has expired and the open hold's ttl has passed; no tick yet

LATER_CASES: list[tuple[str, Callable[[Engine], object], str]] = [
    ("unknown model", lambda e: e.record(ev(model="gpt-99"), LATER), "model"),
    ("negative tokens", lambda e: e.record(ev(input_tokens=-1), LATER), "input_tokens"),
    ("old timestamp", lambda e: e.record(ev(timestamp="2026-03-01T00:00:00Z"), LATER), "timestamp"),
    ("bad priority", lambda e: e.add_grant("alice", 1_000_000, "addon", LATER, priority=101), "priority"),
    ("expiry in the past", lambda e: e.add_grant("alice", 1_000_000, "addon", LATER, expires_at_us=T),
     "expires"),
    ("bad hold amount", lambda e: e.reserve("alice", 0, LATER), "amount"),
    ("settle with an unknown model", lambda e: e.settle("h-open", Usage("gpt-99", 1, 1), LATER), "model"),
]


@pytest.mark.parametrize(("op", "field"), [c[1:] for c in LATER_CASES], ids=[c[0] for c in LATER_CASES])
def test_bad_input_after_expiries_still_writes_nothing(world: Engine, op: Callable[[Engine], object],
                                                       field: str) -> None:
    """Expiries and timed-out holds due but not yet swept: a rejected command must not record them."""
    before = dump_tables(world.store.url), views(world, LATER)
    with pytest.raises(InputError) as info:
        op(world)
    assert info.value.field == field
    assert (dump_tables(world.store.url), views(world, LATER)) == before
    assert world.check_invariants() == []
