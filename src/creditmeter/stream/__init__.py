"""Usage from a durable stream: a consumer that charges events published to NATS JetStream (or
Kafka) through the batch path, acknowledging each only after its charge committed.

``core`` is the loop, independent of the broker (a narrow :class:`~creditmeter.stream.core.Source`);
``nats`` and ``kafka`` are the sources; ``producer`` is the producers' helper,
``creditmeter.stream.publish(...)`` (it needs the ``[stream]`` extra, and is imported on first
use); ``metrics`` the consumer's counters, progress line and Prometheus port. See docs/stream.md.
"""

from __future__ import annotations

from typing import Any

from creditmeter.stream.core import ConsumeOptions, Message, Source, SourceUnavailable, consume
from creditmeter.stream.metrics import StreamStats

__all__ = ["ConsumeOptions", "Message", "Source", "SourceUnavailable", "StreamStats", "consume",
           "encode_event", "publish", "publish_many"]


def __getattr__(name: str) -> Any:
    if name in ("encode_event", "publish", "publish_many"):
        from creditmeter.stream import producer as module

        return getattr(module, name)
    raise AttributeError(name)
