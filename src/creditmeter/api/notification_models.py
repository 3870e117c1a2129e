"""The notifications edge's request and response bodies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from creditmeter.api.models import Body, Instant, NewId, Out
from creditmeter.engine.notifications import MAX_MARK


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


class ReadIn(Body):
    ids: Annotated[list[NewId], Field(min_length=1, max_length=MAX_MARK)] | None = Field(
        None, description="These notifications (ids the account's notifications carry).")
    all: Literal[True] | None = Field(None, validate_default=True, description=(
        "Every notification the account has so far (with `through`: up to that `seq`)."))
    through: Annotated[int, Field(strict=True, ge=1)] | None = Field(None, description=(
        "With `all`: the `seq` of the newest notification the reader was shown."))

    @field_validator("all")
    @classmethod
    def _one_of(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        has_ids = info.data.get("ids") is not None
        if has_ids and value:
            raise PydanticCustomError("one_of", "send either ids or all: true, not both")
        if not has_ids and not value and "ids" in info.data:
            raise PydanticCustomError("one_of", "send ids, or all: true")
        return value

    @field_validator("through")
    @classmethod
    def _with_all(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("all") is not True:
            raise PydanticCustomError("with_all", "goes with all: true")
        return value


class ReadOut(Out):
    marked: int = Field(description="How many were marked read now (not already read).")
    unread: int = Field(description="How many of the account's notifications the caller has not read.")
