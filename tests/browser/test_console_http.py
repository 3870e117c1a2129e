"""The console's session, form tokens, redirects and scoping over plain HTTP (no browser), against
a real server; the ``Secure`` cookie flag in-process over https."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlparse

import httpx2
import pytest
from fastapi.testclient import TestClient

from creditmeter.server import create_app
from tests.api.conftest import ADMIN_KEY
from tests.browser.conftest import World

COOKIE = "creditmeter_console"
PAGES = ["/console/accounts/alice", "/console/accounts/alice/usage?model=gpt-4o",
         "/console/accounts/alice/usage.csv", "/console/enterprises/acme", "/console/anything/else"]


def client(world: World) -> httpx2.Client:
    return httpx2.Client(base_url=world.url, timeout=30, follow_redirects=False)


@contextmanager
def session(world: World, who: str) -> Iterator[httpx2.Client]:
    """A client signed in as ``who`` through the sign-in form."""
    with client(world) as c:
        key = ADMIN_KEY if who == "operator" else world.keys[who]
        response = c.post("/console/sign-in", data={"key": key})
        assert response.status_code == 303, response.text
        yield c


def token(c: httpx2.Client, path: str) -> str:
    """The form token a page carries."""
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', c.get(path).text)
    assert found
    return found.group(1)


@pytest.fixture
def carol(world: World) -> Iterator[httpx2.Client]:
    with session(world, "carol") as c:
        yield c


def test_signing_in_sets_an_http_only_lax_cookie_for_the_console_only(world: World) -> None:
    with client(world) as c:
        response = c.post("/console/sign-in", data={"key": world.keys["alice"]})
        assert (response.status_code, response.headers["location"]) == (303, "/console")
        flags = [part.strip().lower() for part in response.headers["set-cookie"].split(";")]
        assert flags[0] == f"{COOKIE}={world.keys['alice']}".lower()
        assert {"httponly", "path=/console", "samesite=lax", "max-age=43200"} <= set(flags)
        assert "secure" not in flags  # plain http here; see the https test
        assert c.get("/console").headers["location"] == "/console/accounts/alice"
        assert c.get("/console/accounts/alice").status_code == 200


def test_over_https_the_cookie_is_secure(world: World) -> None:
    app = create_app(world.engine, admin_key=ADMIN_KEY)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        response = c.post("/console/sign-in", data={"key": world.keys["bob"]})
        assert response.status_code == 303
        assert "secure" in [p.strip().lower() for p in response.headers["set-cookie"].split(";")]
        csrf = token(c, "/console/accounts/bob")
        out = c.post("/console/sign-out", data={"csrf": csrf})
        cleared = [p.strip().lower() for p in out.headers["set-cookie"].split(";")]
        assert "secure" in cleared and "max-age=0" in cleared and "path=/console" in cleared


def test_a_bad_key_is_refused_at_the_field(world: World) -> None:
    with client(world) as c:
        for key, status, message in (("cm_nobody", 401, "This key is unknown or has been revoked."),
                                     ("", 400, "Enter your key.")):
            response = c.post("/console/sign-in", data={"key": key})
            assert response.status_code == status
            assert "set-cookie" not in response.headers
            assert f'<p class="err" id="key-err">{message}</p>' in response.text
            assert 'aria-invalid="true" aria-describedby="key-err"' in response.text


def test_signed_out_visitors_are_sent_to_sign_in(world: World) -> None:
    with client(world) as c:
        assert c.get("/console").headers["location"] == "/console/sign-in"
        for path in PAGES:
            response = c.get(path)
            assert response.status_code == 303, path
            location = urlparse(response.headers["location"])
            assert location.path == "/console/sign-in"
            assert parse_qs(location.query)["next"] == [path]
        # A key that no longer works (unknown, revoked) signs the browser out.
        response = c.get("/console/accounts/alice", headers={"Cookie": f"{COOKIE}=cm_revoked-or-never-was"})
        assert response.status_code == 303 and "max-age=0" in response.headers["set-cookie"].lower()
        before = world.get("carol", "/api/enterprises/acme")["allocations"]
        posted = c.post("/console/enterprises/acme/quota", data={"member": "dave", "amount": "5"})
        assert (posted.status_code, posted.headers["location"]) == (303, "/console/sign-in")
        assert world.get("carol", "/api/enterprises/acme")["allocations"] == before


def test_after_sign_in_only_a_console_page_is_a_destination(world: World) -> None:
    usage = "/console/accounts/alice/usage?model=gpt-4o"
    for target, expected in ((usage, usage), ("https://elsewhere.example/console", "/console"),
                             ("//elsewhere.example/console", "/console"),
                             ("/console/..//elsewhere.example", "/console"),
                             ("/console/%2e%2e/api/accounts", "/console"),
                             ("/api/accounts/alice", "/console")):
        with client(world) as c:
            response = c.post("/console/sign-in", data={"key": world.keys["alice"], "next": target})
            assert response.headers["location"] == expected, target


def test_a_sign_in_from_another_site_is_refused(world: World) -> None:
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "https://evil.example.com"}):
        with client(world) as c:
            response = c.post("/console/sign-in", data={"key": world.keys["alice"]}, headers=headers)
            assert response.status_code == 403 and "set-cookie" not in response.headers, headers


def test_the_servers_own_operator_key_cannot_sign_in(world: World) -> None:
    """A cookie holding CREDITMETER_ADMIN_KEY could never be revoked: a stored key is asked for."""
    with client(world) as c:
        response = c.post("/console/sign-in", data={"key": ADMIN_KEY})
        assert response.status_code == 401 and "set-cookie" not in response.headers
        assert "keys create --operator" in response.text
        stored = c.post("/console/sign-in", data={"key": world.keys["operator"]})
        assert stored.status_code == 303 and "set-cookie" in stored.headers


def test_forms_that_change_something_need_the_pages_token(world: World, carol: httpx2.Client) -> None:
    good = token(carol, "/console/enterprises/acme")
    with session(world, "alice") as alice:
        alices = token(alice, "/console/accounts/alice")
    assert good != alices and good != world.keys["carol"]
    before = world.get("carol", "/api/enterprises/acme")["allocations"]
    allocation = next(a["allocation_id"] for a in before if a["revoked_at"] is None)
    form = {"member": "dave", "amount": "5", "valid_through": ""}
    for csrf in ("", alices, good[:-1] + ("1" if good.endswith("0") else "0")):
        assert carol.post("/console/enterprises/acme/quota", data={**form, "csrf": csrf}).status_code == 403
        revoke = carol.post("/console/enterprises/acme/revoke",
                            data={"allocation_id": allocation, "csrf": csrf})
        assert revoke.status_code == 403
        assert carol.post("/console/sign-out", data={"csrf": csrf}).status_code == 403
    assert world.get("carol", "/api/enterprises/acme")["allocations"] == before
    assert carol.get("/console").headers["location"] == "/console/accounts/carol"  # still signed in

    added = carol.post("/console/enterprises/acme/quota", data={**form, "csrf": good, "id": "http-test"})
    assert (added.status_code, added.headers["location"]) == (303, "/console/enterprises/acme?done=added")
    again = carol.post("/console/enterprises/acme/quota", data={**form, "csrf": good, "id": "http-test"})
    assert again.status_code == 303  # the same form sent twice adds the quota once
    after = world.get("carol", "/api/enterprises/acme")["allocations"]
    assert len(after) == len(before) + 1

    out = carol.post("/console/sign-out", data={"csrf": good})
    assert (out.status_code, out.headers["location"]) == (303, "/console/sign-in")
    assert "max-age=0" in out.headers["set-cookie"].lower()
    assert carol.get("/console/accounts/carol").status_code == 303


def test_pages_never_contain_the_key_and_are_not_cached(world: World) -> None:
    with session(world, "carol") as c:
        for path in ("/console/accounts/carol", "/console/accounts/acme/usage", "/console/enterprises/acme"):
            response = c.get(path)
            assert response.status_code == 200
            assert world.keys["carol"] not in response.text
            assert response.headers["cache-control"] == "no-store"
            assert "default-src 'none'" in response.headers["content-security-policy"]
            assert response.headers["x-content-type-options"] == "nosniff"


def test_another_users_pages_are_not_found_exactly_like_missing_ones(world: World) -> None:
    with session(world, "alice") as c:
        missing = c.get("/console/accounts/nobody-at-all")
        assert missing.status_code == 404 and "<h1" in missing.text
        for path in ("/console/accounts/bob", "/console/accounts/bob/usage",
                     "/console/accounts/bob/usage.csv", "/console/accounts/acme", "/console/enterprises/acme",
                     "/console/enterprises/globex", "/console/enterprises/nobody",
                     "/console/accounts/" + "x" * 300):
            response = c.get(path)
            assert (response.status_code, response.text) == (404, missing.text), path
        csrf = token(c, "/console/accounts/alice")
        posted = c.post("/console/enterprises/acme/quota",
                        data={"csrf": csrf, "member": "alice", "amount": "1"})
        assert (posted.status_code, posted.text) == (404, missing.text)


def test_an_admin_sees_only_their_enterprise_and_not_its_members_accounts(world: World,
                                                                          carol: httpx2.Client) -> None:
    missing = carol.get("/console/enterprises/nobody")
    assert missing.status_code == 404
    for path in ("/console/enterprises/globex", "/console/accounts/dave", "/console/accounts/globex/usage"):
        response = carol.get(path)
        assert (response.status_code, response.text) == (404, missing.text), path
    assert carol.get("/console/enterprises/acme").status_code == 200
    assert carol.get("/console/accounts/acme/usage?member=dave").status_code == 200
    csrf = token(carol, "/console/enterprises/acme")
    before = world.get("operator", "/api/enterprises/globex")["allocations"]
    posted = carol.post("/console/enterprises/globex/quota",
                        data={"csrf": csrf, "member": "gina", "amount": "1"})
    assert posted.status_code == 404
    assert world.get("operator", "/api/enterprises/globex")["allocations"] == before


def test_bad_filters_are_shown_at_their_field(world: World) -> None:
    with session(world, "alice") as c:
        for query, field in (("from=2026-13-01", "f-from"), ("to=yesterday", "f-to"),
                             ("from=2026-02-01&to=2026-01-01", "f-to"), ("member=dave", "f-member"),
                             ("limit=0", None)):
            response = c.get(f"/console/accounts/alice/usage?{query}")
            assert response.status_code == 400, query
            if field:
                assert f'id="{field}-err"' in response.text
                assert f'aria-describedby="{field}-err"' in response.text
            else:
                assert 'role="alert">limit:' in response.text
        csv = c.get("/console/accounts/alice/usage.csv?from=2026-13-01")
        assert csv.status_code == 400 and csv.text.startswith("from:")


def test_the_console_is_not_part_of_the_api_document(world: World) -> None:
    with client(world) as c:
        paths = c.get("/openapi.json").json()["paths"]
        assert paths and not [p for p in paths if p.startswith("/console")]
        css = c.get("/console/static/console.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert c.get("/console/static/nothing.css").status_code == 404


def test_quota_held_by_requests_in_flight_is_not_revoked(world: World, carol: httpx2.Client) -> None:
    before = world.get("carol", "/api/enterprises/acme")["allocations"]
    erins = next(a["allocation_id"] for a in before if a["account_id"] == "erin")
    with world.api("operator") as operator:
        hold = operator.post("/api/accounts/erin/holds", json={"amount_credits": "10", "ttl_seconds": 600})
        assert hold.status_code == 201, hold.text
    csrf = token(carol, "/console/enterprises/acme")
    response = carol.post("/console/enterprises/acme/revoke", data={"allocation_id": erins, "csrf": csrf})
    assert response.status_code == 409
    assert re.search(r'<p class="err" role="alert">10 credits of this quota are held by requests in flight',
                     response.text)
    assert world.get("carol", "/api/enterprises/acme")["allocations"] == before
    with world.api("operator") as operator:
        assert operator.post(f"/api/holds/{hold.json()['hold_id']}/release").status_code == 200


def test_a_valid_through_date_at_the_end_of_time_is_refused_in_plain_words(world: World) -> None:
    with session(world, "carol") as carol:
        good = token(carol, "/console/enterprises/acme")
        before = world.get("carol", "/api/enterprises/acme")["allocations"]
        refused = carol.post("/console/enterprises/acme/quota",
                             data={"member": "dave", "amount": "5", "valid_through": "9999-12-31",
                                   "csrf": good})
        assert refused.status_code == 400
        assert "must be a date before 9999-12-31" in refused.text and "µs" not in refused.text
        assert world.get("carol", "/api/enterprises/acme")["allocations"] == before
