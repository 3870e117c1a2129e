"""The coding agents the gateway is tried with, installed once into a cache directory outside the
repository: Claude Code and Codex CLI at the versions pinned in ``tests/agents/npm`` (a
package.json and its lockfile, installed with ``npm ci``, so every download is checked against
the lockfile's hash).

``python -m tests.agents.install`` installs them (CI does, before the tests) and prints where;
the tests call ``ensure()``, which returns at once when that exact lockfile is already installed.
The directory is ``$CREDITMETER_AGENTS_DIR``, by default ``~/.cache/creditmeter-agents``.
Two processes installing at once (pytest's workers) take turns on a lock file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PINS = Path(__file__).with_name("npm")
INSTALL_TIMEOUT_S = 900


class Unavailable(Exception):
    """The agents cannot be had here (no Node.js, or npm could not install them)."""


@dataclass(frozen=True)
class Agents:
    """The installed command lines."""

    claude: Path
    codex: Path
    node_bin: Path  # the directory of the ``node`` that runs Codex's launcher


def cache_dir() -> Path:
    configured = os.environ.get("CREDITMETER_AGENTS_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "creditmeter-agents"


def _lock_digest() -> str:
    return hashlib.sha256((PINS / "package-lock.json").read_bytes()).hexdigest()


def _agents(directory: Path, node: str) -> Agents:
    bin_dir = directory / "node_modules" / ".bin"
    return Agents(bin_dir / "claude", bin_dir / "codex", Path(node).parent)


def _runs(command: Path) -> bool:
    try:
        done = subprocess.run([str(command), "--version"], capture_output=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    except OSError:
        return False
    return done.returncode == 0


def _installed(directory: Path, agents: Agents) -> bool:
    stamp = directory / ".installed"
    return (stamp.is_file() and stamp.read_text() == _lock_digest()
            and agents.claude.exists() and agents.codex.exists())


def _install(directory: Path, npm: str, agents: Agents) -> None:
    (directory / ".installed").unlink(missing_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(PINS / name, directory / name)
    env = {**os.environ, "PATH": f"{agents.node_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=directory,
                              env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"npm ci in {directory} took over {INSTALL_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        raise Unavailable(f"npm ci in {directory} failed ({done.returncode}): {done.stderr[-2000:]}")
    if not _runs(agents.claude):
        # Claude Code's postinstall puts its native binary in place; an npm that did not run it
        # leaves a stub, so run it here.
        package = directory / "node_modules" / "@anthropic-ai" / "claude-code"
        subprocess.run([str(agents.node_bin / "node"), "install.cjs"], cwd=package, env=env,
                       capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    for command in (agents.claude, agents.codex):
        if not _runs(command):
            raise Unavailable(f"{command} --version fails after npm ci in {directory}")
    (directory / ".installed").write_text(_lock_digest())


def ensure() -> Agents:
    """The pinned agents, installed first if they are not yet (or another version is)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise Unavailable("the coding agents need Node.js and npm on PATH, which are missing")
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    agents = _agents(directory, node)
    if _installed(directory, agents):
        return agents
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing; wait for it
        if not _installed(directory, agents):
            _install(directory, npm, agents)
    return agents


def main() -> None:
    try:
        agents = ensure()
    except Unavailable as exc:
        sys.exit(f"tests.agents.install: {exc}")
    print(f"claude: {agents.claude}\ncodex: {agents.codex}")


if __name__ == "__main__":
    main()
