"""An allocation reads the drawable grants only as far as the one that covers what is left (a
book's drawing works each grant's figures out as it is read)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from creditmeter.burndown import allocate
from creditmeter.domain import Allocation, GrantId


def _drawable(*grants: tuple[str, int]) -> Iterator[tuple[GrantId, int]]:
    for grant_id, amount in grants:
        yield GrantId(grant_id), amount
    raise AssertionError("read past the last grant")


def _stop_after(grants: list[tuple[str, int]], covering: int) -> Iterator[tuple[GrantId, int]]:
    for index, (grant_id, amount) in enumerate(grants):
        if index > covering:
            raise AssertionError(f"read {grant_id} after the grant that covered the amount")
        yield GrantId(grant_id), amount


@pytest.mark.parametrize(("amount", "covering", "parts", "short"), [
    (50, 0, [("a", 50)], 0),  # the first covers it
    (100, 0, [("a", 100)], 0),  # exactly
    (130, 2, [("a", 100), ("c", 30)], 0),  # b has nothing left
    (300, 2, [("a", 100), ("c", 40)], 160),  # short: every grant read
])
def test_reads_no_grant_past_the_one_that_covers(amount: int, covering: int,
                                                  parts: list[tuple[str, int]], short: int) -> None:
    grants = [("a", 100), ("b", 0), ("c", 40)]
    got, left = allocate(_stop_after(grants, covering), amount)
    assert got == [Allocation(GrantId(g), n) for g, n in parts] and left == short


def test_nothing_to_allocate_reads_nothing() -> None:
    assert allocate(_stop_after([("a", 100)], -1), 0) == ([], 0)


def test_a_shortfall_reads_to_the_end() -> None:
    with pytest.raises(AssertionError, match="past the last"):
        allocate(_drawable(("a", 10), ("b", -5)), 100)
