"""The ``gateway:`` section of ``creditmeter serve --config FILE``: a bad one stops ``serve``
before it starts (exit 2, naming the field); without one there is no ``/v1``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests import forked
from tests.api.conftest import ADMIN_KEY, free_port, start_server, stop_server
from tests.gateway.conftest import sqlite_url

GOOD = {"base_url": "http://127.0.0.1:9/v1"}


@pytest.mark.parametrize(("gateway", "field"), [
    ({"models": {"m1": {**GOOD, "api_key_env": "CM_TEST_SURELY_UNSET"}}}, "gateway.models.m1.api_key_env"),
    ({"models": {"m1": {"base_url": "ftp://example.com/v1"}}}, "gateway.models.m1.base_url"),
    ({"models": {"m1": {**GOOD, "max_output_tokens": 0}}}, "gateway.models.m1.max_output_tokens"),
    ({"models": {"m1": {**GOOD, "prompt_bytes_per_token": 17}}}, "gateway.models.m1.prompt_bytes_per_token"),
    ({"models": {"m1": {**GOOD, "upstream": "x"}}}, "gateway.models.m1.upstream"),
    ({"timeout_s": 0, "models": {"m1": GOOD}}, "gateway.timeout_s"),
    ({"models": {"m1": {}}}, "gateway.models.m1.base_url"),
    ({"models": {"m1": {**GOOD, "api": "grpc"}}}, "gateway.models.m1.api"),
    ({"models": {"m1": {"base_url": "demo", "api": "anthropic"}}}, "gateway.models.m1.api"),
], ids=["unset-key-variable", "not-http", "zero-max-output", "bytes-per-token", "unknown-setting",
        "zero-timeout", "no-base-url", "unknown-api", "demo-speaks-openai-only"])
def test_a_bad_gateway_section_stops_serve(tmp_path: Path, gateway: dict[str, Any], field: str) -> None:
    config = tmp_path / "creditmeter.yaml"
    config.write_text(json.dumps({"gateway": gateway}))
    environ = {k: v for k, v in os.environ.items() if k != "CM_TEST_SURELY_UNSET"}
    environ["CREDITMETER_ADMIN_KEY"] = ADMIN_KEY
    # In a process of its own, forked (tests/forked.py); the installed command's refusals are
    # tried in tests/api/test_server.py.
    done = forked.run(["serve", "--db", sqlite_url(tmp_path), "--port", str(free_port()),
                       "--config", str(config)], tmp_path, env=environ, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert field in done.stderr


def test_without_a_gateway_section_there_is_no_v1(tmp_path: Path) -> None:
    config = tmp_path / "creditmeter.yaml"
    config.write_text("server:\n  threads: 2\n")
    server = start_server(sqlite_url(tmp_path), tmp_path / "serve.log", extra_args=["--config", str(config)])
    try:
        answer = httpx2.post(server.base_url + "/v1/chat/completions", json={"model": "m", "messages": []},
                             timeout=10)
        assert answer.status_code == 404
        assert httpx2.get(server.base_url + "/healthz", timeout=10).status_code == 200
    finally:
        stop_server(server)
