"""A hostile client: whatever bytes it posts to the API, the gateway or the console, the answer is
never a 5xx, and it is always valid JSON text in the error shape of its edge.

Strings that are not valid text (a lone UTF-16 surrogate written as ``"\\ud800"``), NUL, nesting
thousands of levels deep, numbers of thousands of digits, duplicate keys, tops that are not
objects, bytes that are not UTF-8, malformed JSON. A body that is not JSON text at all (malformed,
not UTF-8, nested too deeply) is 422 ``invalid_input`` naming ``body`` on the API; a string or a
field name that is not valid text is 422 naming where it is.

The app is the real one (API, console and gateway, on the built-in demo upstream) over a real
SQLite database, driven in process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as fixed_seed
from hypothesis import strategies as st

from creditmeter.engine import Engine
from creditmeter.gateway import Gateway
from creditmeter.server import create_app
from creditmeter.serverconfig import DEMO_UPSTREAM, GatewaySection, UpstreamModel
from tests.api.conftest import ADMIN_KEY, OPERATOR, Clock, bearer

JSON_HEADERS = {**OPERATOR, "content-type": "application/json"}
EVENT = {"id": "e-1", "account_id": "alice", "model": "demo-large", "input_tokens": 10,
         "quantities": {"web_search": 1}, "metadata": {"conversation": "c1"}}
# Each route and a body it takes: the fuzzing changes it.
BODIES: dict[str, Any] = {
    "/api/usage": {"events": [EVENT]},
    "/api/holds/h-open/settle": {"model": "demo-large", "input_tokens": 5, "id": "s-1"},
    "/api/plans": {"plans": [{"id": "pro", "kind": "subscription", "name": "Pro", "credits": "10",
                              "period": "month"}]},
    "/api/accounts/alice/grants": {"amount_credits": "5", "kind": "addon", "id": "g-1", "name": "Top-up"},
    "/api/accounts/alice/holds": {"amount_credits": "1", "id": "h-1", "ttl_seconds": 60},
    "/api/accounts": {"id": "carol", "name": "Carol"},
    "/api/prices": {"catalog": {"models": {"m": {"input": "1", "output": "2"}}}},
    "/v1/chat/completions": {"model": "demo-large", "max_tokens": 5,
                             "messages": [{"role": "user", "content": "hello"}]},
}
GATEWAY = "/v1/chat/completions"
# Strings no reader should turn into a 5xx: lone surrogates (either half, at either end), NUL and
# other control characters, a valid pair (an emoji, escaped), a BOM, the replacement character.
HOSTILE_TEXT = st.one_of(
    st.sampled_from(["\ud800", "\udfff", "a\ud83d", "\ude00z", "\x00", "a\x00b", "\x1b[31m", "\ufeff",
                     "\ud83d\ude00", "\ufffd", "", " ", "e-1"]),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=8),  # surrogates too
)


@pytest.fixture
def store_kind() -> str:
    return "sqlite"  # the bodies are read before any store is asked


@pytest.fixture
def client(engine: Engine, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """The real app with the gateway on the demo upstream; alice has credits, an open hold and an
    account key (returned with the client)."""
    section = GatewaySection(models={"demo-large": UpstreamModel(base_url=DEMO_UPSTREAM)},
                             pending_dir=str(tmp_path / "pending"))
    app = create_app(engine, admin_key=ADMIN_KEY, clock=Clock(engine_now()),
                     gateway=Gateway(section, {}))
    with TestClient(app, raise_server_exceptions=False) as api:
        assert api.post("/api/accounts", json={"id": "alice"}, headers=OPERATOR).status_code == 201
        assert api.post("/api/accounts/alice/grants", json={"amount_credits": "100", "kind": "addon"},
                        headers=OPERATOR).status_code == 201
        assert api.post("/api/accounts/alice/holds", json={"amount_credits": "1", "id": "h-open"},
                        headers=OPERATOR).status_code == 201
        key = api.post("/api/accounts/alice/keys", json={"name": "gw"}, headers=OPERATOR).json()["key"]
        yield api, key


def engine_now() -> int:
    from tests.api.conftest import NOW
    from tests.conftest import at

    return at(NOW)


def _readable(body: bytes) -> bool:
    """Whether ``body`` is JSON text at all: UTF-8, well-formed, not too deep to read."""
    try:
        json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return True


def post(api: TestClient, key: str, path: str, body: bytes) -> Any:
    headers = {**bearer(key), "content-type": "application/json"} if path == GATEWAY else JSON_HEADERS
    return api.post(path, content=body, headers=headers)


def check(response: Any, path: str, body: bytes) -> None:
    """Not a 5xx; valid JSON text in the edge's error shape; unreadable JSON named as the body."""
    assert response.status_code < 500, (path, body[:200], response.status_code, response.text[:500])
    answer = orjson.loads(response.content)  # strict: a lone surrogate in the answer fails here
    if response.status_code < 400:
        return
    error = answer["error"]
    if path == GATEWAY:
        assert set(error) == {"message", "type", "param", "code"}, answer
        assert isinstance(error["message"], str) and error["message"], answer
        return
    assert {"type", "message"} <= set(error), answer
    assert isinstance(error["message"], str) and error["message"], answer
    if not _readable(body):
        assert (response.status_code, error["type"], error["field"]) == (422, "invalid_input", "body"), \
            (body[:200], answer)
    if error["type"] == "invalid_input":
        assert error["field"] and error["field"] in error["message"], answer


