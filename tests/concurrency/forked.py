"""Processes for the concurrency tests, forked from a server that has already imported creditmeter.

A race between processes is about what they do to the database at once, not about interpreters
starting: a process forked from multiprocessing's fork server (one process holding no thread, no
connection and no database, with creditmeter and the test helpers imported) starts in milliseconds
instead of the most of a second an interpreter takes to import them. Each is still a process of
its own, with its own connections. ``command`` runs the ``creditmeter`` command there as the
installed one runs it (click's ``main``: its parsing, output and exit code); the installed command
itself is started as installed in tests/cli/test_process.py and tests/concurrency/test_crash.py.

The fork server starts on first use and keeps the environment of that moment: what a test sets
later is not seen, so a command gets everything it needs as options.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from multiprocessing.context import ForkServerContext, ForkServerProcess
from pathlib import Path

from creditmeter.cli import main

CONTEXT: ForkServerContext = multiprocessing.get_context("forkserver")  # type: ignore[assignment]
CONTEXT.set_forkserver_preload([__name__, "tests.conftest"])


@dataclass
class Command:
    """A ``creditmeter`` command running in a forked process; its output goes to two files."""

    process: ForkServerProcess
    stdout: Path
    stderr: Path

    def wait(self, timeout_s: float) -> tuple[int, str, str]:
        """(exit code, standard output, standard error) once it ends; it is killed, and this
        fails, if it has not ended within ``timeout_s``."""
        self.process.join(timeout_s)
        if self.process.exitcode is None:
            self.kill()
            raise TimeoutError(f"{self.process.name} did not end within {timeout_s} s")
        return self.process.exitcode, self.stdout.read_text(), self.stderr.read_text()

    def kill(self) -> None:
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()


def command(args: list[str], directory: Path, name: str) -> Command:
    """Start ``creditmeter ARGS`` in a forked process (CREDITMETER_DB unset: pass ``--db``)."""
    out, err = directory / f"{name}.stdout", directory / f"{name}.stderr"
    process = CONTEXT.Process(target=_run, args=(args, str(out), str(err)), name=name, daemon=True)
    process.start()
    return Command(process, out, err)


def _run(args: list[str], out: str, err: str) -> None:
    for path, fd in ((out, 1), (err, 2)):
        with open(path, "wb") as file:
            os.dup2(file.fileno(), fd)
    os.environ.pop("CREDITMETER_DB", None)
    main(args, prog_name="creditmeter")  # exits with the command's code
