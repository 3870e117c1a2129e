"""The local upstream (``tests.gateway.upstream``) with one more behaviour, for the coding agents'
tests: a turn that calls a tool, as a model does before it answers (a real HTTP server:
``python -m tests.agents.upstream_tools --port N``).

An upstream model named ``tool-then-NAME`` first answers with a call of the agent's shell tool
(``Bash`` for Claude Code on Messages, ``exec_command`` for Codex on Responses) running ``ls``,
streamed in the protocol's own events; once the conversation carries the tool's result, the
request goes on to the shared upstream as model ``NAME``. Each tool-call turn is recorded in the
shared upstream's ``/_requests`` like any other request, with the usage it reported: its prompt as
``NAME`` would count it, one output token a piece of the call's arguments.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import unquote

import orjson

from tests.gateway import upstream_anthropic, upstream_responses
from tests.gateway.upstream import RECORDED, Upstream
from tests.gateway.upstream import app as shared
from tests.gateway.upstream_common import Answer, read_body

PREFIX = "tool-then-"
TOOL_PATHS = ("/v1/messages", "/v1/responses")
COMMAND = "ls"
CALL_ID = "call_fake_ls"


def carries_tool_result(path: str, body: dict[str, Any]) -> bool:
    if path == "/v1/messages":
        return any(isinstance(block, dict) and block.get("type") == "tool_result"
                   for message in body.get("messages") or [] if isinstance(message.get("content"), list)
                   for block in message["content"])
    items = body.get("input")
    return isinstance(items, list) and any(isinstance(i, dict) and i.get("type") == "function_call_output"
                                           for i in items)


def argument_pieces(path: str) -> list[str]:
    """The call's arguments (JSON), in the pieces they are streamed in."""
    if path == "/v1/messages":
        return ['{"command": ', f'"{COMMAND}", ', '"description": ', '"List the files"}']
    return ['{"cmd": ', f'"{COMMAND}"}}']


async def anthropic_call(answer: Answer, body: dict[str, Any], record: dict[str, Any]) -> None:
    pieces = argument_pieces("/v1/messages")
    usage = {**upstream_anthropic.input_usage(body), "output_tokens": len(pieces)}
    record["usage"] = usage
    message = {"id": "msg_fake_tool", "type": "message", "role": "assistant", "model": body["model"],
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {k: v for k, v in usage.items() if k != "output_tokens"} | {"output_tokens": 1}}
    await answer.start_stream()
    await answer.event({"type": "message_start", "message": message}, "message_start")
    block = {"type": "tool_use", "id": CALL_ID, "name": "Bash", "input": {}}
    await answer.event({"type": "content_block_start", "index": 0, "content_block": block},
                       "content_block_start")
    await answer.event({"type": "ping"}, "ping")
    for piece in pieces:
        delta = {"type": "input_json_delta", "partial_json": piece}
        await answer.event({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
    await answer.event({"type": "content_block_stop", "index": 0}, "content_block_stop")
    await answer.event({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                        "usage": {"output_tokens": len(pieces)}}, "message_delta")
    await answer.event({"type": "message_stop"}, "message_stop")
    await answer.end()


async def responses_call(answer: Answer, body: dict[str, Any], record: dict[str, Any]) -> None:
    pieces = argument_pieces("/v1/responses")
    usage = upstream_responses.usage_of(body, len(pieces), 0)
    record["usage"] = usage
    response = {"id": "resp_fake_tool", "object": "response", "created_at": 1_700_000_000,
                "status": "in_progress", "model": body["model"], "output": [], "usage": None, "error": None}
    item = {"id": "fc_fake", "type": "function_call", "status": "in_progress", "call_id": CALL_ID,
            "name": "exec_command", "arguments": ""}
    done = {**item, "status": "completed", "arguments": "".join(pieces)}
    stream = upstream_responses.Stream(answer, body["model"])
    await answer.start_stream()
    await stream.send("response.created", response=response)
    await stream.send("response.in_progress", response=response)
    await stream.send("response.output_item.added", output_index=0, item=item)
    for piece in pieces:
        await stream.send("response.function_call_arguments.delta", item_id=item["id"], output_index=0,
                          delta=piece)
    await stream.send("response.function_call_arguments.done", item_id=item["id"], output_index=0,
                      arguments=done["arguments"])
    await stream.send("response.output_item.done", output_index=0, item=done)
    await stream.send("response.completed", response={**response, "status": "completed", "output": [done],
                                                       "usage": usage})
    await answer.end()


class ToolTurns:
    """The shared upstream, answering ``tool-then-*`` models' first turns itself."""

    def __init__(self, inner: Upstream) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in TOOL_PATHS:
            await self.inner(scope, receive, send)
            return
        path = scope["path"]
        body = orjson.loads(await read_body(receive))
        model = body.get("model")
        if isinstance(model, str) and model.startswith(PREFIX):
            body["model"] = model.removeprefix(PREFIX)
            if body.get("stream") and not carries_tool_result(path, body):
                await self.call_tool(scope, path, body, send)
                return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return dict(await receive())
            replayed = True
            return {"type": "http.request", "body": orjson.dumps(body), "more_body": False}

        await self.inner(scope, replay, send)

    async def call_tool(self, scope: dict[str, Any], path: str, body: dict[str, Any], send: Any) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        record: dict[str, Any] = {"path": path, "query": unquote(scope["query_string"].decode()),
                                  "body": body, "usage": None}
        record.update({name: headers.get(header, "") for header, name in RECORDED.items()})
        self.inner.received.append(record)
        answer = Answer(send, body["model"])
        if path == "/v1/messages":
            await anthropic_call(answer, body, record)
        else:
            await responses_call(answer, body, record)


app = ToolTurns(shared)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                server_header=False, date_header=False)


if __name__ == "__main__":
    main()
