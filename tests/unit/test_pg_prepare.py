"""``CREDITMETER_PG_PREPARE`` turns the preparing of short statements on PostgreSQL off (for a
pooler that cannot keep prepared statements); anything but on or off is refused by name."""

from __future__ import annotations

import pytest

from creditmeter.errors import InputError
from creditmeter.store import driver


def test_prepared_by_default_and_off_when_asked() -> None:
    assert driver.prepares({}) is True
    assert driver.prepares({"CREDITMETER_PG_PREPARE": "on"}) is True
    assert driver.prepares({"CREDITMETER_PG_PREPARE": " OFF "}) is False


def test_anything_else_is_refused_by_name() -> None:
    with pytest.raises(InputError, match="CREDITMETER_PG_PREPARE"):
        driver.prepares({"CREDITMETER_PG_PREPARE": "no"})


def test_off_prepares_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert driver.prepare(("a", 1)) is True
    assert driver.prepare(tuple(range(driver.PREPARE_MAX_PARAMS + 1))) is False
    monkeypatch.setattr(driver, "PREPARE", False)
    assert driver.prepare(("a", 1)) is False
