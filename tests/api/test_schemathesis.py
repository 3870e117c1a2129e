"""The real server against its own OpenAPI document (schemathesis), on each store.

Each run starts ``creditmeter serve`` on a fresh database seeded with accounts, grants, usage, a
hold and keys, loads ``/openapi.json`` from it and sends generated requests to every operation,
once as the operator and once with an account key. Path parameters, query times and usage bodies
are steered towards the seeded objects part of the time, so requests reach real accounts, grants,
holds and keys, not only 404s. Every check schemathesis has runs on every response (what
``--checks all`` runs): no 5xx; a documented status code, content type and headers; the documented
schema; a request that breaks the document refused with a 4xx; one that keeps it not refused as
malformed; ``Allow`` on a 405; ... A request that keeps the document may still be refused for what
its values mean (an expiry in the past, an id with a control character): that is the documented
400 ``invalid_input``, so 400, 402 (credits the account lacks) and 429 (a hold past a limit an
earlier request set) count as accepting it; 422, the answer for a body of the wrong shape, does not.

The run is bounded (a fixed number of examples per operation and mode, no deadline) and runs
with a fixed seed, so the same requests are sent on every run. Each operation runs as its own Hypothesis
test over ``APIOperation.as_strategy`` and every operation's failure is reported, not only the
first. (``schemathesis.pytest.from_fixture``, the loader meant for a server that a fixture starts,
does not run under pytest 9: it sets ``Node._nodeid``, which pytest 9 no longer has.)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
import schemathesis.specs.openapi.checks  # noqa: F401 - registers the OpenAPI checks
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as fixed_seed
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS as REGISTERED
from schemathesis.checks import is_check_class

from tests.api.conftest import ADMIN_KEY, Server, bearer

# Examples per operation and mode: schema-valid requests (often steered to real objects), and
# requests that break the schema somewhere.
MAX_EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 20, schemathesis.GenerationMode.NEGATIVE: 10}
# Every check schemathesis has (its own registry: what `--checks all` runs).
CHECKS = [check for check in REGISTERED.get_all() if not is_check_class(check)]
SEED = 20261201
# What a request that keeps the document may be answered (see above).
ACCEPTING = ["2xx", "400", "401", "402", "403", "404", "409", "429"]

# Valid instants (and a few edge ones) mixed into `at`, `from`, `to`, `effective_at`, ...
INSTANTS = ["2026-01-01T00:00:00Z", "2026-11-10T12:00:00Z", "2030-01-01T00:00:00+02:00",
            "2026-11-10", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]
MODELS = ["gpt-4o", "gpt-4o-mini", "demo-large", "no-such-model"]
TOKENS = ["input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens",
          "cache_write_1h_tokens"]


@dataclass
class Seeded:
    """A running server and the objects put in it."""

    server: Server
    role: str
    key: str
    ids: dict[str, list[str]]

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)


def _ok(response: Any, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def seed(server: Server, role: str) -> Seeded:
    """Accounts alice (user, with packages, usage, a hold and two keys), bob (user) and acme
    (enterprise); the account pass runs with alice's first key."""
    with server.client() as op:
        for account, kind in (("alice", "user"), ("bob", "user"), ("acme", "enterprise")):
            _ok(op.post("/api/accounts", json={"id": account, "kind": kind, "name": account.title()}))
        _ok(op.post("/api/accounts/alice/grants", json={
            "id": "g-trial", "amount_credits": "100", "kind": "trial", "name": "Trial"}))
        _ok(op.post("/api/accounts/alice/grants", json={
            "id": "g-sub", "amount_credits": "1000.5", "kind": "subscription",
            "expires_at": "2099-01-01T00:00:00Z"}))
        _ok(op.post("/api/accounts/alice/grants", json={
            "id": "g-later", "amount_credits": 25, "kind": "addon",
            "effective_at": "2098-01-01T00:00:00Z"}))
        _ok(op.post("/api/accounts/bob/grants", json={"id": "g-bob", "amount_credits": "1", "kind": "promo"}))
        events = [{"id": f"seed-{i}", "account_id": "alice", "model": "gpt-4o", "input_tokens": 1000 * i,
                   "output_tokens": 10 * i, "metadata": {"conversation": f"c{i % 2}"}} for i in range(1, 6)]
        events.append({"id": "seed-search", "account_id": "alice", "quantities": {"web_search": 2}})
        events.append({"id": "seed-bob", "account_id": "bob", "model": "gpt-4o-mini", "input_tokens": 7})
        results = _ok(op.post("/api/usage", json={"events": events}), 200)
        assert results["charged"] == len(events), results
        _ok(op.post("/api/accounts/alice/holds", json={"id": "h-open", "amount_credits": "3"}))
        _ok(op.post("/api/accounts/alice/holds", json={"id": "h-settle", "amount_credits": "2"}))
        _ok(op.post("/api/holds/h-settle/settle", json={"model": "gpt-4o", "input_tokens": 100}), 200)
        alice = _ok(op.post("/api/accounts/alice/keys", json={"name": "fuzzing"}))
        spare = _ok(op.post("/api/accounts/alice/keys", json={"name": "spare"}))
        bob = _ok(op.post("/api/accounts/bob/keys", json={"name": "bob"}))
        page = _ok(op.get("/api/accounts/alice/usage", params={"limit": 2}), 200)
    # The account pass must not revoke the key it runs with: it is never offered as a key_id there.
    own = [alice["key_id"]] if role == "operator" else []
    ids = {
        # Alice's objects are the ones an account key may see: offered more often on that pass.
        "account_id": ["alice", "bob", "acme"] if role == "operator" else ["alice", "alice", "bob"],
        "grant_id": ["g-trial", "g-sub", "g-later", "g-bob"],
        "hold_id": ["h-open", "h-settle"],
        "key_id": [*own, spare["key_id"], bob["key_id"]],
        "cursor": [page["next_cursor"]],
    }
    return Seeded(server, role, ADMIN_KEY if role == "operator" else alice["key"], ids)


