"""The built-in ``demo`` upstream: an offline stand-in for a model API, for the demo and for trying
creditmeter without an upstream key.

It is not a model: it answers every chat request with generated filler text, labelled as demo
output, and reports true usage counts for what it "read" and wrote, by its own simple count: one
token per word of each message, plus 3 per message and 3 for the reply (OpenAI's framing), and one
token per word it writes. Streams send one word per chunk, then a usage chunk, then ``[DONE]``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson

OWNER = "creditmeter-demo"
FINGERPRINT = "creditmeter-demo-upstream"
_WORDS = ("credits", "burn", "down", "trial", "first", "then", "whatever", "expires", "soonest",
          "every", "request", "is", "metered", "exactly", "once", "holds", "keep", "parallel",
          "requests", "from", "overspending", "packages", "add-on", "monthly", "allowance", "usage",
          "ledger", "settles", "the", "actual", "tokens", "and", "releases", "rest")
PREFIX = "[demo upstream, not a model]"


def prompt_tokens(messages: object) -> int:
    """The demo's count of a prompt: words of each message's text, +3 a message, +3 for the reply."""
    total = 3
    for message in messages if isinstance(messages, list) else ():
        total += 3
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    total += len(part["text"].split())
    return total


def reply_words(body: Mapping[str, Any]) -> list[str]:
    """Filler words (the prefix first), as many as the request's max tokens allow (at most 64)."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or 64
    limit = max(1, min(int(limit), 64))
    seed = hashlib.blake2b(orjson.dumps(body.get("messages")), digest_size=8).digest()
    count = min(limit, 12 + seed[0] % 40)
    words = PREFIX.split() + [_WORDS[(seed[i % 8] + i * 7) % len(_WORDS)] for i in range(count)]
    return words[:count]


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def complete(body: Mapping[str, Any]) -> bytes:
    """A whole (non-streamed) chat completion for ``body``."""
    words = reply_words(body)
    return orjson.dumps({
        "id": f"chatcmpl-demo-{int(time.time() * 1000)}", "object": "chat.completion",
        "created": int(time.time()), "model": body.get("model"), "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": " ".join(words)}}],
        "usage": _usage(prompt_tokens(body.get("messages")), len(words))})


async def stream(body: Mapping[str, Any]) -> AsyncGenerator[bytes, None]:
    """A streamed chat completion for ``body``, as server-sent events."""
    words = reply_words(body)
    base = {"id": f"chatcmpl-demo-{int(time.time() * 1000)}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body.get("model"), "system_fingerprint": FINGERPRINT}
    for i, word in enumerate(words):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
        yield b"data: " + orjson.dumps({**base, "choices": [{"index": 0, "delta": delta,
                                                              "finish_reason": None}]}) + b"\n\n"
    yield b"data: " + orjson.dumps({**base, "choices": [{"index": 0, "delta": {},
                                                          "finish_reason": "stop"}]}) + b"\n\n"
    options = body.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage"):
        yield b"data: " + orjson.dumps({**base, "choices": [],
                                        "usage": _usage(prompt_tokens(body.get("messages")),
                                                        len(words))}) + b"\n\n"
    yield b"data: [DONE]\n\n"
