"""The installed ``creditmeter`` command as a real process, where the operating system says no:
a port already taken, a full disk, a reader that went away, a file that cannot be opened."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from creditmeter.cli import main

CREDITMETER = Path(sys.executable).parent / "creditmeter"
EXIT_BAD_INPUT = 2
EXIT_SYSTEM = 8


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite database with an account and a few charged events."""
    url = f"sqlite:///{tmp_path / 'cm.db'}"
    for args in (["prices", "load", "src/creditmeter/catalogs/example.yaml", "--effective", "2026-01-01",
                  "--at", "2026-01-01"],
                 ["accounts", "create", "alice", "--at", "2026-03-01"],
                 ["grants", "add", "alice", "100", "--kind", "promo", "--at", "2026-03-01"],
                 *(["usage", "record", "alice", "--model", "demo-small", "--input", str(n),
                    "--at", "2026-03-01T10:00:00Z"] for n in range(1, 6))):
        result = CliRunner().invoke(main, [*args, "--db", url])
        assert result.exit_code == 0, result.output
    return url


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CREDITMETER), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_taken_port_says_so_before_serving_and_exits_2(db: str, taken_port: int,
                                                                  workers: str) -> None:
    done = run("serve", "--port", str(taken_port), "--workers", workers, "--db", db)
    assert done.returncode == EXIT_BAD_INPUT, done
    assert done.stderr.strip() == (f"error: port: 127.0.0.1:{taken_port} is not free "
                                   "(Address already in use); choose another with --port")
    said = (done.stdout + done.stderr).lower()
    assert "serving" not in said and "listening" not in said and "api on" not in said


def test_serve_on_a_host_it_cannot_listen_on_names_the_host(db: str) -> None:
    done = run("serve", "--host", "no-such-host.invalid", "--port", "8765", "--db", db)
    assert done.returncode == EXIT_BAD_INPUT, done
    assert done.stderr.startswith("error: host: cannot listen on no-such-host.invalid"), done.stderr
    assert "port" not in done.stderr and "api on" not in done.stdout.lower()


def test_demo_on_a_taken_port_says_the_same(tmp_path: Path, taken_port: int) -> None:
    done = run("demo", "--days", "2", "--port", str(taken_port), "--db", f"sqlite:///{tmp_path / 'd.db'}",
               timeout=120)
    assert done.returncode == EXIT_BAD_INPUT, done
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: port: 127.0.0.1:{taken_port} is not free (Address already in use); "
        "choose another with --port")
    assert "starting" not in done.stdout


def _one_line_error(done: subprocess.CompletedProcess[str], reason: str) -> None:
    assert done.returncode == EXIT_SYSTEM, done
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: ") and reason in done.stderr, done.stderr


def test_export_to_a_full_disk_is_one_line(db: str) -> None:
    _one_line_error(run("usage", "export", "alice", "--csv", "/dev/full", "--db", db),
                    "No space left on device")


def test_standard_output_to_a_full_disk_is_one_line(db: str) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run([str(CREDITMETER), "usage", "export", "alice", "--csv", "-", "--db", db],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    _one_line_error(done, "No space left on device")


def test_export_into_a_missing_folder_is_one_line_naming_it(db: str, tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "usage.csv"
    _one_line_error(run("usage", "export", "alice", "--csv", str(target), "--db", db),
                    f"{target}: No such file or directory")


@pytest.mark.parametrize("command", [["usage", "export", "alice", "--csv", "-"], ["accounts", "list"],
                                     ["usage", "list", "alice", "--json"]], ids=" ".join)
def test_a_reader_that_went_away_is_one_line(db: str, command: list[str]) -> None:
    """``creditmeter … | head -1`` where head has already gone: the pipe is closed before the
    command writes (its reading end is closed at once, and the command takes far longer to start)."""
    with subprocess.Popen([str(CREDITMETER), *command, "--db", db], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(timeout=60)
    _one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", err), "Broken pipe")


def test_a_database_path_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    _one_line_error(run("accounts", "list", "--db", f"sqlite:///{a_file}/cm.db"), "File exists")


def test_a_missing_input_file_is_bad_input_naming_it(db: str, tmp_path: Path) -> None:
    done = run("usage", "import", str(tmp_path / "missing.jsonl"), "--db", db)
    assert done.returncode == EXIT_BAD_INPUT and "Traceback" not in done.stderr
    assert "'FILE'" in done.stderr and "does not exist" in done.stderr


def test_demo_of_a_single_day_builds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    built = run("demo", "--days", "1", "--no-serve", "--db", url, timeout=120)
    assert built.returncode == 0, built.stderr
    assert run("reconcile", "--db", url).returncode == 0
