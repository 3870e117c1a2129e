"""Request and response bodies of the HTTP API, for validation and the OpenAPI document.

Responses are built by ``creditmeter.present`` (the same JSON as the CLI's ``--json``); these
models describe them. Amounts are credits strings; requests take a string or a JSON number,
read exactly (never through a float) and checked by ``creditmeter.money``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from creditmeter.events import MAX_TOKENS, integral
from creditmeter.ids import ID_CHARACTERS, ID_PATTERN, MAX_ID_LENGTH

CREDITS_PATTERN = r"^-?[0-9]+(\.[0-9]{1,6})?$"
CreditsIn = Annotated[
    StrictStr | StrictInt | Annotated[Decimal, Strict()],  # never a boolean
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"^(?!0*(\.0*)?$)[0-9]+(\.[0-9]{1,6})?$",
                               "maxLength": 30},
                              {"type": "number", "exclusiveMinimum": 0}],
                    "description": "Credits, more than zero: a decimal string or number with at most "
                                   "6 places."}),
]
Credits = Annotated[str, Field(pattern=CREDITS_PATTERN, examples=["12.5"])]
Instant = Annotated[str, Field(examples=["2026-11-24T10:00:00Z"],
                               description="ISO 8601; UTC when no offset is given.")]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
NEW_ID_RULE = f"{ID_CHARACTERS}, at most {MAX_ID_LENGTH}"
NewId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
# A whole number: a JSON integer, or a number written with a zero fraction (``60.0``), as
# ``creditmeter.events`` reads a usage event's counts.
Whole = BeforeValidator(integral)
Tokens = Annotated[int, Field(strict=True, ge=0, le=MAX_TOKENS), Whole]
ReasoningTokens = Annotated[Tokens, Field(description="Reasoning tokens, not also counted as output.")]
CacheWrite1hTokens = Annotated[Tokens, Field(description="Cache-write tokens kept for an hour, not "
                                                         "also counted in cache_write_tokens.")]
ServiceTierIn = Annotated[Literal["priority", "flex", "standard", "default", "auto"] | None, Field(
    description="The tier the request ran on; default, auto and null mean standard.")]
ServiceTierOut = Literal["standard", "priority", "flex"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """A response body (documentation only: responses are built by ``present``)."""


# -- errors ------------------------------------------------------------------------------------

class ErrorDetail(Out):
    type: str = Field(examples=["invalid_input"])
    message: str = Field(examples=["amount_credits: 1.0000001 has more than 6 decimal places"])
    field: str | None = Field(None, examples=["amount_credits"])
    requested_credits: Credits | None = None
    available_credits: Credits | None = None


class ErrorBody(Out):
    error: ErrorDetail


# -- accounts and keys ---------------------------------------------------------------------------

class AccountIn(Body):
    id: NewId = Field(examples=["user-42"], description=f"The account's id: {NEW_ID_RULE}.")
    name: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    kind: Literal["user", "enterprise"] = "user"


class AccountOut(Out):
    id: str
    name: str
    kind: Literal["user", "enterprise"]
    created_at: Instant
    overage_credits: Credits


class KeyIn(Body):
    name: Annotated[str, Field(max_length=255)] | None = None


class KeyOut(Out):
    key_id: str
    prefix: str
    role: Literal["operator", "account"]
    account_id: str | None
    name: str
    created_at: Instant
    revoked_at: Instant | None


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown this once, never stored.")


class MeOut(Out):
    role: Literal["operator", "account"]
    key_id: str
    account_id: str | None
    admin_of: list[str] = Field(description="Enterprises this account administers.")
    account: AccountOut | None


# -- grants and balance --------------------------------------------------------------------------

class GrantIn(Body):
    amount_credits: CreditsIn = Field(examples=["1000"])
    kind: Literal["trial", "subscription", "addon", "package", "enterprise", "promo", "adjustment"]
    expires_at: Instant | None = None
    effective_at: Instant | None = None
    priority: Annotated[int, Field(strict=True, ge=0, le=100), Whole] | None = None
    name: Annotated[str, Field(max_length=255)] | None = None
    id: NewId | None = Field(None, description="The package's id and idempotency key: the same grant "
                             f"again does nothing ({NEW_ID_RULE}).")


class PackageOut(Out):
    grant_id: str
    kind: str
    name: str
    priority: int
    granted_credits: Credits
    used_credits: Credits
    held_credits: Credits
    expired_credits: Credits
    voided_credits: Credits
    remaining_credits: Credits
    effective_at: Instant
    expires_at: Instant | None
    status: Literal["scheduled", "active", "depleted", "expired", "voided"]


class PeriodOut(Out):
    start: Instant
    end: Instant
    basis: Literal["subscription", "calendar_month"]


# -- usage ---------------------------------------------------------------------------------------

class UsageEventIn(Body):
    id: Id = Field(examples=["req-7f3a"])
    account_id: Id = Field(examples=["user-42"])
    timestamp: Instant | None = None
    model: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(None, examples=["gpt-4o"])
    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cached_input_tokens: Tokens = 0
    cache_write_tokens: Tokens = 0
    reasoning_tokens: ReasoningTokens = 0
    cache_write_1h_tokens: CacheWrite1hTokens = 0
    service_tier: ServiceTierIn = None
    quantities: dict[Annotated[str, Field(min_length=1, max_length=255)], Tokens] = {}
    metadata: dict[str, Any] = {}


class UsageBatchIn(Body):
    # Each event is checked on its own (one bad event does not stop the others), so the body only
    # has to be a list of anything: the document says so, and describes what a chargeable event is.
    events: Annotated[list[Any], Field(min_length=1, max_length=1000), WithJsonSchema({
        "type": "array", "minItems": 1, "maxItems": 1000,
        "items": {"anyOf": [UsageEventIn.model_json_schema(), {}]},
        "description": "Each item gets its own result: an event as described is charged; anything "
                       "else (a missing account_id, a negative count, not an object...) is rejected "
                       "in its result, and the others are charged."})]


class AllocationOut(Out):
    grant_id: str
    amount_credits: Credits


class ChargeOut(Out):
    event_id: str
    status: Literal["charged", "duplicate"]
    account_id: str
    timestamp: Instant
    cost_credits: Credits
    allocations: list[AllocationOut]
    overage_credits: Credits
    price_version: int | None
    hold_id: str | None


class RejectedOut(Out):
    event_id: str | None
    status: Literal["rejected"]
    error: ErrorDetail


class UsageResultsOut(Out):
    results: list[ChargeOut | RejectedOut]
    charged: int
    duplicate: int
    rejected: int


class EventOut(Out):
    event_id: str
    account_id: str
    timestamp: Instant
    model: str | None
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cache_write_1h_tokens: int
    service_tier: ServiceTierOut
    quantities: dict[str, int]
    metadata: dict[str, Any]
    cost_credits: Credits
    overage_credits: Credits
    allocations: list[AllocationOut]
    price_version: int | None
    hold_id: str | None


class UsagePageOut(Out):
    events: list[EventOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")


class SummaryGroupOut(Out):
    day: str | None = Field(None, examples=["2026-11-24"])
    model: str | None = None
    requests: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cache_write_1h_tokens: int
    used_credits: Credits


class SummaryOut(Out):
    account_id: str
    group_by: Literal["day", "model"]
    groups: list[SummaryGroupOut]
    total_credits: Credits
    subscription: SubscriptionOut | None = Field(description="The running subscription (or trial), now.")
    period: PeriodOut = Field(description="The current billing period (its consumption below).")
    period_used_credits: Credits


# -- holds ---------------------------------------------------------------------------------------

class HoldIn(Body):
    amount_credits: CreditsIn = Field(examples=["2.5"])
    ttl_seconds: Annotated[int, Field(strict=True, ge=1, le=7 * 86_400), Whole] | None = None
    id: NewId | None = Field(None, description=f"The hold's id and idempotency key ({NEW_ID_RULE}).")


class SettleIn(Body):
    model: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    cached_input_tokens: Tokens = 0
    cache_write_tokens: Tokens = 0
    reasoning_tokens: ReasoningTokens = 0
    cache_write_1h_tokens: CacheWrite1hTokens = 0
    service_tier: ServiceTierIn = None
    quantities: dict[Annotated[str, Field(min_length=1, max_length=255)], Tokens] = {}
    metadata: dict[str, Any] = {}
    id: Id | None = Field(None, description="The usage event's id (default: hold:HOLD_ID).")


class HoldOut(Out):
    hold_id: str
    account_id: str
    status: Literal["open", "settled", "released", "expired"]
    amount_credits: Credits
    expires_at: Instant
    parts: list[AllocationOut]


# -- prices and maintenance ------------------------------------------------------------------------

class PricesIn(Body):
    catalog: dict[str, Any] = Field(description="A catalog in the YAML file's structure, as JSON.",
                                    examples=[{"models": {"gpt-4o": {"input": "2.5", "output": "10"}}}])
    effective_at: Instant | None = Field(None, description=(
        "When the prices take effect. Default: the first catalog ever loaded is effective from the "
        "start of time (so earlier usage can be priced), every later one from now."))


class PriceVersionOut(Out):
    version: int
    effective_at: Instant
    models: int
    features: int


class PricesOut(Out):
    at: Instant
    current_version: int | None
    versions: list[PriceVersionOut]
    catalog: dict[str, Any] | None


class TickOut(Out):
    at: Instant
    subscriptions_renewed: int
    accounts: int
    holds_expired: int
    entries: int


class ReconcileOut(Out):
    ok: bool
    violations: list[str]


class HealthOut(Out):
    status: Literal["ok"]
    database: str


# -- plans, subscriptions, purchases -------------------------------------------------------------

class PlanOut(Out):
    id: str
    kind: Literal["trial", "subscription", "addon", "package", "enterprise"]
    name: str
    credits: Credits = Field(description="Per period; per seat per period for enterprise; the pack's size.")
    period: Literal["month", "year"] | None = None
    valid_days: int | None = None
    priority: int
    description: str | None
    seats_default: int | None = None
    # In their plan-file form, present only when the plan sets them.
    rollover: dict[str, Any] | None = Field(None, description="What each period's unused credits carry over.")
    allowances: list[dict[str, Any]] | None = Field(None, description="Further recurring packages.")
    limits: list[dict[str, Any]] | None = Field(None, description="Limits on consumption (`plan-1`, ...).")
    when_out_of_credits: str | dict[str, Any] | None = Field(
        None, description="`block` (when absent), `{overage: CAP}` or `{fallback: MODEL, daily_cap: N}`.")


class PlansIn(Body):
    plans: list[dict[str, Any]] = Field(min_length=1,
                                        description="Plans in the YAML file's structure, as JSON.")


class PlanCatalogOut(Out):
    version: int
    plans: int


class SubscriptionIn(Body):
    plan_id: Id = Field(examples=["professional-monthly"])
    seats: Annotated[int, Field(strict=True, ge=1, le=1_000_000), Whole] | None = None
    id: Annotated[str, Field(min_length=1, max_length=200, pattern=ID_PATTERN)] | None = Field(
        None, description="Idempotency key: the same subscription again does nothing "
                          f"({ID_CHARACTERS}, at most 200).")


class PeriodBounds(Out):
    start: Instant
    end: Instant


class SubscriptionOut(Out):
    subscription_id: str
    account_id: str
    plan_id: str
    plan_name: str
    kind: Literal["trial", "subscription", "enterprise"]
    status: Literal["active", "cancelled", "expired"]
    seats: int | None
    allowance_credits: Credits
    period: Literal["month", "year"] | None
    started_at: Instant
    current_period: PeriodBounds | None
    renews_at: Instant | None
    ends_at: Instant | None
    cancelled_at: Instant | None


class AccountSubscriptionsOut(Out):
    account_id: str
    current: SubscriptionOut | None
    subscriptions: list[SubscriptionOut]


class PurchaseIn(Body):
    pack_id: Id = Field(examples=["addon-1000"])
    id: Annotated[str, Field(min_length=1, max_length=240, pattern=ID_PATTERN)] | None = Field(
        None, description=f"The order id: the same order again does nothing ({ID_CHARACTERS}, at most 240).")
