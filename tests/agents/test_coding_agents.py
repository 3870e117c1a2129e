"""Real coding agents through the gateway: Claude Code (Anthropic Messages) and Codex CLI (OpenAI
Responses), unchanged, each run ``say hello`` to completion against a real ``creditmeter serve``
in front of the local upstream, pointed at it only by their own settings (a base URL and the
account key). The upstream (``tests.agents.upstream_tools``) first has the agent run ``ls`` with its
shell tool, then answers, so each run is two model calls, the second carrying the tool's output.
Every upstream call an agent caused must be charged exactly its usage — as the upstream reported
it, priced here from the catalog — and nothing else may be charged or left held. An account that
cannot cover a request is refused before anything reaches the upstream, and the agent shows why.

The agents are the versions pinned in ``tests/agents/npm``, installed once outside the repository
(``tests.agents.install``). Without Node.js the tests skip, saying why; in CI (``CI=true``) they
fail instead. The agents run offline: a fresh HOME (and CODEX_HOME), telemetry, update checks,
plugin syncs and retries turned off, and a proxy on a closed port for every host but this one, so
a call anywhere else fails rather than leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from creditmeter.engine import Engine
from creditmeter.pricing import load_yaml, parse_catalog
from creditmeter.store.sql import SqlStore
from tests.agents.install import Agents, Unavailable, ensure
from tests.agents.upstream_tools import CALL_ID, PREFIX
from tests.api.conftest import free_port, start_server
from tests.gateway.conftest import (
    UC_PER_CREDIT,
    UPSTREAM_KEY,
    UPSTREAM_KEY_ENV,
    GatewayServer,
    Upstream,
    credits,
    now_us,
    sqlite_url,
    start_upstream,
    stop_gateway,
    stop_process,
)
from tests.gateway.upstream_common import reply

AGENT_TIMEOUT_S = 90
# Models an operator would configure, under names the agents know. The upstream reports part of
# each prompt read from its cache (on Messages, part written to it too: 5-minute writes, what
# Claude Code's ``cache_control`` asks for).
CLAUDE_MODEL, CLAUDE_UPSTREAM = "claude-haiku-4-5", PREFIX + "fake-cached"
CODEX_MODEL, CODEX_UPSTREAM = "gpt-5.5", PREFIX + "fake-cached"
CATALOG = f"""\
models:
  {CLAUDE_MODEL}:
    input: 1
    output: 5
    cached_input: 0.1
    cache_write: 1.25
    cache_write_1h: 2
  {CODEX_MODEL}:
    input: 1.25
    output: 10
    cached_input: 0.125
"""
CODEX_MAX_OUTPUT = 8_192  # Codex sends no output cap: the gateway reserves and sends this one
FUNDS_UC = 50 * UC_PER_CREDIT  # Claude Code asks for up to 32,000 output tokens: its holds are large
REPLY = " ".join(reply(None))  # the upstream's answer to a request with no small cap
MARKER_FILE = "hello-from-the-work-dir.txt"  # in the agent's work directory: ``ls`` shows it


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI runs the coding agents: it needs Node.js, npm and the npm registry)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def agents() -> Agents:
    try:
        return ensure()
    except Unavailable as exc:
        unavailable(str(exc))
        raise


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    log = tmp_path_factory.mktemp("agents-upstream") / "upstream.log"
    running = start_upstream(log, "tests.agents.upstream_tools")
    yield running
    stop_process(running.process, grace_s=2)


@pytest.fixture(scope="module")
def gw(agents: Agents, upstream: Upstream,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    directory = tmp_path_factory.mktemp("agents-gateway")
    db_url = sqlite_url(directory)
    store = SqlStore(db_url)
    store.upgrade()
    engine = Engine(store)
    at = now_us() - 60_000_000
    engine.load_prices(parse_catalog(load_yaml(CATALOG)), at, at)
    config = {"gateway": {"models": {
        CLAUDE_MODEL: {"api": "anthropic", "base_url": upstream.base_url, "upstream_model": CLAUDE_UPSTREAM,
                       "api_key_env": UPSTREAM_KEY_ENV},
        CODEX_MODEL: {"api": "openai", "base_url": upstream.v1, "upstream_model": CODEX_UPSTREAM,
                      "api_key_env": UPSTREAM_KEY_ENV, "max_output_tokens": CODEX_MAX_OUTPUT},
    }}}
    path = directory / "creditmeter.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    try:
        server = start_server(db_url, directory / "serve.log", env={UPSTREAM_KEY_ENV: UPSTREAM_KEY},
                              extra_args=["--config", str(path)])
    except BaseException:
        store.close()
        raise
    running = GatewayServer(server, engine, {}, config)
    yield running
    stop_gateway(running)


# -- running an agent ----------------------------------------------------------------------------


def offline_env(agents: Agents, home: Path, **extra: str) -> dict[str, str]:
    """A clean environment (no key or setting of the machine running the tests leaks in)."""
    closed = f"http://127.0.0.1:{free_port()}"
    local = "127.0.0.1,localhost"
    return {"PATH": f"{agents.node_bin}{os.pathsep}/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
            "LANG": "C.UTF-8", "TERM": "dumb", "NO_COLOR": "1", "HTTPS_PROXY": closed, "HTTP_PROXY": closed,
            "NO_PROXY": local, "https_proxy": closed, "http_proxy": closed, "no_proxy": local, **extra}


def claude_code(agents: Agents, gw: GatewayServer, key: str, home: Path) -> tuple[list[str], dict[str, str]]:
    env = offline_env(agents, home, ANTHROPIC_BASE_URL=gw.server.base_url, ANTHROPIC_API_KEY=key,
                      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1",
                      CLAUDE_CODE_MAX_RETRIES="0")
    return [str(agents.claude), "-p", "say hello", "--model", CLAUDE_MODEL], env


def codex(agents: Agents, gw: GatewayServer, key: str, home: Path) -> tuple[list[str], dict[str, str]]:
    codex_home = home / ".codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(f"""\
