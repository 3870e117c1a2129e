"""A real HTTP receiver for webhook tests: a threaded ``http.server`` on a free local port that
checks every request's signature with the ``standardwebhooks`` library (not creditmeter's own
code), records what it got, and answers as the test tells it (fail for a while, be slow).

It also notes when a request arrives for a ``webhook-id`` that is still being answered: the same
delivery sent twice at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    msg_id: str
    payload: dict[str, object]
    headers: dict[str, str]
    at: float
    status: int
    body: bytes = b""


@dataclass
class Receiver:
    """What the receiver got, and how it answers.

    ``secret``: the endpoint's secret (set once the endpoint is made); ``answer``: the status to
    give a request (by default 200), called with the ``webhook-id`` and how many times that id came
    before; ``delay_s``: how long to take over each answer.
    """

    url: str = ""
    secret: str | None = None
    answer: Callable[[str, int], int] = lambda _id, _seen: 200
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, body: bytes, headers: dict[str, str]) -> int:
        msg_id = headers.get("webhook-id", "")
        with self.lock:
            if self.in_flight[msg_id]:
                self.overlaps.append(msg_id)
            self.in_flight[msg_id] += 1
            seen = sum(1 for r in self.received if r.msg_id == msg_id)
        try:
            try:
                assert self.secret is not None, "a request before the endpoint was made"
                Webhook(self.secret).verify(body, headers)
            except (WebhookVerificationError, AssertionError, ValueError) as exc:
                with self.lock:
                    self.unverified.append(f"{msg_id}: {exc}")
                return 400
            if self.delay_s:
                time.sleep(self.delay_s)
            status = self.answer(msg_id, seen)
            with self.lock:
                self.received.append(Received(msg_id, orjson.loads(body), headers, time.time(), status, body))
            return status
        finally:
            with self.lock:
                self.in_flight[msg_id] -= 1

    def delivered(self) -> dict[str, Received]:
        """The first 2xx answer per ``webhook-id``."""
        with self.lock:
            found: dict[str, Received] = {}
            for r in self.received:
                if 200 <= r.status < 300:
                    found.setdefault(r.msg_id, r)
            return found

    def wait_for(self, count: int, timeout_s: float = 30) -> dict[str, Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.delivered()
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{len(self.delivered())} of {count} delivered within {timeout_s} s; "
                             f"{len(self.received)} requests, unverified: {self.unverified[:3]}")


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """A receiver listening on 127.0.0.1 until the block ends."""
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = receiver.handle(body, {k.lower(): v for k, v in self.headers.items()})
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
