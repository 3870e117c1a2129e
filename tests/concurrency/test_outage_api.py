"""The HTTP API while its database goes away and comes back.

A real ``creditmeter serve --workers 2`` runs on a throwaway PostgreSQL server (the one
test_outage.py starts), which is restarted twice (``pg_ctl stop -m fast``, then ``-m immediate``)
while four clients charge events, reserve, settle and release, and read balances and usage over
HTTP with the operator key. A request the outage hits is answered 503 with a clear one-line
``unavailable`` error (never a 500, a traceback or driver text), and the client retries it with the
same id until it is answered. ``/healthz`` says 503 while the database is down and 200 once it is
back; the service recovers by itself, without a restart of ``serve``. At the end nothing is
half-written: every invariant holds, every event a client saw charged is stored exactly once at
the cost it was told, and every hold ended as its client ended it.
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import sqlalchemy as sa

from creditmeter.engine import Engine
from creditmeter.money import format_credits
from creditmeter.pricing import load_yaml, parse_catalog
from creditmeter.store.sql import SqlStore, _driver_url
from tests.api.conftest import OPERATOR, start_server, stop_server
from tests.api.conftest import Server as Api
from tests.concurrency.test_outage import RAW_MARKERS, Server, server  # noqa: F401 - server: the fixture
from tests.conftest import EXAMPLE_CATALOG, at

CLIENTS = 4
ACCOUNTS = ["api-0", "api-1", "api-2"]
MODEL = "gpt-4o-mini"
GRACE_S = 1.0  # a request started this long after the database is back must succeed
HTTP_TIMEOUT_S = 15.0
MARKERS = tuple(marker.lower() for marker in RAW_MARKERS)


@dataclass
class Call:
    """One HTTP request a client made, and how it was answered."""

    worker: int
    op: str
    key: str
    started: float
    ended: float = 0.0
    status: int = 0  # 0: no HTTP answer at all
    outcome: str = ""  # ok | refused | unavailable | bad
    answer: Any = None  # the JSON body
    problem: str = ""  # for "bad": why the API may not answer this

    def __str__(self) -> str:
        return f"{self.op} {self.key} -> {self.status} {self.problem or self.answer}"


@dataclass
class Client:
    worker: int
    calls: list[Call] = field(default_factory=list)
    unfinished: list[tuple[Any, ...]] = field(default_factory=list)
    crash: str = ""


def _unavailable_problem(response: httpx2.Response) -> str:
    """Why a 503 is not the clear ``unavailable`` error it must be ("" when it is)."""
    try:
        body = response.json()
    except ValueError:
        return f"a 503 that is not JSON: {response.text[:500]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(body) != {"error"} or set(error) != {"type", "message"}:
        return f"a 503 not shaped {{'error': {{'type', 'message'}}}}: {body!r}"
    message = error["message"]
    if error["type"] != "unavailable" or not isinstance(message, str):
        return f"a 503 that is not 'unavailable': {body!r}"
    if "\n" in message or "database" not in message:
        return f"an unclear 503 message (one line, naming the database): {message!r}"
    return ""


def _judge(op: str, response: httpx2.Response) -> tuple[str, Any, str]:
    """(outcome, JSON answer, problem) of one response."""
    text = response.text
    leaked = [marker for marker in MARKERS if marker in text.lower()]
    if leaked and not response.is_success:
        return "bad", None, f"driver text or a traceback in the answer ({leaked}): {text[:2000]!r}"
    if response.status_code == 503:
        problem = _unavailable_problem(response)
        return ("bad", None, problem) if problem else ("unavailable", response.json(), "")
    try:
        answer = response.json()
    except ValueError:
        return "bad", None, f"not JSON: {text[:500]!r}"
    if response.status_code == 402 and op == "reserve" and answer["error"]["type"] == "insufficient_credits":
        return "refused", answer, ""
    if not response.is_success:
        return "bad", answer, f"HTTP {response.status_code}: {text[:2000]!r}"
    if op == "record" and answer["results"][0]["status"] not in ("charged", "duplicate"):
        return "bad", answer, f"the event was not charged: {answer!r}"
    return "ok", answer, ""


def _call(client: Client, http: httpx2.Client, op: str, key: str, method: str, path: str,
          body: Any = None, params: dict[str, Any] | None = None) -> Call:
    call = Call(client.worker, op, key, time.monotonic())
    try:
        response = http.request(method, path, json=body, params=params)
    except httpx2.HTTPError as exc:
        call.outcome, call.problem = "bad", f"no HTTP answer: {exc!r}"
    else:
        call.status = response.status_code
        call.outcome, call.answer, call.problem = _judge(op, response)
    call.ended = time.monotonic()
    client.calls.append(call)
    return call


def _work(api: Api, client: Client, seed: int, stop: threading.Event, give_up: list[float]) -> None:
    """Random requests until ``stop``; a request not answered is retried (same id) until it is."""
    try:
        _loop(api, client, random.Random(seed), stop, give_up)
    except Exception:  # noqa: BLE001 - reported by the test
        client.crash = traceback.format_exc()


def _loop(api: Api, client: Client, rng: random.Random, stop: threading.Event, give_up: list[float]) -> None:
    tasks: collections.deque[tuple[str, str, str, Any]] = collections.deque()
    step = 0
    with httpx2.Client(base_url=api.base_url, headers=OPERATOR, timeout=HTTP_TIMEOUT_S) as http:
        while True:
            if not tasks:
                if stop.is_set():
                    return
                step += 1
                # One client only records: an outage always meets a record in flight (the others'
                # reserve-settle chains could otherwise keep every record out of both outages).
                roll = 0.0 if client.worker == 0 else rng.random()
                account = rng.choice(ACCOUNTS)
                if roll < 0.4:
                    eid = f"w{client.worker}-e{step}"
                    event = {"id": eid, "account_id": account, "model": MODEL,
                             "input_tokens": rng.randint(1, 50_000), "output_tokens": rng.randint(0, 5_000)}
                    tasks.append(("record", eid, "/api/usage", {"events": [event]}))
                elif roll < 0.8:
                    hid = f"w{client.worker}-h{step}"
                    tasks.append(("reserve", hid, f"/api/accounts/{account}/holds",
                                  {"id": hid, "amount_credits": str(rng.randint(1, 3))}))
                else:
                    _read(client, http, rng)
                    continue
            op, key, path, body = tasks[0]
            call = _call(client, http, op, key, "POST", path, body)
            if call.outcome in ("ok", "refused"):
                tasks.popleft()
                if op == "reserve" and call.outcome == "ok":
                    if rng.random() < 0.75:
                        tasks.append(("settle", key, f"/api/holds/{key}/settle",
                                      {"model": MODEL, "input_tokens": rng.randint(1, 50_000),
                                       "output_tokens": rng.randint(0, 5_000)}))
                    else:
                        tasks.append(("release", key, f"/api/holds/{key}/release", None))
            else:
                if stop.is_set() and time.monotonic() > give_up[0]:
                    client.unfinished = list(tasks)
                    return
                if rng.random() < 0.5:  # reads meet the outage too, not only the write being retried
                    _read(client, http, rng)
                time.sleep(0.02)


def _read(client: Client, http: httpx2.Client, rng: random.Random) -> None:
    account = rng.choice(ACCOUNTS)
    if rng.random() < 0.5:
        _call(client, http, "balance", account, "GET", f"/api/accounts/{account}/balance")
    else:
        _call(client, http, "usage", account, "GET", f"/api/accounts/{account}/usage", params={"limit": 20})


def _health(api: Api) -> list[tuple[int, str]]:
    """/healthz a few times, each on a new connection (so that both workers are likely asked)."""
    answers = []
    for _ in range(4):
        response = httpx2.get(f"{api.base_url}/healthz", timeout=HTTP_TIMEOUT_S)
        answers.append((response.status_code, _unavailable_problem(response)
                        if response.status_code == 503 else response.text))
    return answers


def _log(api: Api) -> str:
    return api.log.read_text(errors="replace")[-4000:]


def test_the_api_survives_a_database_restart(server: Server, tmp_path: Path) -> None:  # noqa: F811
    admin = sa.create_engine(_driver_url(server.url("postgres")), isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql('CREATE DATABASE "cm"')
    admin.dispose()
    url = server.url("cm")
    setup = SqlStore(url)
    api: Api | None = None
    try:
        setup.upgrade()
        Engine(setup).load_prices(parse_catalog(load_yaml(EXAMPLE_CATALOG.read_text())),
                                  at("2020-01-01"), at("2020-01-01"))
        setup.close()
        api = start_server(url, tmp_path / "serve.log", workers=2)
        with httpx2.Client(base_url=api.base_url, headers=OPERATOR, timeout=HTTP_TIMEOUT_S) as op:
            for account in ACCOUNTS:
                created = op.post("/api/accounts", json={"id": account})
                assert created.status_code == 201, created.text
                grant = op.post(f"/api/accounts/{account}/grants",
                                json={"id": f"{account}-addon", "amount_credits": "1000000", "kind": "addon"})
                assert grant.status_code == 201, grant.text

        clients = [Client(i) for i in range(CLIENTS)]
        stop = threading.Event()
        give_up = [float("inf")]
        threads = [threading.Thread(target=_work, args=(api, c, 200 + c.worker, stop, give_up), daemon=True)
                   for c in clients]
        outages: list[tuple[float, float]] = []  # (stop issued, server back)
        health_down: list[list[tuple[int, str]]] = []
        health_up: list[list[tuple[int, str]]] = []
        try:
            for thread in threads:
                thread.start()
            for mode in ("fast", "immediate"):
                time.sleep(1.5)
                down = time.monotonic()
                server.stop(mode)
                health_down.append(_health(api))
                time.sleep(max(0.0, 1.0 - (time.monotonic() - down)))
                server.start()
                back = time.monotonic()
                outages.append((down, back))
                time.sleep(max(0.0, back + GRACE_S - time.monotonic()))
                health_up.append(_health(api))
            time.sleep(2.0)
        finally:
            give_up[0] = time.monotonic() + 15
            stop.set()
            deadline = time.monotonic() + 30
            for thread in threads:
                thread.join(timeout=max(0.1, deadline - time.monotonic()))
        hung = [c.worker for c, t in zip(clients, threads, strict=True) if t.is_alive()]
        assert hung == [], f"client threads {hung} hung (no answer within {HTTP_TIMEOUT_S} s?)\n{_log(api)}"
        crashed = [c.crash for c in clients if c.crash]
        assert crashed == [], crashed[0]
        calls = [call for c in clients for call in c.calls]

        # Every answer is a success, a refused hold, or a clear 503: never a 500, a traceback or driver text.
        bad = [call for call in calls if call.outcome == "bad"]
        assert bad == [], (f"{len(bad)} requests were answered in a way the API may not answer, "
                           f"e.g. {bad[0]}\nserve log:\n{_log(api)}")
        failed = [call for call in calls if call.outcome == "unavailable"]
        assert failed, "no request was hit by the outages: the test tested nothing"
        hit = collections.Counter(call.op for call in failed)
        assert {"record", "reserve", "balance", "usage"} <= set(hit), f"only these were hit: {hit}"
        for down, back in outages:
            assert any(call.started <= back and call.ended >= down and call.outcome == "unavailable"
                       for call in calls), "an outage failed no request"

        # /healthz says so while the database is down, and is healthy again once it is back.
        for answers in health_down:
            assert answers == [(503, "")] * len(answers), answers
        for answers in health_up:
            assert all(status == 200 for status, _ in answers), answers
            assert all(json.loads(text)["status"] == "ok" for _, text in answers), answers

        # The service recovered by itself: a request started a moment after the server was back
        # (and before the next outage) succeeded.
        late_failures = [call for call in calls if call.outcome not in ("ok", "refused")
                         and any(back + GRACE_S <= call.started
                                 and (i + 1 == len(outages) or call.ended < outages[i + 1][0])
                                 for i, (_, back) in enumerate(outages))]
        assert late_failures == [], (f"{len(late_failures)} requests failed after the server was back, "
                                     f"e.g. {late_failures[0]}")
        for client in clients:
            assert client.unfinished == [], f"worker {client.worker} got no answer for {client.unfinished}"
            after = [call for call in client.calls if call.started > outages[-1][1] and call.outcome == "ok"]
            assert len(after) >= 5, f"worker {client.worker} made too few requests after the restart"

        # Nothing half-written.
        final = SqlStore(url)
        try:
            engine = Engine(final)
            assert engine.check_invariants() == []
            with final.engine.connect() as conn:
                stored = {row[0]: row[1:] for row in conn.exec_driver_sql(
                    "SELECT id, cost_uc, hold_id FROM events")}
                stored_count = conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
                hold_rows = {row[0]: row[1:] for row in conn.exec_driver_sql(
                    "SELECT id, status, settled_event_id FROM holds")}
            now_us = time.time_ns() // 1000
            balances = [engine.balance(account, now_us) for account in ACCOUNTS]
        finally:
            final.close()
        assert stored_count == len(stored)

        # Every event a client was answered for is stored once, at the cost it was told; a client
        # was answered for every event stored. A first answer "duplicate" is only right after a
        # failed try of the same id (a commit whose answer the outage swallowed).
        answers: dict[str, list[Call]] = collections.defaultdict(list)
        for call in calls:
            if call.op in ("record", "settle"):
                answers[call.key if call.op == "record" else f"hold:{call.key}"].append(call)
        charged = {eid: [c.answer if c.op == "settle" else c.answer["results"][0]
                         for c in tries if c.outcome == "ok"] for eid, tries in answers.items()}
        assert set(stored) == {eid for eid, ok in charged.items() if ok}
        swallowed = 0
        for eid, tries in answers.items():
            ok = charged[eid]
            assert all(a["event_id"] == eid and a["cost_credits"] == format_credits(stored[eid][0])
                       for a in ok), (eid, ok, stored[eid])
            assert all(a["status"] == "duplicate" for a in ok[1:]), (eid, ok)
            if ok[0]["status"] == "duplicate":
                assert tries[0].outcome != "ok", f"{eid}: answered duplicate on its first try"
                swallowed += 1
            else:
                assert ok[0]["status"] == "charged", (eid, ok)

        # Every hold ended the way its client ended it; no hold the clients never heard of.
        reserved = {c.key for c in calls if c.op == "reserve" and c.outcome == "ok"}
        refused = {c.key for c in calls if c.op == "reserve" and c.outcome == "refused"}
        assert set(hold_rows) == reserved and not reserved & refused
        settled = {c.key for c in calls if c.op == "settle" and c.outcome == "ok"}
        released = {c.key for c in calls if c.op == "release" and c.outcome == "ok"}
        assert settled | released == reserved and not settled & released
        for hold_id, (status, settled_by) in hold_rows.items():
            want = ("settled", f"hold:{hold_id}") if hold_id in settled else ("released", None)
            assert (status, settled_by) == want, hold_id
            if hold_id in settled:
                assert stored[f"hold:{hold_id}"][1] == hold_id, hold_id

        # The figures add up: what the packages paid plus overage is what the events cost.
        used = sum(p.used_uc for b in balances for p in b.packages)
        assert used + sum(b.overage_uc for b in balances) == sum(cost for cost, _ in stored.values())
        assert sum(b.held_uc for b in balances) == 0
        print(f"{len(calls)} requests, {len(failed)} answered 503 ({dict(hit)}), "
              f"{swallowed} commits answered on retry")
    finally:
        if api is not None:
            stop_server(api)
        setup.close()
