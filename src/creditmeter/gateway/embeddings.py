"""OpenAI's embeddings (``POST /v1/embeddings``), in front of models whose upstream speaks the
OpenAI API.

What a request may cost: its input only (an embedding writes no tokens): each string's bytes
bound its tokens from above, and an array of tokens is its length. The usage is the answer's
``usage.prompt_tokens``; when it has none, each string is counted at 4 bytes a token. The answer
is passed on whole, with the credits charged in its headers.
"""

from __future__ import annotations

import math

from starlette.responses import Response

from creditmeter.engine import Usage
from creditmeter.gateway.call import APPROX_BYTES_PER_TOKEN, Call
from creditmeter.gateway.errors import bad

MAX_INPUTS = 100_000


def inputs_of(value: object) -> list[str | list[int]]:
    """The request's inputs: a string, a list of strings, an array of tokens, or a list of them."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(type(v) is int for v in value)):
        return [value]
    if not isinstance(value, list) or not value or len(value) > MAX_INPUTS:
        raise bad("input", f"must be a string, an array of tokens, or a list of 1 to {MAX_INPUTS} of them")
    for i, item in enumerate(value):
        if not isinstance(item, str) and not (isinstance(item, list) and all(type(v) is int for v in item)):
            raise bad(f"input[{i}]", "must be a string or an array of tokens")
    return value


def embeddings_usage(reported: object, alias: str) -> Usage | None:
    """The answer's usage as the engine's Usage; None if it is not a usable one."""
    tokens = reported.get("prompt_tokens") if isinstance(reported, dict) else None
    if type(tokens) is not int or tokens < 0:
        return None
    return Usage(alias, tokens, 0)


def _tokens(inputs: list[str | list[int]], bytes_per_token: int) -> int:
    return sum(math.ceil(len(item.encode()) / bytes_per_token) if isinstance(item, str) else len(item)
               for item in inputs)


class Embeddings(Call):
    """One embeddings request through the gateway."""

    path = "/v1/embeddings"
    upstream_path = "/embeddings"

    async def run(self) -> Response:
        body = self.json_body()
        route = self.route_of(body.get("model"))
        inputs = inputs_of(body.get("input"))
        self.route, self.stream = route, False
        await self.reserve(lambda on: (_tokens(inputs, on.prompt_bytes_per_token), 0))
        route = self.route  # the account's fallback model's, when its credits ran out
        content = await self.post({**body, "model": route.upstream_model})
        data = self.answer_of(content)
        if data is None or not isinstance(data.get("data"), list):
            await self.release("an unreadable upstream answer")
            raise self.upstream_failed(None, "its answer was an error or not a list of embeddings")
        usage = embeddings_usage(data.get("usage"), route.alias)
        return await self.answered(content, data, usage,
                                   lambda: Usage(route.alias, _tokens(inputs, APPROX_BYTES_PER_TOKEN)))
