"""The balance and what bounds it: recurring allowances, limits on consumption and the policy
when credits run out; setting limits and the policy; and how a hold is refused (402, 429).

Responses are built by ``creditmeter.present``; these models describe them. Limits and the policy
are read in their plan-file form and checked by ``creditmeter.allowances`` (a value it refuses is
a 400 naming the field, as for plans and prices).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema

from creditmeter.api.models import (
    Body,
    Credits,
    CreditsIn,
    ErrorDetail,
    Id,
    Instant,
    Out,
    PackageOut,
    PeriodOut,
    SubscriptionOut,
)

Scope = Literal["account", "key", "member"]
WINDOW_RULE = ("`total`, `rolling 5h` (a rolling window counted in hours, days or weeks), or a "
               "calendar length: `1d`, `7d` or `1w` (from Monday), `1mo` (from the 1st)")


class AllowanceOut(Out):
    id: str = Field(description="The allowance's id in the plan; `plan` for the plan's own credits.")
    name: str
    every: str = Field(examples=["1d"])
    calendar: str | None = Field(description="The time zone whose calendar days, weeks and months the "
                                             "periods follow; null: counted from the subscription's start.")
    plan_credits: bool = Field(description="Whether this is the plan's own credits of each period.")
    grant_id: str = Field(description="This period's package.")
    period_start: Instant
    resets_at: Instant = Field(description="When this period ends and the next one's package starts.")
    granted_credits: Credits
    used_credits: Credits
    held_credits: Credits
    remaining_credits: Credits


class LimitOut(Out):
    id: str = Field(description="Unique on the account; the plan's limits are `plan-1`, `plan-2`, ...")
    scope: Scope = Field(description="`account`: all its usage; `key`: usage through holds made with "
                                     "one key; `member`: what one enterprise's quota paid.")
    window: str = Field(examples=["rolling 5h"], description=WINDOW_RULE + ".")
    calendar: str = Field(description="The time zone of a calendar window (UTC unless set).")
    source: Literal["plan", "operator", "owner", "admin"] = Field(
        description="Who set it: the plan, the operator, the account's owner (on its keys) or an "
                    "enterprise admin (on its members).")
    limit_credits: Credits
    used_credits: Credits = Field(description="Usage in the window that counts, whatever paid for it.")
    held_credits: Credits = Field(description="What open holds in its scope hold.")
    remaining_credits: Credits
    window_start: Instant
    resets_at: Instant | None = Field(description="When a calendar window ends; for a rolling one, "
                                                  "when its oldest usage stops counting; null for "
                                                  "`total` or an empty rolling window.")
    description: str = Field(examples=["300 credits in any 5 hours"])
    key_id: str | None = Field(None, description="Scope `key`: the key.")
    enterprise_id: str | None = Field(None, description="Scope `member`: the enterprise.")
    frees_at: Instant | None = Field(None, description="In a refusal only: when enough will have freed "
                                                       "up for the refused hold (absent: waiting alone "
                                                       "will not free enough).")


class WhenOutOut(Out):
    mode: Literal["block", "overage", "fallback"]
    description: str = Field(examples=["when your credits run out, requests are refused"])
    overage_cap_credits: Credits | None = Field(None, description="`overage`: the most debt it may run.")
    fallback_model: str | None = Field(None, description="`fallback`: the model requests go to instead.")
    daily_cap: int | None = Field(None, description="`fallback`: the most requests a UTC day that "
                                                    "may fall back (null: no cap).")


class BalanceOut(Out):
    account_id: str
    at: Instant
    available_credits: Credits
    held_credits: Credits
    overage_credits: Credits
    period_used_credits: Credits = Field(description="Credits charged for usage in the current period.")
    period: PeriodOut
    subscription: SubscriptionOut | None = Field(description="The running subscription (or trial).")
    packages: list[PackageOut]
    allowances: list[AllowanceOut] = Field(description="Each recurring allowance running now (the "
                                                       "plan's credits of each period among them) "
                                                       "with this period's package.")
    limits: list[LimitOut] = Field(description="Every limit in force: the plan's, then the account's own.")
    when_out_of_credits: WhenOutOut = Field(description="What requests meet once the credits run out.")


class LimitsOut(Out):
    limits: list[LimitOut]
    when_out_of_credits: WhenOutOut | None = Field(
        description="The account's policy; null for an enterprise admin looking at a member, who "
                    "sees only the limits set on the enterprise's quota (the member's own terms "
                    "stay private).")


class LimitIn(Body):
    window: Annotated[str, Field(min_length=1, max_length=64, examples=["rolling 5h"],
                                 description=WINDOW_RULE + ".")]
    credits: CreditsIn = Field(examples=["300"])
    calendar: Annotated[str, Field(min_length=1, max_length=64, examples=["Asia/Shanghai"])] | None = Field(
        None, description="The time zone a calendar window follows (default UTC).")
    scope: Scope = Field("account", description=(
        "`account` (the operator only), `key` (with `key_id`: a key of the account; the operator or "
        "the account's own key), `member` (with `enterprise_id`: what that enterprise's quota pays "
        "of a member's usage; the operator or the enterprise's admins)."))
    key_id: Id | None = None
    enterprise_id: Id | None = None


_OVERAGE = {"type": "object", "required": ["overage"], "additionalProperties": False,
            "properties": {"overage": {"anyOf": [
                {"type": "string", "pattern": r"^(?!0*(\.0*)?$)[0-9]+(\.[0-9]{1,6})?$", "maxLength": 30},
                {"type": "number", "exclusiveMinimum": 0}]}}}
_FALLBACK = {"type": "object", "required": ["fallback"], "additionalProperties": False,
             "properties": {"fallback": {"type": "string", "minLength": 1, "maxLength": 255},
                            "daily_cap": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 1_000_000},
                                                    {"type": "null"}]}}}
_BLOCK = {"type": "object", "required": ["block"], "additionalProperties": False,
          "properties": {"block": {"enum": [True, None]}}}


class PolicyIn(Body):
    policy: Annotated[Any, WithJsonSchema({
        "anyOf": [{"enum": ["block"]}, _BLOCK, _OVERAGE, _FALLBACK, {"type": "null"}],
        "description": "`block` (refused, 402); `{\"overage\": CAP}`: requests go on into overage "
                       "up to CAP credits of debt; `{\"fallback\": MODEL, \"daily_cap\": N}`: the "
                       "gateway sends them to MODEL, at most N a UTC day; null: back to the plan's."})]


class RefusalDetail(ErrorDetail):
    limit: LimitOut | None = Field(None, description="`limit_reached`: the limit, with `frees_at`.")
    fallback_model: str | None = Field(None, description="`insufficient_credits` under a fallback "
                                                         "policy: the model to ask instead.")


class RefusalBody(Out):
    error: RefusalDetail
