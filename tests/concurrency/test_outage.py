"""The database goes away while requests are in flight, and comes back.

A throwaway PostgreSQL server, started by the test in a temporary directory, is restarted twice
(``pg_ctl stop -m fast``, then ``-m immediate``) while four threads charge events, reserve, settle
and release, and read balances, each through an Engine made once. A request the outage hits fails
with creditmeter's ``Unavailable`` (a clear message, never a raw SQLAlchemy/psycopg exception),
the client retries it with the same id until it is answered, and the engines recover by
themselves once the server is back. At the end nothing is half-written: every invariant holds,
every event a client saw charged is stored exactly once at the cost it was told, and every hold
ended as its client ended it.
"""

from __future__ import annotations

import collections
import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from creditmeter.domain import Charge, Hold, Refused
from creditmeter.engine import Engine, Settings, Usage
from creditmeter.errors import Unavailable
from creditmeter.pricing import parse_catalog
from creditmeter.store.sql import SqlStore, _driver_url
from tests.conftest import at

CREDITMETER = Path(sys.executable).parent / "creditmeter"
CREDIT = 1_000_000
T0 = at("2026-11-02T10:00")
WORKERS = 4
ACCOUNTS = ["out-0", "out-1", "out-2"]
GRACE_S = 0.5  # a request started this long after the server is back must succeed
RAW_MARKERS = ("Traceback", "sqlalchemy", "psycopg", "sqlalche.me", "OperationalError", "[SQL:")


def _pg_bindir() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(found) / "initdb").exists() and (Path(found) / "pg_ctl").exists():
            return Path(found)
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI needs it)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A PostgreSQL server of our own in ``root`` (data, log and unix socket), trust auth."""

    def __init__(self, bindir: Path, root: Path, user: pwd.struct_passwd | None) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = _free_port()
        # initdb and postgres refuse to run as root: then they run as the given user.
        self._as: dict[str, Any] = ({} if user is None else
                                    {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []})

    def run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bindir / tool), *args], cwd=self.root, capture_output=True,
                              text=True, timeout=timeout, check=False, **self._as)

    def init(self) -> None:
        done = self.run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-N",
                        "-E", "UTF8", "--locale=C")
        assert done.returncode == 0, f"initdb failed: {done.stdout}{done.stderr}"
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.root}'\n"
                       # Safe against a killed server (the OS keeps what was written), just faster.
                       "fsync = off\nfull_page_writes = off\nmax_connections = 50\n")

    def start(self) -> None:
        done = self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")
        assert done.returncode == 0, f"pg_ctl start failed: {done.stdout}{done.stderr}\n{self.log_text()}"

    def stop(self, mode: str) -> None:
        done = self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")
        assert done.returncode == 0, f"pg_ctl stop failed: {done.stdout}{done.stderr}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        """Stop the server however it stands, and remove its directory."""
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists():
            done = self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "20", "stop",
                            timeout=30)
            if done.returncode != 0 and pidfile.exists():
                pid = int(pidfile.read_text().split()[0])
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[Server]:
    bindir = _pg_bindir()
    if bindir is None:
        _unavailable("initdb/pg_ctl not found (on PATH or in /usr/lib/postgresql/*/bin)")
    assert bindir is not None
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run a server as")
    root = Path(tempfile.mkdtemp(prefix="cm-pg-"))  # short: a unix socket path is at most 107 bytes
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    srv = Server(bindir, root, user)
    try:
        srv.init()
        srv.start()
        yield srv
    finally:
        srv.destroy()
    assert not root.exists()


@dataclass
class Call:
    """One request a client made, and how it ended."""

    worker: int
    op: str
    key: str
    started: float
    ended: float = 0.0
    outcome: str = ""  # ok | unavailable | raw
    answer: Any = None
    error: str = ""


@dataclass
class Client:
    """A worker thread's view: the answers it got and what it still has to finish."""

    worker: int
    engine: Engine
    calls: list[Call] = field(default_factory=list)
    unfinished: list[tuple[Any, ...]] = field(default_factory=list)


def _now(begin: float) -> int:
    return T0 + int((time.monotonic() - begin) * 1_000_000)


def _attempt(client: Client, op: str, key: str, fn: Callable[[], Any]) -> Call:
    call = Call(client.worker, op, key, time.monotonic())
    try:
        call.answer = fn()
        call.outcome = "ok"
    except Unavailable as exc:
        call.outcome, call.error = "unavailable", str(exc)
    except Exception as exc:  # noqa: BLE001 - anything else escaping is what this test looks for
        call.outcome = "raw"
        call.error = "".join(traceback.format_exception(exc))
    call.ended = time.monotonic()
    client.calls.append(call)
    return call


