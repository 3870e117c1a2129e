"""The ``deliveries`` benchmark: alerts stored in the outbox, delivered by one worker to a local
receiver that checks every signature.

The receiver is a bare ASGI app under uvicorn in a process of its own (so it does not share this
process's interpreter); it answers 204 to a request whose Standard Webhooks signature verifies and
counts the ``webhook-id`` values it accepted. Measured: how long storing the alerts took (one
``insert_alert`` each, in one transaction, as a raiser does), and how fast one worker
(``creditmeter.delivery.Deliverer``, the loop ``serve`` and ``deliver`` run) routes, sends and
records them.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import time
from typing import Any

import httpx

from creditmeter.alerts import Alert, AlertType
from creditmeter.delivery import Deliverer, system_clock_us
from creditmeter.endpoints import DeliveryPolicy, DeliveryStatus
from creditmeter.engine import Engine
from creditmeter.store.sql import SqlStore


def _receiver(port: int, secret: str) -> None:
    """Serve the receiver on ``port`` until killed."""
    import uvicorn
    from standardwebhooks import Webhook

    webhook = Webhook(secret)
    seen: set[str] = set()
    counts = {"requests": 0, "bad": 0}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":  # the tally
            answer = f'{{"unique": {len(seen)}, "requests": {counts["requests"]}, "bad": {counts["bad"]}}}'
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": answer.encode()})
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        counts["requests"] += 1
        try:
            webhook.verify(body, headers)
            seen.add(headers["webhook-id"])
            status = 204
        except Exception:  # noqa: BLE001 - any failure to verify is a bad request
            counts["bad"] += 1
            status = 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tally(url: str) -> dict[str, int]:
    return dict(httpx.get(url, timeout=10).json())


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    engine = Engine(SqlStore(url))
    engine.upgrade_schema()
    port = _free_port()
    receiver_url = f"http://127.0.0.1:{port}/hooks"
    endpoint, secret = engine.add_webhook(receiver_url, system_clock_us())
    receiver = mp.get_context("spawn").Process(target=_receiver, args=(port, secret), daemon=True)
    receiver.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _tally(receiver_url)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        now = system_clock_us()
        started = time.perf_counter()
        with engine.store.transaction(write=True) as tx:
            for n in range(args.alerts):
                tx.insert_alert(Alert(f"acct-{n % 500}", AlertType.USAGE_REACHED, f"usage:80:{n}", now,
                                      {"percent": 80, "period": "2026-11"}), now)
        insert_s = time.perf_counter() - started
        deliverer = Deliverer(engine, DeliveryPolicy(), concurrency=args.concurrency, batch=args.batch)
        started = time.perf_counter()
        report = deliverer.run_once()
        deliver_s = time.perf_counter() - started
        deliverer.close()
        tally = _tally(receiver_url)
    finally:
        receiver.kill()
        receiver.join()
    log = engine.deliveries(endpoint.id, limit=1000)
    delivered = sum(1 for d in log if d.status is DeliveryStatus.DELIVERED)
    engine.close()
    result: dict[str, Any] = {
        "benchmark": "deliveries", "db": "sqlite" if url.startswith("sqlite") else "postgresql",
        "alerts": args.alerts, "concurrency": args.concurrency, "batch": args.batch,
        "insert_alerts_seconds": round(insert_s, 3),
        "insert_alert_us_each": round(insert_s / args.alerts * 1e6, 1),
        "deliver_seconds": round(deliver_s, 3),
        "deliveries_per_s": round(args.alerts / deliver_s),
        "attempts": report.attempts, "delivered": report.delivered,
        "receiver_unique_ids": tally["unique"], "receiver_requests": tally["requests"],
        "receiver_bad_signatures": tally["bad"],
        "newest_page_all_delivered": delivered == len(log),
    }
    result["targets"] = {"every alert delivered once": tally["unique"] == args.alerts == tally["requests"],
                         "every signature verified": tally["bad"] == 0}
    return result
