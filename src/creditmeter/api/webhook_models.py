"""Request and response bodies of the webhook routes (``creditmeter.present_webhooks`` builds the
responses; these describe them)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from creditmeter.alerts import AlertType
from creditmeter.api.models import Body, Instant, Out
from creditmeter.endpoints import MAX_URL

EventType = Literal[tuple(t.value for t in AlertType)]  # type: ignore[valid-type]


class WebhookIn(Body):
    url: Annotated[str, Field(min_length=1, max_length=MAX_URL, pattern=r"^(?i:https?)://[^\s/?#]+[^\s]*$",
                              examples=["https://example.com/hooks/credits"],
                              description="Where alerts are POSTed: an http:// or https:// URL.")]
    events: Annotated[list[EventType], Field(min_length=1, max_length=len(AlertType))] | None = Field(  # type: ignore[valid-type]
        None, description="The alert types it receives, at least one; absent or null: every type.")
    description: Annotated[str, Field(max_length=255)] | None = None


class WebhookOut(Out):
    id: str
    url: str
    events: list[str] | None
    description: str
    created_at: Instant
    enabled: bool
    disabled_at: Instant | None
    disabled_reason: str | None
    failures: int = Field(description="The current run of failed attempts (a 2xx ends it).")
    failing_since: Instant | None


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing secret (`whsec_` + base64): shown this once only.")


class WebhooksOut(Out):
    webhooks: list[WebhookOut]


class AttemptOut(Out):
    attempt: int
    at: Instant
    status_code: int | None = Field(description="The endpoint's answer; null: none (timeout, refused…).")
    latency_ms: int | None
    error: str | None


class DeliveryOut(Out):
    id: str
    endpoint_id: str
    webhook_id: str = Field(description="The alert's id, sent as `webhook-id` on every attempt.")
    type: str
    account_id: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: Instant
    next_attempt_at: Instant | None
    retry_until: Instant
    ended_at: Instant | None
    last_status_code: int | None
    last_error: str | None


class DeliveryDetail(DeliveryOut):
    attempt_log: list[AttemptOut]


class DeliveriesOut(Out):
    deliveries: list[DeliveryOut]
    next_before: str | None = Field(description="Pass as `before` for the next (older) page; null: no more.")
