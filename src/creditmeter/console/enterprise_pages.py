"""An enterprise's page for its admins (and the operator): the pool, its members' quotas, and the
forms that add a quota and revoke one.

Both forms carry the session's form token; a wrong one is the 403 page. An enterprise the key does
not administer is the 404 page, like one that does not exist.
"""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from creditmeter.console import views
from creditmeter.console.deps import Console, Hidden, Pages, manages, page, redirect
from creditmeter.console.session import PATH, session_key, token_ok
from creditmeter.errors import Conflict, InputError
from creditmeter.money import parse_credits
from creditmeter.timeutil import DAY_US, MAX_US

# Engine fields of an allocation → the add-quota form's fields.
QUOTA_FIELDS = {"account_id": "member", "amount": "amount", "expires": "valid_through"}
DONE = {"added": "Quota added.", "revoked": "Quota revoked; what was unused is back in the pool."}

router = APIRouter(prefix=PATH)  # the full path on each route: metrics label requests by it


def enterprise_page(console: Console, request: Request, enterprise_id: str, status: int = 200,
                    form: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                    message: str | None = None) -> Response:
    view = console.engine.enterprise(enterprise_id, console.clock())
    form = form or {"member": "", "amount": "", "valid_through": "", "id": uuid.uuid4().hex}
    return console.render(request, "enterprise.html", status, form=form, errors=errors or {},
                          message=message, **views.enterprise(view))


@router.get("/enterprises/{enterprise_id}")
@page
def show_enterprise(request: Request, console: Pages, enterprise_id: str, done: str = "") -> Response:
    manages(console.require(request), enterprise_id)
    return enterprise_page(console, request, enterprise_id, message=DONE.get(done))


def _read_quota(form: dict[str, str]) -> tuple[dict[str, str], int, int | None]:
    """The add-quota form's errors by field, its amount (µc) and its end (exclusive, µs or none)."""
    errors: dict[str, str] = {}
    if not form["member"]:
        errors["member"] = "Choose a member."
    amount_uc = 0
    if not form["amount"]:
        errors["amount"] = "Enter an amount of credits."
    else:
        try:
            amount_uc = parse_credits(form["amount"], "amount", allow_zero=False)
        except InputError as exc:
            errors["amount"] = exc.reason
    expires_us = None
    if form["valid_through"]:
        try:
            expires_us = views.parse_day(form["valid_through"], "valid_through") + DAY_US
            if expires_us > MAX_US:
                raise InputError("valid_through", "must be a date before 9999-12-31")
        except InputError as exc:
            errors["valid_through"] = exc.reason
    return errors, amount_uc, expires_us


@router.post("/enterprises/{enterprise_id}/quota")
@page
def add_quota(request: Request, console: Pages, enterprise_id: str, csrf: Annotated[str, Form()] = "",
              member: Annotated[str, Form()] = "", amount: Annotated[str, Form()] = "",
              valid_through: Annotated[str, Form()] = "",
              form_id: Annotated[str, Form(alias="id")] = "") -> Response:
    manages(console.require(request), enterprise_id)
    if not token_ok(_key(request), csrf):
        return console.refused(request)
    form = {"member": member.strip(), "amount": amount.strip(), "valid_through": valid_through.strip(),
            "id": form_id.strip() or uuid.uuid4().hex}
    errors, amount_uc, expires_us = _read_quota(form)
    if errors:
        return enterprise_page(console, request, enterprise_id, 400, form, errors)
    try:  # an unknown enterprise raises NotFound: the 404 page
        console.engine.allocate(enterprise_id, form["member"], amount_uc, console.clock(),
                                expires_at_us=expires_us, allocation_id=form["id"])
    except InputError as exc:
        errors[QUOTA_FIELDS.get(exc.field, "form")] = exc.reason
        if exc.field == "id":  # the form's own id: a fresh one lets the next try go through
            form["id"] = uuid.uuid4().hex
        return enterprise_page(console, request, enterprise_id, 400, form, errors)
    except Conflict as exc:
        return enterprise_page(console, request, enterprise_id, 409, form, {"form": str(exc)})
    return redirect(f"/console/enterprises/{quote(enterprise_id, safe='')}?done=added")


@router.post("/enterprises/{enterprise_id}/revoke")
@page
def revoke_quota(request: Request, console: Pages, enterprise_id: str, csrf: Annotated[str, Form()] = "",
                 allocation_id: Annotated[str, Form()] = "") -> Response:
    manages(console.require(request), enterprise_id)
    if not token_ok(_key(request), csrf):
        return console.refused(request)
    if console.engine.allocation(allocation_id).enterprise_id != enterprise_id:
        raise Hidden
    try:
        console.engine.revoke_allocation(allocation_id, console.clock())
    except Conflict as exc:
        return enterprise_page(console, request, enterprise_id, 409, errors={"revoke": str(exc)})
    return redirect(f"/console/enterprises/{quote(enterprise_id, safe='')}?done=revoked")


def _key(request: Request) -> str:
    key = session_key(request)
    assert key is not None  # require() passed
    return key