def _work(client: Client, seed: int, begin: float, stop: threading.Event, give_up: list[float]) -> None:
    """Random requests until ``stop``; a request that failed is retried (same id) until answered."""
    rng = random.Random(seed)
    engine = client.engine
    tasks: collections.deque[tuple[Any, ...]] = collections.deque()
    step = 0
    while True:
        if not tasks:
            if stop.is_set():
                return
            step += 1
            roll = rng.random()
            if roll < 0.45:
                body = {"id": f"w{client.worker}-e{step}", "account_id": rng.choice(ACCOUNTS),
                        "model": "m", "input_tokens": rng.randint(1, 50_000),
                        "output_tokens": rng.randint(0, 5_000)}
                tasks.append(("record", body["id"], body))
            elif roll < 0.9:
                tasks.append(("reserve", f"w{client.worker}-h{step}", rng.choice(ACCOUNTS),
                              rng.randint(1, 3) * CREDIT))
            else:
                account = rng.choice(ACCOUNTS)
                _attempt(client, "balance", account, lambda a=account: engine.balance(a, _now(begin)))
                continue
        task = tasks[0]
        kind, key = task[0], task[1]
        if kind == "record":
            call = _attempt(client, kind, key, lambda t=task: engine.record(t[2], _now(begin)))
        elif kind == "reserve":
            call = _attempt(client, kind, key, lambda t=task: engine.reserve(
                t[2], t[3], _now(begin), hold_id=t[1]))
        elif kind == "settle":
            call = _attempt(client, kind, key, lambda t=task: engine.settle(t[1], t[2], _now(begin)))
        else:
            call = _attempt(client, kind, key, lambda t=task: engine.release(t[1], _now(begin)))
        if call.outcome == "ok":
            tasks.popleft()
            if kind == "reserve" and isinstance(call.answer, Hold):
                if rng.random() < 0.75:
                    tasks.append(("settle", key, Usage("m", rng.randint(1, 50_000), rng.randint(0, 5_000))))
                else:
                    tasks.append(("release", key))
        else:
            if stop.is_set() and time.monotonic() > give_up[0]:
                client.unfinished = list(tasks)
                return
            time.sleep(0.01)


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CREDITMETER), *args, "--db", url], capture_output=True, text=True,
                          timeout=60, check=False,
                          env={k: v for k, v in os.environ.items() if k != "CREDITMETER_DB"})