def _steer(values: Any, real: dict[str, list[Any]]) -> st.SearchStrategy[Any]:
    """Each value of a generated mapping: as generated, or one of the real ones for that name."""
    if not isinstance(values, dict) or not values:
        return st.just(values)
    return st.fixed_dictionaries({name: st.sampled_from([value, *real.get(name, [])])
                                  for name, value in values.items()})


def load_schema(seeded: Seeded, mode: schemathesis.GenerationMode) -> schemathesis.BaseSchema:
    """The server's own /openapi.json, with hooks that steer generated data to the seeded objects.

    Bodies are steered for schema-valid requests only: in a request meant to break the schema,
    putting a real value in place of a generated one could mend the very field that broke it."""
    config = schemathesis.Config.from_dict({"headers": seeded.headers, "checks": {
        "positive_data_acceptance": {"expected-statuses": ACCEPTING}}})
    schema = schemathesis.openapi.from_url(f"{seeded.server.base_url}/openapi.json", config=config)
    ids = seeded.ids

    real = {**ids, "at": INSTANTS, "from": INSTANTS, "to": INSTANTS, "model": MODELS, "member": ["alice"],
            "expires_at": INSTANTS, "effective_at": INSTANTS,
            "amount_credits": ["1", "0.000001", 2.5, "1000000000000"],
            "limit_id": ["lim-a", "lim-b"], "window": ["rolling 5h", "1d", "total"],
            "credits": ["300", 2.5], "policy": ["block", {"overage": "10"}, None],
            **dict.fromkeys(TOKENS, [0, 1, 1000, 4000])}

    @schema.hook("flatmap_path_parameters")
    def real_objects(context: schemathesis.HookContext, path: dict[str, Any] | None
                     ) -> st.SearchStrategy[Any]:
        return _steer(path, real)

    @schema.hook("flatmap_query")
    def real_times(context: schemathesis.HookContext, query: dict[str, Any] | None) -> st.SearchStrategy[Any]:
        return st.one_of(_steer(query, real), st.just({}))  # every query parameter is optional

    if mode is not schemathesis.GenerationMode.POSITIVE:
        return schema

    @schema.hook("flatmap_body")
    def real_bodies(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
        if isinstance(body, dict) and isinstance(body.get("events"), list):
            event = {**real, "timestamp": [None]}  # now: inside the lateness window
            events = [_steer(e, event) for e in body["events"]]
            return st.fixed_dictionaries({**{k: st.just(v) for k, v in body.items()},
                                          "events": st.tuples(*events).map(list)})
        return _steer(body, real)

    return schema


def fuzz(operation: schemathesis.APIOperation, mode: schemathesis.GenerationMode, seeded: Seeded,
         seen: Counter[tuple[str, int]]) -> str | None:
    """Send generated requests to one operation; the failure, or None."""
    strategies = [operation.as_strategy(generation_mode=mode)]
    if mode is schemathesis.GenerationMode.POSITIVE:
        strategies += operation.get_strategies_from_examples()

    @fixed_seed(SEED)
    @settings(max_examples=MAX_EXAMPLES[mode], deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink])
    @given(case=st.one_of(strategies))
    def run(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers=seeded.headers, checks=CHECKS)
        seen[operation.label, response.status_code] += 1

    try:
        run()
    except Unsatisfiable:
        if mode is schemathesis.GenerationMode.NEGATIVE:
            return None  # nothing in this operation's request can be made invalid (only free strings)
        return f"{operation.label} [{mode.value}]: no request could be generated"
    except (Exception, BaseExceptionGroup) as exc:  # every failure is reported, with its request
        return f"{operation.label} [{mode.value}]\n{exc}"
    return None


