"""LiteLLM's proxy as a reference for the gateway benchmark: started from its own environment (a
separate virtualenv, never this project's), with no database, one worker, its access log off, a
master key as the only key, and one model (``fake-model``) on the benchmark's local upstream.

Make the environment once, outside the repository::

    python3 -m venv /work/litellm-venv
    /work/litellm-venv/bin/pip install 'litellm[proxy]'

then ``python benchmarks/run.py gateway --litellm /work/litellm-venv/bin/litellm``.

Also here: the CPU time a server process (and its children) has used, to state each proxy's CPU
per request, which a machine shared with other work changes less than its requests/s.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

MASTER_KEY = "sk-bench-" + "0123456789abcdef" * 2
READY_PATH = "/health/liveliness"
START_S = 180  # LiteLLM imports a great deal before it listens


def config(upstream_port: int) -> str:
    """LiteLLM's config: ``fake-model`` on the local upstream, the master key, nothing else."""
    return (f"model_list:\n  - model_name: fake-model\n    litellm_params:\n"
            f"      model: openai/fake-model\n      api_base: http://127.0.0.1:{upstream_port}/v1\n"
            f"      api_key: upstream-key\n"
            f"general_settings:\n  master_key: {MASTER_KEY}\n")


def logging_config() -> str:
    """uvicorn's logging with its access log off (as the gateway's ``--no-access-log``)."""
    return json.dumps({
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": {"handlers": ["default"], "level": "WARNING"},
                    "uvicorn.error": {"level": "WARNING"},
                    "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}},
    })


def start(litellm: str, upstream_port: int, port: int, work: Path) -> subprocess.Popen[bytes]:
    """Start LiteLLM's proxy on ``port`` and wait until it answers."""
    (work / "litellm.yaml").write_text(config(upstream_port))
    (work / "litellm-logging.json").write_text(logging_config())
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    log = (work / "litellm.log").open("wb")
    proc = subprocess.Popen([litellm, "--config", str(work / "litellm.yaml"), "--num_workers", "1",
                             "--log_config", str(work / "litellm-logging.json"), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    log.close()
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{READY_PATH}", timeout=1):
                return proc
        except urllib.error.HTTPError:
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"LiteLLM's proxy did not start: {(work / 'litellm.log').read_text()[-3000:]}")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds used so far by process ``pid`` and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        used[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, of in parents.items() if of == parent and child not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(used.get(member, 0.0) for member in tree)
