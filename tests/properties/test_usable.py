"""The grants a book draws on at an instant, remembered per stretch of time, are always those a
scan of every grant finds: whatever grants are added or voided between the draws, and in
whatever order of time the draws come."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from creditmeter.burndown import order_key
from creditmeter.domain import Account, AccountId, AccountKind, Grant, GrantId, GrantKind
from creditmeter.ledger import PERIOD_PREFIX, ROLLOVER_PREFIX, Book, Counters

ACCOUNT = AccountId("a")
KINDS = [GrantKind.TRIAL, GrantKind.SUBSCRIPTION, GrantKind.ADDON, GrantKind.PROMO]


def _scan(book: Book, at_us: int) -> list[GrantId]:
    """The grants usable at ``at_us``, found the long way: every grant looked at."""
    order = sorted(book.grants, key=order_key)
    ids = []
    for g in order:
        if g.voided_at_us is None and g.effective_at_us <= at_us and (
                g.expires_at_us is None or at_us < g.expires_at_us):
            ids.append(g.id)
            later = book.grant(GrantId(ROLLOVER_PREFIX + g.id[len(PERIOD_PREFIX):])) \
                if g.id.startswith(PERIOD_PREFIX) else None
            if later is not None and later.voided_at_us is None and at_us < later.effective_at_us:
                ids.append(later.id)
    return ids


times = st.integers(0, 40)


@st.composite
def grants(draw: st.DrawFn, seq: int) -> list[Grant]:
    """A grant, or a period's package and (maybe) its rollover starting when it ends."""
    start = draw(times)
    length = draw(st.one_of(st.none(), st.integers(1, 20)))
    end = None if length is None else start + length
    priority = draw(st.integers(0, 3))
    if end is not None and draw(st.booleans()):
        period = Grant(GrantId(f"{PERIOD_PREFIX}s@{seq}"), ACCOUNT, GrantKind.SUBSCRIPTION, 10, priority,
                       start, end, "p", "s", seq, 0)
        made = [period]
        if draw(st.booleans()):
            made.append(Grant(GrantId(f"{ROLLOVER_PREFIX}s@{seq}"), ACCOUNT, GrantKind.ROLLOVER, 5, priority,
                              end, end + draw(st.integers(1, 10)), "r", "rollover", seq + 1, 0))
        return made
    return [Grant(GrantId(f"g{seq}"), ACCOUNT, draw(st.sampled_from(KINDS)), 10, priority, start, end,
                  "g", "cli", seq, 0)]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_usable_grants_are_those_a_scan_finds(data: st.DataObject) -> None:
    first = [g for seq in range(data.draw(st.integers(0, 4))) for g in data.draw(grants(seq * 2))]
    book = Book(Account(ACCOUNT, "a", AccountKind.USER, 0), 0, [(g, Counters()) for g in first], [])
    seq = 100
    pending: list[Grant] = []  # rollovers made later than their period's package, after draws
    for _ in range(data.draw(st.integers(1, 25))):
        step = data.draw(st.sampled_from(["draw", "draw", "draw", "add", "void"]))
        if step == "add" and pending and data.draw(st.booleans()):
            book.add_grant(pending.pop(0), 0, pay=False)
        elif step == "add":
            made = data.draw(grants(seq))
            book.add_grant(made[0], 0, pay=False)
            pending += made[1:]
            seq += 2
        elif step == "void":
            live = [g for g in book.grants if g.voided_at_us is None]
            if live:
                book.void(data.draw(st.sampled_from(live)), 0)
        else:
            at = data.draw(times)
            assert [gid for gid, _ in book.drawable(at)] == _scan(book, at), at
