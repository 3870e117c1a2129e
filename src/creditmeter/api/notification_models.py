"""The notifications edge's request and response bodies."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NoReturn

from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator, ConfigDict, Field
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from creditmeter.api.models import Body, Instant, NewId, Out, Whole
from creditmeter.engine.notifications import MAX_MARK
from creditmeter.notices import MAX_SEQ


class NotificationOut(Out):
    id: str = Field(examples=["msg_x3k2m5q7r9t2v4w6y8z2a4c6e8"],
                    description="The alert's id: the same its webhook deliveries carry.")
    seq: int = Field(description="Its place among alerts (later is larger).")
    type: str = Field(examples=["credits.usage_reached"])
    timestamp: Instant
    account_id: str
    data: dict[str, Any] = Field(description="What the alert carries besides its account.")
    read: bool = Field(description="Whether the caller (its reader) marked it read.")
    text: str = Field(examples=["You have used 80% of Professional (monthly) credits for the period "
                                "that ends 2026-12-30"], description="What it says, in plain words.")


class NotificationsOut(Out):
    notifications: list[NotificationOut] = Field(description="Newest first.")
    unread: int = Field(description="How many of the account's notifications the caller has not read.")
    next_before: int | None = Field(description="`before` for the next (older) page; null: the last.")


def _not_null(value: object) -> object:
    if value is None:
        raise PydanticCustomError("not_null", "may be left out, not null")
    return value


NotNull = BeforeValidator(_not_null)
IdList = Annotated[list[NewId], Field(min_length=1, max_length=MAX_MARK)]
Seq = Annotated[int, Field(strict=True, ge=1, le=MAX_SEQ), Whole]
# Either ids, or all (with through or not): never both, never neither.
ONE_OF: JsonDict = {"oneOf": [
    {"required": ["ids"], "not": {"anyOf": [{"required": ["all"]}, {"required": ["through"]}]}},
    {"required": ["all"], "not": {"required": ["ids"]}}]}


class ReadIn(Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra=ONE_OF)

    ids: Annotated[IdList | SkipJsonSchema[None], NotNull] = Field(
        None, description="These notifications (ids the account's notifications carry).")
    all: Annotated[Literal[True] | SkipJsonSchema[None], NotNull] = Field(
        None, description="Every notification the account has so far (with `through`: up to that `seq`).")
    through: Annotated[Seq | SkipJsonSchema[None], NotNull] = Field(
        None, description="With `all`: the `seq` of the newest notification the reader was shown.")

    def choice(self) -> tuple[list[str] | None, int | None]:
        """``(ids, None)`` or ``(None, through)``; a body with neither or both of ids and all, or
        ``through`` without all, is refused (422) naming the field, as a body of the wrong shape."""
        if self.ids is not None and self.all:
            _refuse("all", "send either ids or all: true, not both")
        if self.ids is None and not self.all:
            _refuse("all", "send ids, or all: true")
        if self.through is not None and not self.all:
            _refuse("through", "goes with all: true")
        return (self.ids, None) if self.ids is not None else (None, self.through)


def _refuse(field: str, reason: str) -> NoReturn:
    raise RequestValidationError([{"type": "one_of", "loc": ("body", field), "msg": reason, "input": None}])


class ReadOut(Out):
    marked: int = Field(description="How many were marked read now (not already read).")
    unread: int = Field(description="How many of the account's notifications the caller has not read.")
