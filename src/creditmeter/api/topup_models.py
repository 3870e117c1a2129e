"""The auto top-up edge's request and response bodies.

Every value of the body is checked here, by the same rules the engine applies
(``creditmeter.alert_rules.parse_auto_topup``), so that a bad one is a 422 naming the field
(``auto_topup.below``, ``auto_topup.max_per_month`` …); whether the pack is a pack of the plan
catalog is the engine's to say (404 for an unknown one, 400 for a plan that is not a pack).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StrictBool
from pydantic_core import PydanticCustomError

from creditmeter.alert_rules import MAX_TOPUPS_A_MONTH
from creditmeter.api.models import Body, Credits, CreditsIn, Id, Out, Whole
from creditmeter.errors import InputError
from creditmeter.ids import check_id
from creditmeter.money import format_credits, parse_credits


def _credits(value: object) -> str:
    """A threshold in credits, more than zero, as its credits string."""
    try:
        return format_credits(parse_credits(value, "below", allow_zero=False))
    except InputError as exc:
        raise PydanticCustomError("credits", "{reason}", {"reason": exc.reason}) from None


def _plan_id(value: str) -> str:
    """A plan's id as the catalog takes it (printable characters)."""
    try:
        return check_id(value, "pack")
    except InputError as exc:
        raise PydanticCustomError("plan_id", "{reason}", {"reason": exc.reason}) from None


class AutoTopupIn(Body):
    below: Annotated[CreditsIn, AfterValidator(_credits)] = Field(
        examples=["20"], description="A top-up is requested when the available credits fall from at "
                                     "or above this to below it.")
    pack: Annotated[Id, AfterValidator(_plan_id)] = Field(
        examples=["addon-1000"], description="An add-on or resource pack of the plan catalog: the pack "
                                             "requested.")
    max_per_month: Annotated[int, Field(strict=True, ge=1, le=MAX_TOPUPS_A_MONTH), Whole] = Field(
        examples=[2], description=f"At most this many requests a UTC month (1–{MAX_TOPUPS_A_MONTH}).")
    grant_now: StrictBool = Field(False, description=(
        "Grant the pack at once, before the payment is confirmed (source `topup:PACK`); the purchase "
        "with the request's `order_id` confirms it and grants nothing more."))


class AutoTopupSet(Body):
    auto_topup: AutoTopupIn | None = Field(description="The setting; null turns auto top-up off.")


class AutoTopupOut(Out):
    below: Credits
    pack: str
    max_per_month: int
    grant_now: bool


class AutoTopupAnswer(Out):
    auto_topup: AutoTopupOut | None = Field(description="The account's auto top-up; null: none.")
