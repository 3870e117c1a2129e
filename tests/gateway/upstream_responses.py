"""The local upstream's OpenAI Responses API (``POST /v1/responses``, whole and streamed with the
real event sequence) and embeddings (``POST /v1/embeddings``); errors in OpenAI's shape.

A prompt's tokens: 3, plus the instructions' words, plus 3 and the words of each input item (a
string input is one item). ``fake-cached`` reports half of them (rounded down) as cached;
``fake-reasoning`` a reasoning item and ``upstream_common.reasoning`` tokens inside
``output_tokens``; ``fake-priority`` / ``fake-flex`` that service tier (else ``default``). A reply
the cap cut short ends ``incomplete`` (``response.incomplete`` in a stream).

Embeddings: a string input is its words, a token array its length; each input gets an 8-number
vector, as floats or (``encoding_format: base64``, what the ``openai`` client asks for) as
little-endian float32 bytes in base64.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any

from tests.gateway.upstream_common import ERROR_STATUS, Answer, break_off, reasoning, reply, tier, words

DIMENSIONS = 8
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_error",
               500: "server_error", 503: "server_error"}


def error(status: int, message: str) -> dict[str, Any]:
    code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": None,
                      "code": code}}


async def refuse(model: object, answer: Answer) -> bool:
    """Answers a ``fake-500``-like model's error; True when it did."""
    if model not in ERROR_STATUS:
        return False
    status = 503 if ERROR_STATUS[str(model)] == 529 else ERROR_STATUS[str(model)]
    await answer.json(status, error(status, "context too long" if status == 400 else "boom"))
    return True


def prompt_tokens(body: Mapping[str, Any]) -> int:
    items = body.get("input")
    items = [items] if isinstance(items, str) else items if isinstance(items, list) else []
    return 3 + words(body.get("instructions")) + sum(3 + words(item) for item in items)


def usage_of(body: Mapping[str, Any], output: int, thought: int) -> dict[str, Any]:
    prompt = prompt_tokens(body)
    cached = prompt // 2 if body.get("model") == "fake-cached" else 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output + thought, "output_tokens_details": {"reasoning_tokens": thought},
            "total_tokens": prompt + output + thought}


async def handle_responses(body: dict[str, Any], answer: Answer, record: dict[str, Any]) -> None:
    model = body.get("model")
    if await refuse(model, answer):
        return
    limit = body.get("max_output_tokens")
    thought = reasoning(model, limit)
    text = reply(limit - thought if isinstance(limit, int) else None)
    cut = len(text) < len(reply(None))
    usage = usage_of(body, len(text), thought)
    record["usage"] = usage
    response: dict[str, Any] = {
        "id": "resp_fake", "object": "response", "created_at": 1_700_000_000, "status": "in_progress",
        "model": model, "output": [], "usage": None, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": limit, "parallel_tool_calls": True,
        "tool_choice": "auto", "tools": [], "temperature": 1.0, "top_p": 1.0, "metadata": {},
        "text": {"format": {"type": "text"}}, "truncation": "disabled", "store": False,
        "service_tier": tier(model, "default")}
    items: list[dict[str, Any]] = []
    if thought:
        items.append({"id": "rs_fake", "type": "reasoning", "summary": []})
    part = {"type": "output_text", "text": " ".join(text), "annotations": [], "logprobs": []}
    items.append({"id": "msg_fake", "type": "message", "status": "completed", "role": "assistant",
                  "content": [part]})
    final = {**response, "status": "incomplete" if cut else "completed", "output": items, "usage": usage,
             "incomplete_details": {"reason": "max_output_tokens"} if cut else None}
    if not body.get("stream"):
        await answer.json(200, final)
        return
    await Stream(answer, model).run(response, final, text)


class Stream:
    """A response's events, each with its ``sequence_number``."""

    def __init__(self, answer: Answer, model: object) -> None:
        self.answer, self.model, self.sequence = answer, model, 0

    async def send(self, name: str, **fields: Any) -> None:
        await self.answer.event({"type": name, "sequence_number": self.sequence, **fields}, name)
        self.sequence += 1

    async def run(self, response: dict[str, Any], final: dict[str, Any], text: list[str]) -> None:
        await self.answer.start_stream()
        await self.send("response.created", response=response)
        await self.send("response.in_progress", response=response)
        *before, message = final["output"]
        index = 0
        for item in before:  # a reasoning item
            await self.send("response.output_item.added", output_index=index, item=item)
            await self.send("response.output_item.done", output_index=index, item=item)
            index += 1
        at = {"item_id": message["id"], "output_index": index, "content_index": 0}
        await self.send("response.output_item.added", output_index=index,
                        item={**message, "status": "in_progress", "content": []})
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        await self.send("response.content_part.added", **at, part=empty)
        for i, word in enumerate(text):
            if self.model == "fake-break" and i == 3:
                break_off()
            if self.model == "fake-errorevent" and i == 2:
                await self.send("error", code="server_error", message="overloaded", param=None)
                await self.answer.end()
                return
            await self.send("response.output_text.delta", **at, delta=word if i == 0 else " " + word,
                            logprobs=[])
        part = message["content"][0]
        await self.send("response.output_text.done", **at, text=part["text"], logprobs=[])
        await self.send("response.content_part.done", **at, part=part)
        await self.send("response.output_item.done", output_index=index, item=message)
        done = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        if self.model != "fake-noend":
            await self.send(done, response=final)
        await self.answer.end()


def embedding_inputs(value: object) -> list[object]:
    """Each input of an embeddings request: a string, or an array of tokens."""
    if isinstance(value, str) or (isinstance(value, list) and value and isinstance(value[0], int)):
        return [value]
    return list(value) if isinstance(value, list) else []


async def handle_embeddings(body: dict[str, Any], answer: Answer, record: dict[str, Any]) -> None:
    model = body.get("model")
    if await refuse(model, answer):
        return
    inputs = embedding_inputs(body.get("input"))
    if not inputs:
        await answer.json(400, error(400, "input: must be a string or an array"))
        return
    tokens = sum(words(v) if isinstance(v, str) else len(v) for v in inputs)  # type: ignore[arg-type]
    data = []
    for index, _ in enumerate(inputs):
        vector = [round((index + 1) * 0.125 * (d + 1), 3) for d in range(DIMENSIONS)]
        encoded: object = vector
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{DIMENSIONS}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    record["usage"] = usage
    await answer.json(200, {"object": "list", "data": data, "model": model, "usage": usage})