model = "{CODEX_MODEL}"
model_provider = "creditmeter"
check_for_update_on_startup = false
sandbox_mode = "danger-full-access"  # runs ``ls`` in the temporary work directory, no bubblewrap needed

[analytics]
enabled = false

[features]
plugins = false
remote_plugin = false
apps = false

[model_providers.creditmeter]
name = "creditmeter"
base_url = "{gw.v1}"
env_key = "CREDITMETER_ACCOUNT_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
""")
    env = offline_env(agents, home, CODEX_HOME=str(codex_home), CREDITMETER_ACCOUNT_KEY=key)
    return [str(agents.codex), "exec", "--skip-git-repo-check", "say hello"], env


Setup = Callable[[Agents, GatewayServer, str, Path], tuple[list[str], dict[str, str]]]
AGENTS: dict[str, tuple[Setup, str]] = {"claude-code": (claude_code, CLAUDE_MODEL),
                                        "codex": (codex, CODEX_MODEL)}


def run_agent(agents: Agents, gw: GatewayServer, name: str, key: str,
              tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Runs the agent ``name`` with the account key ``key``, in a work directory holding
    ``MARKER_FILE``, to completion."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / MARKER_FILE).write_text("hello\n")
    command, env = AGENTS[name][0](agents, gw, key, home)
    try:
        return subprocess.run(command, env=env, cwd=work, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=AGENT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{name} did not finish in {AGENT_TIMEOUT_S} s: "
                             f"{exc.stdout!r} {exc.stderr!r}") from exc


# -- what a call costs, from the upstream's own report --------------------------------------------


@dataclass(frozen=True)
class Charge:
    """One usage event as the test expects it: the model, the token counts, the cost in µc."""

    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    cost_uc: int


def rates_uc(model: str) -> dict[str, int]:
    """µc per 1M tokens of each kind (a kind the catalog leaves out costs the input rate)."""
    prices = load_yaml(CATALOG)["models"][model]
    rates = {kind: int(Decimal(str(prices.get(kind, prices["input"]))) * UC_PER_CREDIT)
             for kind in ("input", "output", "cached_input", "cache_write")}
    rates["cache_write_1h"] = int(Decimal(str(prices.get("cache_write_1h", 0))) * UC_PER_CREDIT) \
        or rates["cache_write"]
    return rates


def expected_charge(model: str, call: dict[str, Any]) -> Charge:
    """What a call the upstream answered costs: its reported usage at the catalog's rates, the
    parts summed and rounded up once."""
    usage = call["usage"]
    if call["path"] == "/v1/messages":  # each kind of token stated once
        hour = usage.get("cache_creation", {}).get("ephemeral_1h_input_tokens", 0)
        tokens = (usage["input_tokens"], usage["output_tokens"], usage["cache_read_input_tokens"],
                  usage["cache_creation_input_tokens"] - hour, hour)
    else:  # Responses: the input count includes the cached part
        cached = usage["input_tokens_details"]["cached_tokens"]
        tokens = (usage["input_tokens"] - cached, usage["output_tokens"], cached, 0, 0)
    rates = rates_uc(model)
    kinds = ("input", "output", "cached_input", "cache_write", "cache_write_1h")
    scaled = sum(count * rates[kind] for count, kind in zip(tokens, kinds, strict=True))
    return Charge(model, *tokens, -(-scaled // UC_PER_CREDIT))


def charged(event: dict[str, Any]) -> Charge:
    cost = Decimal(event["cost_credits"]) * UC_PER_CREDIT
    return Charge(event["model"], event["input_tokens"], event["output_tokens"], event["cached_input_tokens"],
                  event["cache_write_tokens"], event["cache_write_1h_tokens"], int(cost))


def assert_charged_exactly(gw: GatewayServer, account_id: str, model: str,
                           calls: list[dict[str, Any]]) -> None:
    """Each call the upstream answered is one usage event for exactly its usage; the balance is
    the funds less those charges; nothing is held; nothing else was charged."""
    for call in calls:
        assert call["usage"] is not None, call["path"]
        assert UPSTREAM_KEY in call["authorization"] + call["x_api_key"]  # never the account's key
    expected = sorted((expected_charge(model, c) for c in calls), key=repr)
    balance = gw.wait_settled(account_id, len(calls))
    assert sorted((charged(e) for e in gw.events(account_id)), key=repr) == expected
    total_uc = sum(c.cost_uc for c in expected)
    assert total_uc > 0
    assert (balance["held_credits"], balance["overage_credits"]) == ("0", "0")
    assert balance["available_credits"] == credits(FUNDS_UC - total_uc)


def tool_output(path: str, call: dict[str, Any]) -> str:
    """What the agent sent back as the tool call's result (empty if it sent none)."""
    body = call["body"]
    if path == "/v1/messages":
        blocks = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]]
        return json.dumps([b for b in blocks if b.get("type") == "tool_result"
                           and b.get("tool_use_id") == CALL_ID])
    return json.dumps([i for i in body["input"] if i.get("type") == "function_call_output"
                       and i.get("call_id") == CALL_ID])


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, path", [("claude-code", "/v1/messages"), ("codex", "/v1/responses")])
def test_an_agent_runs_through_the_gateway_and_each_call_is_charged_exactly(
        agents: Agents, gw: GatewayServer, upstream: Upstream, tmp_path: Path, name: str, path: str) -> None:
    account = gw.new_account(FUNDS_UC)
    before = len(upstream.received())
    done = run_agent(agents, gw, name, account.key, tmp_path)
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert REPLY in done.stdout
    calls = upstream.received()[before:]
    # Two streamed calls: the one that asked for ``ls``, and the one that carried its output.
    assert [(c["path"], c["body"].get("stream")) for c in calls] == [(path, True), (path, True)], calls
    assert MARKER_FILE not in tool_output(path, calls[0])
    assert MARKER_FILE in tool_output(path, calls[1])
    if name == "claude-code":  # its version and betas are passed on
        assert all(c["anthropic_version"] and "claude-code" in c["anthropic_beta"] for c in calls)
    else:  # the cap the gateway reserved is the one the upstream was held to
        assert [c["body"].get("max_output_tokens") for c in calls] == [CODEX_MAX_OUTPUT] * 2
    assert_charged_exactly(gw, account.id, AGENTS[name][1], calls)


@pytest.mark.parametrize("name", ["claude-code", "codex"])
def test_an_account_that_cannot_cover_a_request_stops_the_agent_before_the_upstream(
        agents: Agents, gw: GatewayServer, upstream: Upstream, tmp_path: Path, name: str) -> None:
    account = gw.new_account(1_000)  # 0.001 credits: less than any request's hold
    before = len(upstream.received())
    done = run_agent(agents, gw, name, account.key, tmp_path)
    assert done.returncode != 0
    assert "insufficient credits" in done.stdout + done.stderr
    assert upstream.received()[before:] == []
    assert gw.events(account.id) == []
    balance = gw.balance(account.id)
    assert (balance["available_credits"], balance["held_credits"]) == (credits(1_000), "0")