def test_requests_survive_a_database_restart(server: Server) -> None:
    admin = sa.create_engine(_driver_url(server.url("postgres")), isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql('CREATE DATABASE "cm"')
    admin.dispose()
    url = server.url("cm")
    setup = SqlStore(url)
    clients: list[Client] = []
    try:
        setup.upgrade()
        main = Engine(setup)
        main.load_prices(parse_catalog({"models": {"m": {"input": "1.5", "output": "2.25"}}}),
                         at("2026-01-01"), T0)
        for account in ACCOUNTS:
            main.create_account(account, T0)
            main.add_grant(account, 1_000_000 * CREDIT, "addon", T0, grant_id=f"{account}-addon")

        clients += [Client(i, Engine(SqlStore(url), Settings(write_attempts=3))) for i in range(WORKERS)]
        begin = time.monotonic()
        stop = threading.Event()
        give_up = [float("inf")]
        threads = [threading.Thread(target=_work, args=(c, 100 + c.worker, begin, stop, give_up), daemon=True)
                   for c in clients]
        outages: list[tuple[float, float]] = []  # (stop issued, server back)
        cli_runs: list[subprocess.CompletedProcess[str]] = []
        try:
            for thread in threads:
                thread.start()
            for mode, cli_args in (("fast", ("usage", "record", ACCOUNTS[0], "--model", "m", "--input", "10",
                                              "--id", "cli-during-outage")),
                                   ("immediate", ("balance", ACCOUNTS[1]))):
                time.sleep(1.5)
                down = time.monotonic()
                server.stop(mode)
                cli_runs.append(_cli(url, *cli_args))
                time.sleep(max(0.0, 1.0 - (time.monotonic() - down)))
                server.start()
                outages.append((down, time.monotonic()))
            time.sleep(1.5)
        finally:
            give_up[0] = time.monotonic() + 10
            stop.set()
            for thread in threads:
                thread.join(timeout=40)
        assert not any(t.is_alive() for t in threads), "a client thread hung"
        calls = [call for c in clients for call in c.calls]

        # Requests in flight during an outage failed only with Unavailable, with a clear message.
        raw = [call for call in calls if call.outcome == "raw"]
        assert raw == [], f"{len(raw)} requests failed with something other than Unavailable:\n{raw[0].error}"
        failed = [call for call in calls if call.outcome == "unavailable"]
        assert failed, "no request was hit by the outages: the test tested nothing"
        unclear = [call.error for call in failed
                   if "\n" in call.error or any(m in call.error for m in RAW_MARKERS)
                   or "unreachable" not in call.error]
        assert unclear == [], f"unclear Unavailable messages: {unclear[:3]}"
        for run in cli_runs:  # the command line says so too: exit 7, one line, no traceback
            assert run.returncode == 7, (run.returncode, run.stdout, run.stderr)
            assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
            assert not any(m in run.stderr for m in RAW_MARKERS), run.stderr

        # Each outage hit requests, and the engines recovered by themselves once the server was back.
        for down, back in outages:
            assert any(call.started <= back and call.ended >= down and call.outcome == "unavailable"
                       for call in calls), "an outage failed no request"
        in_flight = [call for call in calls if any(call.started < down < call.ended for down, _ in outages)]
        assert in_flight, "no request was in flight when the server was stopped"
        late_failures = [call for call in calls if call.outcome != "ok"
                         and any(back + GRACE_S <= call.started
                                 and (i + 1 == len(outages) or call.ended < outages[i + 1][0])
                                 for i, (_, back) in enumerate(outages))]
        assert late_failures == [], (f"{len(late_failures)} requests failed after the server was back, "
                                     f"e.g. {late_failures[0].op} {late_failures[0].error}")
        for client in clients:
            assert client.unfinished == [], f"worker {client.worker} got no answer for {client.unfinished}"
            after = [call for call in client.calls if call.started > outages[-1][1] and call.outcome == "ok"]
            assert len(after) >= 5, f"worker {client.worker} made too few requests after the restart"

        # Nothing half-written: every invariant holds (read through the engine made before the outage).
        assert main.check_invariants() == []
        with setup.engine.connect() as conn:
            stored = {row[0]: row[1:] for row in conn.exec_driver_sql(
                "SELECT id, cost_uc, hold_id FROM events")}
            stored_count = conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
            hold_rows = {row[0]: row[1:] for row in conn.exec_driver_sql(
                "SELECT id, status, settled_event_id FROM holds")}
        assert stored_count == len(stored)

        # Every event a client was answered for is stored once, at the cost it was told; a client
        # was answered for every event stored. A first answer "duplicate" is only right after a
        # failed try of the same id (a commit whose answer the outage swallowed).
        answers: dict[str, list[Call]] = collections.defaultdict(list)
        for call in calls:
            if call.op in ("record", "settle"):
                event_id = call.key if call.op == "record" else f"hold:{call.key}"
                answers[event_id].append(call)
        charged = {eid: [c for c in tries if c.outcome == "ok"] for eid, tries in answers.items()}
        assert set(stored) == {eid for eid, ok in charged.items() if ok}
        swallowed = 0
        for eid, tries in answers.items():
            ok = charged[eid]
            assert all(isinstance(c.answer, Charge) and c.answer.cost_uc == stored[eid][0] for c in ok), eid
            assert all(c.answer.status == "duplicate" for c in ok[1:]), eid
            first_ok = tries.index(ok[0])
            if ok[0].answer.status == "duplicate":
                assert first_ok > 0, f"{eid}: answered duplicate on its first try, with nothing before it"
                swallowed += 1
            else:
                assert ok[0].answer.status == "charged", eid
        assert "cli-during-outage" not in stored

        # Every hold ended the way its client ended it; no hold the clients never heard of.
        reserved = {c.key for c in calls
                    if c.op == "reserve" and c.outcome == "ok" and isinstance(c.answer, Hold)}
        assert not any(c.op == "reserve" and isinstance(c.answer, Refused) for c in calls)
        assert set(hold_rows) == reserved
        settled = {c.key for c in calls if c.op == "settle" and c.outcome == "ok"}
        released = {c.key for c in calls if c.op == "release" and c.outcome == "ok"}
        assert settled | released == reserved and not settled & released
        for hold_id, (status, settled_by) in hold_rows.items():
            want = ("settled", f"hold:{hold_id}") if hold_id in settled else ("released", None)
            assert (status, settled_by) == want, hold_id

        # The figures add up: what the packages paid plus overage is what the events cost.
        balances = [main.balance(account, _now(begin) + 10**9) for account in ACCOUNTS]
        used = sum(p.used_uc for b in balances for p in b.packages)
        assert used + sum(b.overage_uc for b in balances) == sum(cost for cost, _ in stored.values())
        assert sum(b.held_uc for b in balances) == 0
        print(f"{len(calls)} requests, {len(failed)} unavailable, {swallowed} commits answered on retry")
    finally:
        for client in clients:
            client.engine.store.close()
        setup.close()


def test_db_upgrade_on_an_unreachable_database_says_so() -> None:
    """`creditmeter db upgrade` against a server that is not there: a one-line error and exit 7
    (Unavailable), like every other command — not a SQLAlchemy/psycopg traceback."""
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/cm"  # nothing listens there
    for args in (("db", "upgrade"), ("reconcile",), ("balance", "someone")):
        run = _cli(url, *args)
        assert run.returncode == 7, (args, run.returncode, run.stderr[-2000:])
        assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, (args, run.stderr[-2000:])
        assert not any(m in run.stderr for m in RAW_MARKERS), (args, run.stderr[-2000:])
