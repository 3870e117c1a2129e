"""A command loads only the holds it needs: the account's open holds past their ttl, and the hold
it settles or releases. What the others hold still counts, through the grants' counters and the
indexed sum of open holds."""

from __future__ import annotations

from creditmeter.domain import AccountId, Hold, HoldStatus, Refused
from creditmeter.engine import Engine, Usage
from tests.conftest import at

CREDIT = 1_000_000
S = 1_000_000
T0 = at("2026-11-02T10:00")


def _account(engine: Engine) -> None:
    engine.create_account("a", T0)
    engine.add_grant("a", 100 * CREDIT, "addon", T0, grant_id="g")


def test_a_book_is_loaded_with_only_the_holds_past_their_ttl(engine: Engine) -> None:
    _account(engine)
    for i in range(3):
        assert isinstance(engine.reserve("a", CREDIT, T0, hold_id=f"long-{i}", ttl_s=600), Hold)
    assert isinstance(engine.reserve("a", CREDIT, T0, hold_id="short", ttl_s=10), Hold)
    with engine.store.transaction() as tx:
        book = tx.load_books(["a"], lapsed_by_us=T0 + 20 * S)[AccountId("a")]
        assert sorted(book.holds) == ["short"]
        assert book.held_uc() == 4 * CREDIT  # the grant's counter has them all
        assert tx.open_holds_uc("a") == 4 * CREDIT
        every = tx.load_books(["a"])[AccountId("a")]  # no instant: every open hold
        assert sorted(every.holds) == ["long-0", "long-1", "long-2", "short"]
    charge = engine.settle("long-1", Usage("gpt-4o", 1_000, 100), T0 + 20 * S)
    assert charge.hold_id == "long-1"
    assert engine.release("long-2", T0 + 20 * S).status is HoldStatus.RELEASED
    balance = engine.balance("a", T0 + 20 * S)
    assert balance.held_uc == CREDIT  # long-0 only: short lapsed, the others ended
    assert engine.check_invariants() == []


def test_a_book_kept_between_batches_takes_in_the_holds_lapsed_since(engine: Engine) -> None:
    _account(engine)
    assert isinstance(engine.reserve("a", 5 * CREDIT, T0, hold_id="h", ttl_s=10), Hold)
    event = {"account_id": "a", "model": "gpt-4o", "input_tokens": 1_000}
    engine.record_batch([{**event, "id": "e1"}], T0 + S)  # the book is kept, loaded before h lapsed
    engine.record_batch([{**event, "id": "e2"}], T0 + 20 * S)  # reused: h has lapsed meanwhile
    with engine.store.transaction() as tx:
        hold = tx.get_hold("h")
        assert hold is not None and hold[0].status is HoldStatus.EXPIRED
    assert engine.balance("a", T0 + 20 * S).held_uc == 0
    assert engine.check_invariants() == []


def test_a_limit_counts_every_open_hold_and_frees_what_lapsed(engine: Engine) -> None:
    _account(engine)
    engine.set_limit("a", "1d", "10", T0)
    assert isinstance(engine.reserve("a", 6 * CREDIT, T0, hold_id="first", ttl_s=10), Hold)
    refused = engine.reserve("a", 6 * CREDIT, T0 + S, hold_id="second", ttl_s=600)
    assert isinstance(refused, Refused) and refused.limit is not None
    assert refused.limit.held_uc == 6 * CREDIT
    # "first" lapsed: still open as stored, ended by this command before the limit is checked.
    assert isinstance(engine.reserve("a", 6 * CREDIT, T0 + 20 * S, hold_id="third", ttl_s=600), Hold)
    assert [s.held_uc for s in engine.limits("a", T0 + 20 * S)] == [6 * CREDIT]
    assert engine.check_invariants() == []


def test_a_key_limit_counts_only_that_keys_open_holds(engine: Engine) -> None:
    _account(engine)
    key, _ = engine.create_key("a", T0, name="k")
    engine.set_limit("a", "1d", "10", T0, scope="key", key_id=key.id)
    assert isinstance(engine.reserve("a", 8 * CREDIT, T0, hold_id="plain", ttl_s=600), Hold)
    assert isinstance(engine.reserve("a", 6 * CREDIT, T0, hold_id="keyed", ttl_s=600, key_id=key.id), Hold)
    refused = engine.reserve("a", 6 * CREDIT, T0 + S, hold_id="more", ttl_s=600, key_id=key.id)
    assert isinstance(refused, Refused) and refused.limit is not None
    assert refused.limit.held_uc == 6 * CREDIT
    engine.release("keyed", T0 + 2 * S)
    assert isinstance(engine.reserve("a", 6 * CREDIT, T0 + 3 * S, hold_id="again", ttl_s=600,
                                     key_id=key.id), Hold)
    assert engine.check_invariants() == []
