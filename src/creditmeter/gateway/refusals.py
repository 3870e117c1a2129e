"""What the gateway answers when the engine refuses a request's hold: 429 ``limit_reached`` when
the hold would pass one of the account's limits (naming the limit, what counts against it, and
when enough frees up, with ``Retry-After`` until then), else 402 ``insufficient_credits`` saying
what the credits, the overage cap or the fallback allowed. Each route renders them in its own
protocol's shape (Anthropic's clients, like OpenAI's, raise their ``RateLimitError`` for a 429)."""

from __future__ import annotations

from creditmeter.allowances import LimitStatus, OutOfCredits, WhenOut
from creditmeter.domain import Refused
from creditmeter.gateway.errors import GatewayError
from creditmeter.money import format_credits
from creditmeter.timeutil import format_instant

US_PER_S = 1_000_000
# A longer wait is not one a client should sleep through before retrying (Anthropic's client would
# wait it out, however long): past it, the answer says not to retry.
LONGEST_RETRY_S = 60


def limit_reached(refused: Refused, estimate_uc: int, at_us: int) -> GatewayError:
    """A hold of ``estimate_uc`` refused by a limit (``refused.limit``), answered at ``at_us``:
    429, with ``Retry-After`` (whole seconds, rounded up, at least 1) until enough frees up; none
    when waiting alone will not free enough. A wait over ``LONGEST_RETRY_S`` also says
    ``x-should-retry: false``, which the OpenAI and Anthropic clients obey."""
    status: LimitStatus = refused.limit
    assert status is not None, refused
    counted = f"{format_credits(status.used_uc)} used"
    if status.held_uc:
        counted += f", {format_credits(status.held_uc)} held by requests in flight"
    headers = {}
    if status.frees_at_us is None:
        when = "waiting alone will not free enough for it"
    else:
        when = f"enough frees up at {format_instant(status.frees_at_us)}"
        wait_s = max(1, -(-(status.frees_at_us - at_us) // US_PER_S))
        headers["Retry-After"] = str(wait_s)
        if wait_s > LONGEST_RETRY_S:
            headers["x-should-retry"] = "false"
    return GatewayError(429, f"limit reached: {status.rule.describe()}: {counted}; this request may "
                             f"cost up to {format_credits(estimate_uc)} credits; {when}",
                        "rate_limit_error", code="limit_reached", headers=headers)


def insufficient(refused: Refused, estimate_uc: int, policy: OutOfCredits | None = None,
                 why: str | None = None) -> GatewayError:
    """A hold the credits cannot cover: 402, with the estimate and the credits available; under
    an ``overage`` policy, the cap the overage would pass; ``why`` adds what else stopped it (the
    fallback, used up or unusable)."""
    message = (f"insufficient credits: this request may cost up to {format_credits(estimate_uc)} credits "
               f"and {format_credits(refused.available_uc)} are available")
    if policy is not None and policy.mode is WhenOut.OVERAGE:
        message += (f", and the overage it may run into would pass the account's cap of "
                    f"{format_credits(policy.overage_cap_uc)} credits "
                    f"(overage now {format_credits(refused.overage_uc)})")
    elif refused.overage_uc:
        message += f" (overage {format_credits(refused.overage_uc)} to pay first)"
    if why:
        message += f"; {why}"
    return GatewayError(402, message, "insufficient_quota", code="insufficient_credits")
