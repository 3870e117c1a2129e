"""A streamed answer relayed to the client event by event (never the whole body): server-sent
events framed as they arrive, the client's leaving noticed, and the charge settled however the
stream ends. A protocol's module says what its events mean (``Relay.event``) and how its stream
ends (``Relay.done``, ``Relay.broke_off``).

A client that leaves mid-stream is charged for what it was sent (or the upstream's own count, if
it came before the client left), no more.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from creditmeter.domain import Charge
from creditmeter.engine import Usage
from creditmeter.gateway.call import Call, Close
from creditmeter.gateway.upstream import UpstreamFailure

log = logging.getLogger("creditmeter.gateway")


class Relay(Response):
    """Passes an upstream's event stream to the client as it comes, and settles its charge once:
    when the stream is done, broke off, or the client left."""

    MAX_EVENT = 1 << 20  # an upstream that never ends an event is broken off here

    def __init__(self, call: Call, source: AsyncIterator[bytes], close: Close) -> None:
        super().__init__(None, 200, {"x-request-id": call.id, "cache-control": "no-cache",
                                     **call.fallback_header()}, media_type="text/event-stream")
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.call = call
        self.source = source
        self.close = close
        self.seen: Usage | None = None  # the latest usage the upstream reported
        self.pieces = 0  # the output the client was sent, in tokens as the protocol counts them
        self.settled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        finish = "client_disconnected"
        try:
            async with anyio.create_task_group() as tasks:
                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tasks.cancel_scope.cancel()

                tasks.start_soon(watch)
                finish = await self._pump(send)
                tasks.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.close(finish == "complete")
                if not self.settled:
                    await self._settle(finish)
        if finish != "client_disconnected":
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, send: Send) -> str:
        buffer = b""
        try:
            async for data in self.source:
                # One line ending for all (an upstream may use \r\n, or mix them); a \r at the
                # end of a read waits for the \n that may follow in the next.
                buffer = (buffer + data).replace(b"\r\n", b"\n")
                if buffer.endswith(b"\r"):
                    head, buffer = buffer[:-1].replace(b"\r", b"\n"), b"\r"
                else:
                    head, buffer = buffer.replace(b"\r", b"\n"), b""
                *events, rest = head.split(b"\n\n")
                buffer = rest + buffer
                for event in events:
                    if await self.event(event, send):
                        return "complete"
                if len(buffer) > self.MAX_EVENT:
                    raise ValueError("an event longer than 1 MiB")
        except (*UpstreamFailure, ValueError, TypeError, KeyError) as exc:
            log.warning("request %s: the upstream stream broke off (%r)", self.call.id, exc)
            await self.broke_off(send)
            return "upstream_broke_off"
        if buffer.strip() and await self.event(buffer.rstrip(b"\r\n"), send):
            return "complete"
        await self.done(send)  # the upstream ended without its own end
        return "complete"

    async def event(self, event: bytes, send: Send) -> bool:
        """Relay one server-sent event (its lines, without the blank line that ends it); True once
        the stream is done. Raises ValueError, TypeError or KeyError when the upstream failed."""
        raise NotImplementedError

    async def done(self, send: Send) -> None:
        """The stream is complete: settle, and send the client its end."""
        raise NotImplementedError

    async def broke_off(self, send: Send) -> None:
        """The upstream's stream broke off: settle what was sent, and tell the client."""
        raise NotImplementedError

    def usage(self, finish: str) -> Usage:
        """What to charge when the stream ends with ``finish``."""
        raise NotImplementedError

    async def _settle(self, finish: str) -> tuple[Charge, int] | None:
        usage = self.usage(finish)
        source = "upstream" if usage is self.seen else "counted"
        # Shielded: a client that leaves now must not cancel the charge half-way (the engine
        # call may run on a thread), and the flag is set only once it went through.
        with anyio.CancelScope(shield=True):
            settled = await self.call.settle(usage, source, finish)
        self.settled = True
        return settled

    @staticmethod
    async def _send(send: Send, body: bytes) -> None:
        await send({"type": "http.response.body", "body": body, "more_body": True})


def sse(data: Any, name: str | None = None) -> bytes:
    """``data`` as one server-sent event (named ``name``, if given)."""
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def parse_event(event: bytes) -> tuple[str | None, bytes]:
    """A server-sent event's name (its ``event:`` line, if any) and its data (its ``data:`` lines)."""
    name = None
    data = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode(errors="replace")
    return name, b"".join(data)
