"""A local model API server for the gateway's tests and benchmark (a real HTTP server:
``python -m tests.gateway.upstream --port N``), speaking OpenAI chat completions (here), OpenAI
Responses and embeddings (``upstream_responses``) and Anthropic Messages (``upstream_anthropic``),
each on its own path. Its token count, its reply and the behaviours picked by the upstream model
name are common to all of them (``upstream_common``).

Chat completions: a prompt is one token per word of each message's text, plus 3 a message and 3 for
the reply; the reply is ``REPLY_WORDS`` words (fewer if ``max_tokens`` says so), one token each,
streamed one word a chunk. Besides the common behaviours:

- ``fake-cached``: reports half the prompt (rounded down) as cached.
- ``fake-reasoning``: reports reasoning tokens (``completion_tokens_details``), inside
  ``completion_tokens``.
- ``fake-nousage``: never reports usage.
- ``fake-break``: streams 3 chunks, then drops the connection.
- ``fake-errorbody``: answers 200 with an error body (as some providers do under load); its
  stream sends an error event after 2 chunks.
- ``fake-crlf``: streams with ``\r\n`` line endings, mixed with ``\n`` ones, in odd-sized pieces.
- ``fake-inline-usage``: reports usage on the finish chunk, beside its choices.

Started with ``--stream-seconds S``, every chat completions stream sends its first event at once and
spreads the rest evenly over ``S`` seconds (a model's pace, for load with many streams open at once).

``GET /_requests`` answers what it received, newest last: each request's ``path``, ``query``,
``body``, the ``authorization``, ``x_api_key``, ``anthropic_version`` and ``anthropic_beta``
headers, and the ``usage`` it reported (its final count, for a stream); ``POST /_reset`` forgets
them.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from urllib.parse import unquote

import orjson

from tests.gateway import upstream_anthropic, upstream_responses
from tests.gateway.upstream_common import REPLY_WORDS, WORDS, Answer, read_body, reasoning, tier

__all__ = ["REPLY_WORDS", "Upstream", "app", "prompt_tokens"]
RECORDED = {"authorization": "authorization", "x-api-key": "x_api_key",
            "anthropic-version": "anthropic_version", "anthropic-beta": "anthropic_beta"}


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return 3 + sum(3 + len(str(m.get("content") or "").split()) for m in messages)


def reply(body: dict[str, Any]) -> list[str]:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    count = min(REPLY_WORDS, int(limit) - thought(body)) if limit else REPLY_WORDS
    return [WORDS[i % len(WORDS)] for i in range(count)]


def thought(body: dict[str, Any]) -> int:
    return reasoning(body.get("model"), body.get("max_completion_tokens") or body.get("max_tokens"))


def usage(body: dict[str, Any], completion: int) -> dict[str, Any]:
    prompt = prompt_tokens(body["messages"])
    reasoned = thought(body)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion + reasoned,
                           "total_tokens": prompt + completion + reasoned}
    if body.get("model") == "fake-cached":
        out["prompt_tokens_details"] = {"cached_tokens": prompt // 2}
    if reasoned:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoned}
    return out


class Upstream:
    def __init__(self, stream_seconds: float = 0.0) -> None:
        self.received: list[dict[str, Any]] = []
        self.stream_seconds = stream_seconds

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/_requests":
            await Answer(send, None).json(200, self.received)
            return
        if path == "/_reset":
            self.received.clear()
            await Answer(send, None).json(200, {"ok": True})
            return
        raw = await read_body(receive)
        handlers = {"/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/messages",
                    "/v1/messages/count_tokens"}
        if path not in handlers:
            await Answer(send, None).json(404, {"error": {"message": "not found",
                                                          "type": "invalid_request_error"}})
            return
        body = orjson.loads(raw)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        record: dict[str, Any] = {"path": path, "query": unquote(scope["query_string"].decode()),
                                  "body": body, "usage": None}
        record.update({name: headers.get(header, "") for header, name in RECORDED.items()})
        self.received.append(record)
        if len(self.received) > 10_000:
            del self.received[:5_000]
        answer = Answer(send, body.get("model"))
        if path.startswith("/v1/messages"):
            await upstream_anthropic.handle(path, body, headers, answer, record)
        elif path == "/v1/responses":
            await upstream_responses.handle_responses(body, answer, record)
        elif path == "/v1/embeddings":
            await upstream_responses.handle_embeddings(body, answer, record)
        else:
            await self.chat(body, send, record)

    async def chat(self, body: dict[str, Any], send: Any, record: dict[str, Any]) -> None:
        model = body.get("model")
        if model == "fake-500":
            await self.json(send, 500, {"error": {"message": "boom", "type": "server_error"}})
            return
        if model == "fake-400":
            await self.json(send, 400, {"error": {"message": "context too long", "type":
                                                  "invalid_request_error"}})
            return
        if model == "fake-429":
            await self.json(send, 429, {"error": {"message": "slow down", "type": "rate_limit_error"}})
            return
        if model == "fake-hang":
            await asyncio.sleep(30)
        if model == "fake-errorbody" and not body.get("stream"):
            await self.json(send, 200, {"error": {"message": "overloaded", "type": "server_error"}})
            return
        words = reply(body)
        base = {"id": "chatcmpl-fake", "created": 1_700_000_000, "model": model}
        if tier(model, None):
            base["service_tier"] = tier(model, None)
        if not body.get("stream"):
            answer = {**base, "object": "chat.completion",
                      "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": " ".join(words)}}]}
            if model != "fake-nousage":
                answer["usage"] = record["usage"] = usage(body, len(words))
            await self.json(send, 200, answer)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        base["object"] = "chat.completion.chunk"
        events = []
        for i, word in enumerate(words):
            if model == "fake-break" and i == 3:
                await self.send_events(send, model, events)
                raise RuntimeError("the connection breaks off here")
            if model == "fake-errorbody" and i == 2:
                events.append({"error": {"message": "overloaded", "type": "server_error"}})
                break
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
            events.append({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        else:
            finish: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            options = body.get("stream_options") or {}
            if model == "fake-inline-usage":
                finish["usage"] = record["usage"] = usage(body, len(words))
            events.append(finish)
            if options.get("include_usage") and model not in ("fake-nousage", "fake-inline-usage"):
                record["usage"] = usage(body, len(words))
                events.append({**base, "choices": [], "usage": record["usage"]})
        await self.send_events(send, model, events)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def send_events(self, send: Any, model: str, events: list[Any]) -> None:
        if model == "fake-crlf":  # \r\n and \n endings mixed, cut into 7-byte pieces
            text = b"".join(b"data: " + orjson.dumps(e) + (b"\r\n\r\n" if i % 2 else b"\n\n")
                            for i, e in enumerate(events))
            for start in range(0, len(text), 7):
                await send({"type": "http.response.body", "body": text[start:start + 7], "more_body": True})
            return
        pause = self.stream_seconds / (len(events) - 1) if self.stream_seconds and len(events) > 1 else 0.0
        for i, data in enumerate(events):
            if model == "fake-slow":
                await asyncio.sleep(0.05)
            elif pause and i:
                await asyncio.sleep(pause)
            await self.event(send, data)

    @staticmethod
    async def event(send: Any, data: Any) -> None:
        await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(data) + b"\n\n",
                    "more_body": True})

    @staticmethod
    async def json(send: Any, status: int, data: Any) -> None:
        body = orjson.dumps(data)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


app = Upstream()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stream-seconds", type=float, default=0.0,
                        help="spread each chat completions stream over this many seconds")
    args = parser.parse_args()
    app.stream_seconds = args.stream_seconds
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                server_header=False, date_header=False)


if __name__ == "__main__":
    main()
