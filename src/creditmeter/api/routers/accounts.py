"""Who am I, accounts and their API keys."""

from fastapi import APIRouter
from fastapi.responses import Response

from creditmeter import present
from creditmeter.api.auth import Caller, KeyedRoute, Operator, readable, short_read, threaded
from creditmeter.api.context import PREFIX, Ctx
from creditmeter.api.errors import ERRORS, errors_with
from creditmeter.api.models import (
    AccountIn,
    AccountOut,
    KeyCreated,
    KeyIn,
    KeyOut,
    MeOut,
)
from creditmeter.api.responses import json_response
from creditmeter.errors import NotFound

router = APIRouter(prefix=PREFIX, route_class=KeyedRoute, responses=ERRORS)


@router.get("/me", response_model=MeOut, summary="The caller's key, role and account")
@short_read
def me(ctx: Ctx, who: Caller) -> Response:
    account = None
    if who.account_id is not None:
        found = ctx.engine.account(who.account_id)
        account = present.account(*found) if found else None
    return json_response({"role": who.role.value, "key_id": who.key_id, "account_id": who.account_id,
                          "admin_of": sorted(who.admin_of), "account": account})


@router.post("/accounts", response_model=AccountOut, status_code=201, responses=errors_with(409),
             summary="Create an account (operator)")
@threaded
def create_account(ctx: Ctx, body: AccountIn, who: Operator) -> Response:
    account = ctx.engine.create_account(body.id, ctx.clock(), name=body.name, kind=body.kind)
    return json_response(present.account(account, 0), 201)


@router.get("/accounts", response_model=list[AccountOut], summary="Every account (operator)")
@threaded
def list_accounts(ctx: Ctx, who: Operator) -> Response:
    return json_response([present.account(a, o) for a, o in ctx.engine.accounts()])


@router.get("/accounts/{account_id}", response_model=AccountOut, summary="One account")
@short_read
def get_account(ctx: Ctx, account_id: str, who: Caller) -> Response:
    readable(who, account_id)
    found = ctx.engine.account(account_id)
    if found is None:
        raise NotFound("account", account_id, "account_id")
    return json_response(present.account(*found))


@router.post("/accounts/{account_id}/keys", response_model=KeyCreated, status_code=201,
             summary="Create a key for an account (the operator, or the account itself)")
@threaded
def create_key(ctx: Ctx, account_id: str, body: KeyIn, who: Caller) -> Response:
    if not who.can_manage_keys(account_id):
        raise NotFound("account", account_id, "account_id")
    key, secret = ctx.engine.create_key(account_id, ctx.clock(), name=body.name)
    return json_response({**present.key(key), "key": secret}, 201)


@router.get("/accounts/{account_id}/keys", response_model=list[KeyOut],
            summary="An account's keys (never the keys themselves)")
@short_read
def list_keys(ctx: Ctx, account_id: str, who: Caller) -> Response:
    if not who.can_manage_keys(account_id):
        raise NotFound("account", account_id, "account_id")
    return json_response([present.key(k) for k in ctx.engine.keys(account_id)])


@router.post("/keys/{key_id}/revoke", response_model=KeyOut,
             summary="Revoke a key; it stops working at once")
@threaded
def revoke_key(ctx: Ctx, key_id: str, who: Caller) -> Response:
    key = ctx.engine.get_key(key_id)
    if not who.can_manage_keys(key.account_id):
        raise NotFound("key", key_id, "key_id")
    revoked = ctx.engine.revoke_key(key_id, ctx.clock())
    ctx.access.forget()
    return json_response(present.key(revoked))
