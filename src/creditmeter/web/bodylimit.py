"""413 for a request body over the limit, whether or not it declares its length.

The answer's shape is the caller's to choose (``too_large``): the API and the gateway each answer
in their own error shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from starlette.responses import Response

from creditmeter.web.metrics import ASGIApp, Message, Receive, Scope, Send

TooLarge = Callable[[str, str], Response]  # (path, message) -> the answer


class BodyLimit:
    """413 for a body over ``limit`` bytes, whether or not it declares its length."""

    def __init__(self, app: ASGIApp, limit: int, too_large: TooLarge) -> None:
        self.app = app
        self.limit = limit
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (a GET): nothing to measure
            return
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        body = bytearray()
        more = True
        messages: list[Message] = []
        while more:
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)
                break
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
            more = message.get("more_body", False)
        replay: AsyncIterator[Message] = _replay(bytes(body), messages, receive)

        async def receive_again() -> Message:
            return await replay.__anext__()

        await self.app(scope, receive_again, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = self.too_large(scope["path"], f"body: is over the limit of {self.limit} bytes")
        await answer(scope, receive, send)


async def _replay(body: bytes, extra: list[Message], receive: Receive) -> AsyncIterator[Message]:
    yield {"type": "http.request", "body": body, "more_body": False}
    for message in extra:
        yield message
    while True:
        yield await receive()