# -- hostile documents ----------------------------------------------------------------------------

def _swap(value: Any, text: str, position: int, as_key: bool) -> Any:
    """``value`` with its ``position``-th string (or field name, with ``as_key``) replaced by ``text``."""
    count = -1

    def walk(item: Any) -> Any:
        nonlocal count
        if isinstance(item, dict):
            out = {}
            for k, v in item.items():
                count += 1
                out[text if as_key and count == position else k] = walk(v)
            return out
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, str) and not as_key:
            count += 1
            return text if count == position else item
        return item

    return walk(value)


@st.composite
def hostile_bodies(draw: st.DrawFn, path: str) -> bytes:
    base = BODIES[path]
    kind = draw(st.sampled_from(["text", "deep", "number", "duplicate", "top", "bytes", "broken"]))
    if kind == "text":  # one string or one field name that is not valid text (escaped, as JSON allows)
        changed = _swap(base, draw(HOSTILE_TEXT), draw(st.integers(0, 12)), draw(st.booleans()))
        return json.dumps(changed).encode()
    if kind == "deep":
        depth = draw(st.sampled_from([64, 255, 1000, 3000, 20000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        inner = opener * depth + b"1" + closer * depth
        where = draw(st.sampled_from(["top", "metadata"]))
        return inner if where == "top" else json.dumps(base).encode()[:-1] + b', "metadata": ' + inner + b"}"
    if kind == "number":
        literal = draw(st.sampled_from([b"1" + b"0" * 5000, b"1e999999999", b"-1e-999999999", b"1E400",
                                        b"60.0", b"60.5", b"0.0000001", b"-0", b"18446744073709551616"]))
        changed = json.dumps(base).encode()
        return changed.replace(b'"5"', literal).replace(b"10", literal).replace(b"60", literal)
    if kind == "duplicate":
        return b'{"id": "a", "id": "b", ' + json.dumps(base).encode()[1:]
    if kind == "top":
        return draw(st.sampled_from([b"[]", b"1", b'"x"', b"null", b"true", b"[{}]", b'"\\ud800"']))
    if kind == "bytes":  # not UTF-8: a stray byte inside a string, UTF-16, or random bytes
        text = json.dumps(base).encode()
        cut = draw(st.integers(1, len(text) - 1))
        bad = draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
        return draw(st.sampled_from([text[:cut] + bad + text[cut:], json.dumps(base).encode("utf-16"),
                                     draw(st.binary(max_size=40))]))
    text = json.dumps(base).encode()
    return text[:draw(st.integers(0, len(text) - 1))]  # cut short


@pytest.mark.parametrize("path", BODIES)
def test_no_body_a_hostile_client_sends_is_a_5xx(client: tuple[TestClient, str], path: str) -> None:
    api, key = client

    @fixed_seed(1201)
    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=hostile_bodies(path))
    def run(body: bytes) -> None:
        check(post(api, key, path, body), path, body)

    run()


# -- named cases ----------------------------------------------------------------------------------

SURROGATE_CASES = {
    "event id": ("/api/usage", rb'{"events": [{"id": "\ud800", "account_id": "alice", "model": "m"}]}',
                 "events.0.id"),
    "a field name": ("/api/usage", rb'{"events": [{"id": "e", "\udfff": 1}]}', "events.0.\\udfff"),
    "model": ("/api/usage", rb'{"events": [{"id": "e", "account_id": "alice", "model": "x\ud800"}]}',
              "events.0.model"),
    "feature name": ("/api/usage", rb'{"events": [{"id": "e", "account_id": "alice", '
                                   rb'"quantities": {"\ud800": 1}}]}', "events.0.quantities.\\ud800"),
    "plan field": ("/api/plans", rb'{"plans": [{"id": "p", "name": "\ud800"}]}', "plans.0.name"),
    "plan field name": ("/api/plans", rb'{"plans": [{"id": "p", "\ud800": 1}]}', "plans.0.\\ud800"),
    "settle model": ("/api/holds/h-open/settle", rb'{"model": "\udc00"}', "model"),
    "grant id": ("/api/accounts/alice/grants", rb'{"amount_credits": "1", "kind": "addon", "id": "\ud800"}',
                 "id"),
}


@pytest.mark.parametrize(("path", "body", "field"), SURROGATE_CASES.values(), ids=SURROGATE_CASES.keys())
def test_a_lone_surrogate_is_refused_naming_its_field_and_writes_nothing(
        client: tuple[TestClient, str], path: str, body: bytes, field: str) -> None:
    api, _ = client
    before = api.get("/api/accounts/alice/usage", headers=OPERATOR).json()
    response = api.post(path, content=body, headers=JSON_HEADERS)
    assert response.status_code == 422, response.text
    error = orjson.loads(response.content)["error"]
    assert (error["type"], error["field"]) == ("invalid_input", field), error
    assert error["message"].startswith(f"{field}: "), error
    assert api.get("/api/accounts/alice/usage", headers=OPERATOR).json() == before


@pytest.mark.parametrize("body", [b'{"events": [', b"\xff\xfe{}", b"[" * 5000 + b"]" * 5000,
                                  '{"id": "carol"}'.encode("utf-16"), b'{"id": NaN}'],
                         ids=["malformed", "not-utf8", "deep", "utf16", "nan"])
def test_a_body_that_is_not_json_text_is_422_invalid_input(client: tuple[TestClient, str],
                                                           body: bytes) -> None:
    api, _ = client
    response = api.post("/api/accounts", content=body, headers=JSON_HEADERS)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["type"], error["field"]) == ("invalid_input", "body"), error


@pytest.mark.parametrize("body", [rb'{"model": "\ud800", "messages": [{"role": "user", "content": "x"}]}',
                                  rb'{"model": "demo-large", "messages": [{"role": "\ud800"}]}',
                                  b"[" * 5000 + b"]" * 5000, b"\xff"])
def test_the_gateway_refuses_text_that_is_not_valid_with_400(client: tuple[TestClient, str],
                                                             body: bytes) -> None:
    api, key = client
    response = post(api, key, GATEWAY, body)
    assert response.status_code == 400, response.text
    error = orjson.loads(response.content)["error"]
    assert error["type"] == "invalid_request_error" and error["param"], error


def test_console_forms_take_bytes_that_are_not_utf8(client: tuple[TestClient, str]) -> None:
    api, _ = client
    for body in (b"key=%ED%A0%80&next=%FF", b"key=\xff\xfe&next=/console", b"key=%00"):
        response = api.post("/console/sign-in", content=body, follow_redirects=False,
                            headers={"content-type": "application/x-www-form-urlencoded"})
        assert response.status_code < 500, (body, response.status_code, response.text[:300])
