"""Whole numbers in JSON: one rule for the API and ``usage import``. A count written with a zero
fraction (``60.0``) is that whole number; a fractional one is refused naming the field, with the
value as it was written (never a Python repr such as ``Decimal('60.5')``).

Also: a 405 lists in ``Allow`` every method the path takes, not only the first route's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from creditmeter.engine import Engine
from creditmeter.ingest import import_jsonl
from tests.api.conftest import NOW, OPERATOR
from tests.conftest import at

JSON = {**OPERATOR, "content-type": "application/json"}


def event(event_id: str, tokens: str) -> bytes:
    return (b'{"id": "' + event_id.encode() + b'", "account_id": "alice", "model": "gpt-4o", '
            b'"output_tokens": 1, "input_tokens": ' + tokens.encode() + b"}")


@pytest.mark.parametrize(("literal", "whole"), [("60.0", 60), ("1000.000", 1000), ("1E+3", 1000), ("0.0", 0)])
def test_a_count_written_with_a_zero_fraction_is_that_whole_number(alice: TestClient, literal: str,
                                                                   whole: int) -> None:
    body = alice.post("/api/usage", content=b'{"events": [' + event("e-1", literal) + b"]}", headers=JSON)
    assert body.status_code == 200, body.text
    assert body.json()["charged"] == 1, body.text
    [stored] = alice.get("/api/accounts/alice/usage", headers=OPERATOR).json()["events"]
    assert stored["input_tokens"] == whole


@pytest.mark.parametrize(("literal", "shown"), [("60.5", "60.5"), ("0.0000001", "0.0000001"),
                                                ('"12"', '"12"'), ("true", "true")])
def test_a_fractional_count_is_rejected_showing_the_value_as_written(alice: TestClient, engine: Engine,
                                                                     tmp_path: Path, literal: str,
                                                                     shown: str) -> None:
    body = alice.post("/api/usage", content=b'{"events": [' + event("e-1", literal) + b"]}", headers=JSON)
    [result] = body.json()["results"]
    assert result["status"] == "rejected", result
    assert result["error"]["field"] == "input_tokens", result
    assert result["error"]["message"] == f"must be a whole number, got {shown}", result
    # usage import reads its lines with the same rule, in the same words.
    lines = tmp_path / "usage.jsonl"
    lines.write_bytes(event("e-2", literal) + b"\n" + event("e-3", "60.0") + b"\n")
    summary = import_jsonl(engine, lines, at(NOW))
    assert summary.charged == 1, summary.to_dict()
    assert summary.rejected == [(1, "e-2", "input_tokens", f"must be a whole number, got {shown}")]


def test_a_zero_fraction_is_whole_in_every_body_field(alice: TestClient) -> None:
    hold = alice.post("/api/accounts/alice/holds", headers=JSON,
                      content=b'{"amount_credits": "1", "ttl_seconds": 60.0, "id": "h-1"}')
    assert hold.status_code == 201, hold.text
    settle = alice.post("/api/holds/h-1/settle", headers=JSON, content=b'{"model": "gpt-4o", '
                        b'"input_tokens": 100.0, "quantities": {"web_search": 1.0}}')
    assert settle.status_code == 200, settle.text
    grant = alice.post("/api/accounts/alice/grants", headers=JSON,
                       content=b'{"amount_credits": "1", "kind": "addon", "priority": 7.0}')
    assert grant.status_code == 201 and grant.json()["priority"] == 7, grant.text
    fractional = alice.post("/api/accounts/alice/holds", headers=JSON,
                            content=b'{"amount_credits": "1", "ttl_seconds": 60.5}')
    assert fractional.status_code == 422, fractional.text
    assert fractional.json()["error"]["field"] == "ttl_seconds"


@pytest.mark.parametrize(("path", "methods"), [
    ("/api/accounts", "GET, POST"), ("/api/plans", "GET, POST"), ("/api/prices", "GET, POST"),
    ("/api/accounts/alice/grants", "GET, POST"), ("/api/accounts/alice/keys", "GET, POST"),
    ("/api/me", "GET"),
])
def test_a_405_allows_every_method_the_path_takes(api: TestClient, path: str, methods: str) -> None:
    response = api.delete(path, headers=OPERATOR)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == methods
    assert response.json()["error"]["type"] == "method_not_allowed"