READS = ["GET /api/me", "GET /api/prices", "GET /api/accounts/{account_id}",
         "GET /api/accounts/{account_id}/balance", "GET /api/accounts/{account_id}/grants",
         "GET /api/accounts/{account_id}/keys", "GET /api/accounts/{account_id}/usage",
         "GET /api/accounts/{account_id}/usage/summary", "GET /api/accounts/{account_id}/usage.csv",
         "GET /api/accounts/{account_id}/limits"]
REACHED = {
    "operator": [*READS, "GET /api/accounts", "GET /api/reconcile", "GET /metrics", "POST /api/tick",
                 "POST /api/accounts", "POST /api/accounts/{account_id}/keys",
                 "POST /api/keys/{key_id}/revoke", "POST /api/grants/{grant_id}/void", "POST /api/usage",
                 "POST /api/prices", "PUT /api/accounts/{account_id}/limits/{limit_id}",
                 "PUT /api/accounts/{account_id}/when-out-of-credits"],
    "account": [*READS, "POST /api/keys/{key_id}/revoke"],
}


@pytest.mark.parametrize("role", ["operator", "account"])
def test_every_response_of_the_real_server_conforms_to_its_openapi_document(server: Server,
                                                                            role: str) -> None:
    assert {"negative_data_rejection", "positive_data_acceptance", "unsupported_method",
            "allow_header_conformance", "missing_required_header", "ignored_auth", "use_after_free",
            "ensure_resource_availability"} <= {check.__name__ for check in CHECKS}
    seeded = seed(server, role)
    seen: Counter[tuple[str, int]] = Counter()
    failures = []
    for mode in schemathesis.GenerationMode:
        operations = [result.ok() for result in load_schema(seeded, mode).get_all_operations()]
        assert len(operations) >= 24, [op.label for op in operations]
        failures += [failure for operation in operations
                     if (failure := fuzz(operation, mode, seeded, seen)) is not None]
    report = "\n\n".join(failures)
    assert not failures, f"{len(failures)} operation(s) broke the OpenAPI contract:\n\n{report}"
    # The requests reached real objects, not only 4xx: these operations answered 2xx at least once.
    succeeded = {label for label, status in seen if status < 300}
    assert set(REACHED[role]) <= succeeded, sorted(seen.items())
    assert sum(n for (_, status), n in seen.items() if 400 <= status < 500) >= 100, sorted(seen.items())
