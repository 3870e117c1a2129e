"""What the stream tests share: a NATS server of their own, a TCP proxy that can cut PostgreSQL
off, the events they publish, and the checks of what was charged.

The NATS server is started by the tests (``nats-server -js -p PORT -sd DIR``) so that they can kill
and restart it. In CI (``CI=true``) a missing ``nats-server`` fails the run; elsewhere the tests skip.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest

from tests.concurrency.prices import expected_cost_uc

ACCOUNTS = [f"stream-{i}" for i in range(8)]
MODELS = ("small", "odd", "big")
CREDIT = 1_000_000


def nats_server_binary() -> str:
    found = shutil.which("nats-server")
    if found is None:
        reason = "nats-server is not installed (apt-get install nats-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}: CI needs it")
        pytest.skip(reason)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """A JetStream server on a free port, storing in ``directory`` (kept across restarts)."""

    def __init__(self, directory: Path) -> None:
        self.binary = nats_server_binary()
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        with (self.directory / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.directory)],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"nats-server did not start: {self.log()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


class Proxy:
    """A TCP proxy to ``target``, on a port of its own, that can be cut (every connection closed,
    new ones refused) and restored: a database outage for whoever connects through it only."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.up = threading.Event()
        self.up.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if not self.up.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.up.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


def make_events(count: int, seed: int, now_s: float) -> tuple[list[bytes], list[dict[str, Any]],
                                                               list[tuple[bytes, str]]]:
    """``count`` messages: valid events, 10% of them sent twice, and 1% invalid ones.

    Returns (the messages in publishing order, the valid events, the invalid messages each with
    the field its rejection must name).
    """
    rng = random.Random(seed)
    invalid_count = count // 100
    valid_count = (count - invalid_count) * 10 // 11
    valid = []
    for i in range(valid_count):
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s - rng.randrange(60, 6 * 3600)))
        valid.append({"id": f"ev-{seed}-{i:07d}", "account_id": rng.choice(ACCOUNTS), "timestamp": ts,
                      "model": rng.choice(MODELS), "input_tokens": rng.randint(1, 8_000),
                      "output_tokens": rng.randint(0, 3_000)})
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s - 30 * 86400))
    invalid: list[tuple[bytes, str]] = []
    for i in range(invalid_count):
        kind = i % 3
        if kind == 0:
            invalid.append((b'{"id": "broken-' + str(i).encode() + b'", "account_id": ', "message"))
        elif kind == 1:
            invalid.append((orjson.dumps({**valid[i], "id": f"bad-model-{seed}-{i}",
                                          "model": "no-such-model"}), "model"))
        else:
            invalid.append((orjson.dumps({**valid[i], "id": f"too-old-{seed}-{i}", "timestamp": old}),
                            "timestamp"))
    messages = [orjson.dumps(e) for e in valid]
    messages += [orjson.dumps(e) for e in rng.sample(valid, count - invalid_count - valid_count)]
    messages += [m for m, _ in invalid]
    rng.shuffle(messages)
    return messages, valid, invalid


async def publish_raw(url: str, subject: str, messages: Iterable[bytes], stream: str = "USAGE") -> None:
    """Publish messages as they are (no check, no dedupe), the stream made if missing."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(name=stream, subjects=["usage.>"])
    pending = []
    for data in messages:
        pending.append(await js.publish_async(subject, data, wait_stall=30.0))
        if len(pending) >= 2_000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await nc.close()


async def read_dead_letters(url: str, subject: str, stream: str) -> list[dict[str, Any]]:
    """Every message stored for the dead-letter ``subject`` (read without consuming them)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        if msg.subject == subject and msg.data is not None:
            out.append(orjson.loads(msg.data))
    await nc.close()
    return out


def expected_totals(valid: list[dict[str, Any]]) -> dict[str, int]:
    """The cost per account, computed from the price table alone (not by the engine)."""
    totals = dict.fromkeys(ACCOUNTS, 0)
    for event in valid:
        totals[event["account_id"]] += expected_cost_uc(event)
    return totals
