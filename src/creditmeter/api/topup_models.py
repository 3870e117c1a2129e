"""The auto top-up edge's request and response bodies.

The body's shape (types, a count out of range, an unknown field) is checked here: a 422 naming
the field (``auto_topup.max_per_month`` …). What its values mean is the engine's to check
(``creditmeter.alert_rules.parse_auto_topup``, the plan catalog): a 400 naming the field
(``auto_topup.below``), or a 404 for a pack the catalog does not have.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool

from creditmeter.alert_rules import MAX_TOPUPS_A_MONTH
from creditmeter.api.models import Body, Credits, CreditsIn, Id, Out, Whole


class AutoTopupIn(Body):
    below: CreditsIn = Field(examples=["20"], description="A top-up is requested when the available "
                                                          "credits fall from at or above this to below it.")
    pack: Id = Field(examples=["addon-1000"], description="An add-on or resource pack of the plan catalog: "
                                                          "the pack requested.")
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
