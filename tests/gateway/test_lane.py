"""The gateway's POST requests take their own lane past the app's routing: the metrics still count
them by route, the body limit still answers 413 in the protocol's shape, an error the engine
raises is still answered as the app answers it, and whatever is not a gateway POST takes the
app's usual way (405 naming the method allowed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.exceptions import HTTPException

from creditmeter.engine import Engine
from creditmeter.errors import Conflict
from creditmeter.gateway import Gateway
from creditmeter.server import create_app
from creditmeter.serverconfig import DEMO_UPSTREAM, GatewaySection, UpstreamModel
from creditmeter.web import metrics
from tests.api.conftest import ADMIN_KEY, OPERATOR, Clock, bearer

CHAT = "/v1/chat/completions"
LIMIT = 4_096


@pytest.fixture
def store_kind() -> str:
    return "sqlite"


@pytest.fixture
def client(engine: Engine, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    from tests.api.conftest import NOW
    from tests.conftest import at

    section = GatewaySection(models={"demo-large": UpstreamModel(base_url=DEMO_UPSTREAM)},
                             pending_dir=str(tmp_path / "pending"))
    app = create_app(engine, admin_key=ADMIN_KEY, clock=Clock(at(NOW)), max_body_bytes=LIMIT,
                     gateway=Gateway(section, {}))
    with TestClient(app, raise_server_exceptions=False) as api:
        assert api.post("/api/accounts", json={"id": "alice"}, headers=OPERATOR).status_code == 201
        assert api.post("/api/accounts/alice/grants", json={"amount_credits": "100", "kind": "addon"},
                        headers=OPERATOR).status_code == 201
        key = api.post("/api/accounts/alice/keys", json={"name": "gw"}, headers=OPERATOR).json()["key"]
        yield api, key


def _counted(status: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "creditmeter_http_requests_total", {"method": "POST", "route": CHAT, "status": status}) or 0.0


def _chat(content: str = "hello") -> dict[str, object]:
    return {"model": "demo-large", "max_tokens": 16, "messages": [{"role": "user", "content": content}]}


def test_metrics_count_the_lanes_requests_by_route(client: tuple[TestClient, str]) -> None:
    api, key = client
    answered, refused = _counted("200"), _counted("401")
    response = api.post(CHAT, json=_chat(), headers=bearer(key))
    assert response.status_code == 200, response.text
    assert response.headers["x-credits-charged"]
    assert api.post(CHAT, json=_chat(), headers=bearer("cm_nobody")).status_code == 401
    assert (_counted("200"), _counted("401")) == (answered + 1, refused + 1)


def test_the_body_limit_answers_in_the_gateways_shape(client: tuple[TestClient, str]) -> None:
    api, key = client
    response = api.post(CHAT, json=_chat("x" * LIMIT), headers=bearer(key))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_an_engine_error_is_answered_by_the_apps_handler(client: tuple[TestClient, str], engine: Engine,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    api, key = client

    def refused(*_: object, **__: object) -> None:
        raise Conflict("the hold conflicts")

    # A fault put in the engine: an error the endpoint does not turn into its own shape.
    monkeypatch.setattr(engine, "reserve_estimate", refused)
    response = api.post(CHAT, json=_chat(), headers=bearer(key))
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "conflict"


def test_other_methods_take_the_apps_way(client: tuple[TestClient, str]) -> None:
    api, key = client
    response = api.get(CHAT, headers=bearer(key))
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"]


def test_an_http_error_is_answered_in_the_gateways_shape(client: tuple[TestClient, str], engine: Engine,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    api, key = client

    def teapot(*_: object, **__: object) -> None:
        raise HTTPException(418, "short and stout")

    monkeypatch.setattr(engine, "reserve_estimate", teapot)
    response = api.post(CHAT, json=_chat(), headers=bearer(key))
    assert response.status_code == 418, response.text
    assert response.json()["error"]["code"] == "http_error"
