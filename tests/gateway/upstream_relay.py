"""A TCP relay in front of the local upstream (``python -m tests.gateway.upstream_relay --port N
--to PORT --idle S --drop close|reset``) that closes kept-alive connections the way a real
upstream's idle timeout can: a connection that carried an answer and then sat idle for ``--idle``
seconds is closed when the next request arrives on it, that request unanswered and never passed
on. It is the race of an upstream (uvicorn after 5 s, a load balancer after its own timeout)
closing an idle connection just as the client sends its next request on it, before the client
saw the close; here it happens every time, whatever the client's event loop is doing.

``--drop close`` closes the connection (the client reads its end before any answer);
``--drop reset`` resets it (the client's read fails: connection reset by peer).

A first request on a connection is passed on, unless ``--sticky`` is given and a request was
dropped before: then every later request is dropped too (an upstream gone away). Each dropped
request is written to stdout as a line ``dropped``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import time

CHUNK = 65_536


class Relay:
    def __init__(self, to_port: int, idle_s: float, drop: str, sticky: bool = False) -> None:
        self.to_port, self.idle_s, self.drop, self.sticky = to_port, idle_s, drop, sticky
        self.dropped = False

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.to_port)
        answered: list[float] = []  # when the upstream last sent bytes on this connection

        async def answers() -> None:
            while data := await up_reader.read(CHUNK):
                client_writer.write(data)
                await client_writer.drain()
                answered[:] = [time.monotonic()]
            client_writer.close()

        relaying = asyncio.create_task(answers())
        try:
            while data := await client_reader.read(CHUNK):
                idle = answered and time.monotonic() - answered[0] >= self.idle_s
                if idle or (self.sticky and self.dropped):
                    self.drop_connection(client_writer)
                    return
                up_writer.write(data)
                await up_writer.drain()
        except ConnectionError:
            pass
        finally:
            relaying.cancel()
            up_writer.close()
            client_writer.close()

    def drop_connection(self, writer: asyncio.StreamWriter) -> None:
        print("dropped", flush=True)
        self.dropped = True
        if self.drop == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()


async def serve(port: int, relay: Relay) -> None:
    server = await asyncio.start_server(relay.handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--to", type=int, required=True, help="the upstream's port")
    parser.add_argument("--idle", type=float, default=0.2, help="seconds idle before a connection is closed")
    parser.add_argument("--drop", choices=["close", "reset"], default="close")
    parser.add_argument("--sticky", action="store_true", help="once one is dropped, drop every request")
    args = parser.parse_args()
    asyncio.run(serve(args.port, Relay(args.to, args.idle, args.drop, args.sticky)))


if __name__ == "__main__":
    main()
