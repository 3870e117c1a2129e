"""The README's usage blocks run as pasted: every ```sh and ```python block from "## Using it" up
to the next section, in order, as one bash script (``set -e``) in a fresh directory, with the
installed ``creditmeter`` (and this Python, with ``openai``) first on PATH. Each Python block runs
as ``python3 - <<'EOF' ... EOF`` in that same shell, as a user would start it from there.

What the test changes, and nothing else: the gateway's upstream ``https://api.openai.com/v1`` in
the text is replaced by a local fake OpenAI upstream (``tests/gateway/upstream.py``), and the
environment sets ``OPENAI_API_KEY`` (to that upstream's key), ``PORT`` and ``GATEWAY_PORT`` (free
ports, so parallel runs do not clash; the blocks default to 8000 and 8001). Every process the
blocks start is stopped at the end, pass or fail (the script runs in its own process group).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import free_port
from tests.gateway.conftest import UPSTREAM_KEY, start_upstream, stop_process

ROOT = Path(__file__).parents[2]
OPENAI_BASE = "https://api.openai.com/v1"
MARK = "=== README block {} ==="

# The blocks wait for the server with curl, as a reader's shell would. CI installs it (.ci/run);
# without it elsewhere these tests are skipped, saying why; in CI they fail.
if shutil.which("curl") is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("the README's blocks need curl, and CI must run them")
    pytest.skip("the README's blocks need curl, which this machine lacks", allow_module_level=True)


def usage_blocks(readme: str) -> list[tuple[str, str]]:
    """The fenced sh and python blocks, in order, from "## Using it" to the next "## " section."""
    start = readme.index("\n## Using it\n")
    end = readme.index("\n## ", start + 1)
    return re.findall(r"^```(sh|python)\n(.*?)^```$", readme[start:end], re.S | re.M)


def as_script(blocks: list[tuple[str, str]]) -> str:
    lines = ["set -e"]
    for number, (language, code) in enumerate(blocks):
        lines.append(f"printf '\\n%s\\n' '{MARK.format(number)}'")
        if language == "sh":
            lines.append(code)
        else:
            lines.append(f"python3 - <<'PYTHON_BLOCK_{number}'\n{code}PYTHON_BLOCK_{number}")
    lines.append(f"printf '\\n%s\\n' '{MARK.format('end')}'")
    return "\n".join(lines) + "\n"


def run_script(script: str, cwd: Path, env: dict[str, str], timeout_s: float) -> tuple[int | None, str]:
    """Run ``script`` with bash; its exit code (None on timeout) and output. Every process it
    started (servers in the background included) is killed before returning."""
    (cwd / "readme.sh").write_text(script, encoding="utf-8")
    log = cwd / "readme.log"
    with log.open("wb") as out:
        process = subprocess.Popen(["bash", "readme.sh"], cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code: int | None = process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            time.sleep(0.5)
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    return code, log.read_text(encoding="utf-8")


def outputs(log: str, count: int) -> list[str]:
    parts = []
    for number in range(count):
        begin = log.index(MARK.format(number)) + len(MARK.format(number))
        following = MARK.format(number + 1) if number + 1 < count else MARK.format("end")
        parts.append(log[begin:log.index(following, begin)])
    return parts


def json_lines(text: str) -> list[dict[str, Any]]:
    """The one-line JSON documents printed (the servers' log lines, interleaved, are not)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def printed(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("INFO:")]


def test_the_readme_usage_blocks_run_as_pasted(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = usage_blocks(readme)
    assert [language for language, _ in blocks] == ["sh", "sh", "sh", "python", "python"], blocks
    assert sum(code.count(OPENAI_BASE) for _, code in blocks) == 1
    upstream = start_upstream(tmp_path / "upstream.log")
    try:
        local = f"{upstream.base_url}/v1"
        blocks = [(language, code.replace(OPENAI_BASE, local)) for language, code in blocks]
        work = tmp_path / "work"
        work.mkdir()
        env = {name: value for name, value in os.environ.items() if not name.startswith("CREDITMETER_")}
        env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                   OPENAI_API_KEY=UPSTREAM_KEY, PORT=str(free_port()), GATEWAY_PORT=str(free_port()))
        code, log = run_script(as_script(blocks), work, env, timeout_s=180)
        assert code == 0, log[-3000:]
        received = upstream.received()
    finally:
        stop_process(upstream.process, grace_s=2)
    cli, api, gateway, client, library = outputs(log, len(blocks))
    # the CLI: the usage charged (gpt-4o: 12000 × 250 + 800 × 1000 µc = 3.8 credits), from the
    # trial first, and a ledger that reconciles
    charge = json.loads(cli[cli.index("\n{\n"):cli.index("\n}\n") + 2])
    assert (charge["event_id"], charge["status"], charge["cost_credits"]) == ("req-1", "charged", "3.8")
    assert [part["grant_id"] for part in charge["allocations"]] == ["trial:alice"]
    assert "price version 1 effective 1970-01-01T00:00:00Z" in cli
    assert "50 credits (promo) on alice" in cli and "every invariant holds" in cli
    # the API: alice's balance, with her running subscription, then the usage posted
    assert f"creditmeter API on http://127.0.0.1:{env['PORT']}" in api
    balance, posted = json_lines(api)
    assert balance["account_id"] == "alice" and Decimal(balance["available_credits"]) > 0
    assert balance["subscription"]["plan_id"] == "professional-monthly"
    assert [(r["event_id"], r["status"]) for r in posted["results"]] == [("req-3", "charged")]
    # the gateway: forwarded upstream with the key from OPENAI_API_KEY, and charged
    assert f"creditmeter API on http://127.0.0.1:{env['GATEWAY_PORT']}" in gateway
    assert [r["authorization"] for r in received] == [f"Bearer {UPSTREAM_KEY}"], received
    charged = re.search(r"^credits charged: (\S+)$", client, re.M)
    assert charged and Decimal(charged.group(1)) > 0, client
    # the library: a charge in µc with the package that paid it, and what remains
    charge_line, available = printed(library)
    cost, parts = charge_line.split(" ", 1)
    assert int(cost) > 0 and "trial:alice" in parts and int(available) > 0


def test_a_broken_block_fails_the_run(tmp_path: Path) -> None:
    """The harness itself: a block that fails stops the script with its exit code, and a server
    a block left running is stopped."""
    port = free_port()
    wait = f"until curl -sf http://127.0.0.1:{port}/healthz >/dev/null; do sleep 0.2; done\n"
    script = as_script([("sh", f"creditmeter serve --port {port} --db sqlite:///x.db &\n{wait}"
                               "creditmeter balance nobody\n"),
                        ("python", "print('never')\n")])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "CREDITMETER_ADMIN_KEY": "k" * 40}
    code, log = run_script(script, tmp_path, env, timeout_s=60)
    assert code not in (0, None) and "never" not in log, log
    with pytest.raises(OSError):
        import socket

        socket.create_connection(("127.0.0.1", port), timeout=1).close()
