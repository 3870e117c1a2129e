"""Processes forked from a server that has already imported creditmeter, for tests that start many.

A test that starts ``creditmeter serve``, or eight importers at once, is about what those processes
do, not about interpreters starting: a process forked from multiprocessing's fork server (one
process holding no thread, no connection and no database, with creditmeter, its web stack and the
tests' shared modules imported) starts in milliseconds instead of the second or more an interpreter takes to
import them. Each is still a process of its own, with its own connections, and ``start`` runs the
``creditmeter`` command there as the installed one runs it (click's ``main``: its parsing, output
and exit code), in the caller's environment and directory. The installed command itself is started
as installed elsewhere (tests/cli/test_process.py, tests/concurrency/test_crash.py, the README's
blocks in tests/docs/test_readme.py, ``serve``'s refusals in tests/api/test_server.py).
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # its exit handler (which waits for children) is registered before ours
import os
import signal
import subprocess
from collections.abc import Mapping
from multiprocessing.context import ForkServerContext, ForkServerProcess
from pathlib import Path

from creditmeter.cli import main

CONTEXT: ForkServerContext = multiprocessing.get_context("forkserver")  # type: ignore[assignment]
CONTEXT.set_forkserver_preload([__name__, "creditmeter.server", "tests.conftest"])


class Forked:
    """A forked ``creditmeter`` process, with the part of ``subprocess.Popen`` the tests use."""

    def __init__(self, process: ForkServerProcess) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (minus the signal's number if a signal ended it), or None while it runs."""
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.process.name, timeout or 0)
        return self.process.exitcode

    def send_signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        """SIGKILL to the process and to every process it started (its process group: ``serve
        --workers N`` spawns its workers, which a kill of the parent alone would leave running)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:  # not yet a group of its own (just started), or all gone
            self.process.kill()

    def kill_group(self) -> None:
        """SIGKILL to whatever is left of the process group (workers of a parent already gone)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


_running: set[Forked] = set()


@atexit.register  # before multiprocessing's own exit handler, which would wait for them
def _kill_left_running() -> None:
    for forked in _running:
        forked.kill_group()  # a parent still running, or workers a killed one left


def start(args: list[str], stdout: Path, stderr: Path | None = None,
          env: Mapping[str, str] | None = None) -> Forked:
    """Start ``creditmeter ARGS`` in a forked process, its output written to ``stdout`` and
    ``stderr`` (the same file when None), in ``env`` (else this environment) and this directory."""
    environ = dict(os.environ if env is None else env)
    process = CONTEXT.Process(target=_run, name=f"creditmeter {' '.join(args[:2])}",
                              args=(args, str(stdout), str(stderr or stdout), environ, os.getcwd()))
    process.start()
    forked = Forked(process)
    _running.add(forked)
    return forked


def _run(args: list[str], stdout: str, stderr: str, environ: dict[str, str], cwd: str) -> None:
    os.setpgid(0, 0)  # a process group of its own, with whatever it starts (Forked.kill)
    with open(stdout, "wb") as out:
        os.dup2(out.fileno(), 1)
    if stderr == stdout:
        os.dup2(1, 2)
    else:
        with open(stderr, "wb") as err:
            os.dup2(err.fileno(), 2)
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    main(args, prog_name="creditmeter")  # exits with the command's code


def run(args: list[str], folder: Path, env: Mapping[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``creditmeter ARGS`` in a forked process, waited for: its exit code and output (files in
    ``folder``), as ``subprocess.run(..., capture_output=True, text=True)`` answers them."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"run-{len(_running)}"
    out, err = folder / f"{name}.out", folder / f"{name}.err"
    process = start(args, stdout=out, stderr=err, env=env)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    return subprocess.CompletedProcess(["creditmeter", *args], code, out.read_text(), err.read_text())
