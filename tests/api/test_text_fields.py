"""Free text that is not text: NUL (which PostgreSQL cannot store), other control characters and
lone surrogates (what undecodable bytes in a command's arguments become) in a name, a model or a
feature name are refused naming the field and write nothing, on each store; in a query's model
filter they are a 400, before any listing starts (never a 500, never a truncated CSV)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from creditmeter.engine import Engine
from tests.api.conftest import OPERATOR
from tests.conftest import at

JSON = {**OPERATOR, "content-type": "application/json"}
BAD = ["A\u0000lice", "tab\there", "esc\x1b[31m", "\x9b", "lone \ud800"]


def _refused(response: object, field: str) -> None:
    assert 400 <= response.status_code < 500, response.text  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["field"].split(".")[0] == field or error["field"].startswith(field), error


@pytest.mark.parametrize("text", BAD)
def test_a_name_that_is_not_text_is_refused_and_writes_nothing(alice: TestClient, engine: Engine,
                                                               text: str) -> None:
    body = "{\"id\": \"bob\", \"name\": " + json.dumps(text) + "}"
    _refused(alice.post("/api/accounts", content=body, headers=JSON), "name")
    grant = "{\"amount_credits\": \"5\", \"kind\": \"promo\", \"id\": \"g-x\", \"name\": " + \
        json.dumps(text) + "}"
    _refused(alice.post("/api/accounts/alice/grants", content=grant,
                        headers=JSON), "name")
    key = "{\"name\": " + json.dumps(text) + "}"
    _refused(alice.post("/api/accounts/alice/keys", content=key,
                        headers=JSON), "name")
    assert [a.id for a, _ in engine.accounts()] == ["alice"]
    assert "g-x" not in {p.grant.id for p in engine.balance("alice", at("2026-11-10T12:00:00Z")).packages}
    assert engine.keys("alice") == []


@pytest.mark.parametrize("text", BAD)
def test_a_model_or_feature_that_is_not_text_is_rejected_naming_it(alice: TestClient, text: str) -> None:
    events = [{"id": "e-model", "account_id": "alice", "model": text, "input_tokens": 5},
              {"id": "e-feature", "account_id": "alice", "quantities": {text: 1}}]
    answer = alice.post("/api/usage", content=json.dumps({"events": events}),
                        headers=JSON)
    assert answer.status_code in (200, 422), answer.text
    if answer.status_code == 200:
        results = answer.json()["results"]
        assert [r["status"] for r in results] == ["rejected", "rejected"], results
        assert [r["error"]["field"] for r in results] == ["model", "quantities"], results
    assert alice.get("/api/accounts/alice/usage", headers=OPERATOR).json()["events"] == []


@pytest.mark.parametrize("path", ["usage", "usage/summary", "usage.csv"])
def test_a_model_filter_that_is_not_text_is_a_400_before_any_listing(alice: TestClient, path: str) -> None:
    answer = alice.get(f"/api/accounts/alice/{path}", params={"model": "gpt\x00"}, headers=OPERATOR)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "model"


def test_cli_names_from_undecodable_bytes_are_refused_naming_them(tmp_path: Path) -> None:
    env = {**os.environ, "CREDITMETER_DB": f"sqlite:///{tmp_path / 'cli.db'}"}
    run = [sys.executable, "-m", "creditmeter.cli"]
    for args in ([b"accounts", b"create", b"bob", b"--name", b"\xff"],
                 [b"accounts", b"create", b"carol"],
                 [b"keys", b"create", b"carol", b"--name", b"k\xff"],
                 [b"grants", b"add", b"carol", b"5", b"--kind", b"promo", b"--name", b"\xfe"]):
        done = subprocess.run([*map(os.fsencode, run), *args], env=env, capture_output=True, timeout=60)
        if args[-1] == b"carol":
            assert done.returncode == 0, done.stderr
            continue
        assert done.returncode == 2, done.stderr
        assert b"Traceback" not in done.stderr and done.stderr.startswith(b"error: name:"), done.stderr
    listed = subprocess.run([*run, "accounts", "list", "--json"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert '"bob"' not in listed.stdout and '"carol"' in listed.stdout
