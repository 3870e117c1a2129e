"""``creditmeter webhooks``: endpoints that receive alerts, and their delivery log; and
``creditmeter deliver``: the delivery worker, for cron (``--once``) or as a process of its own.
The command line acts as the operator."""

from __future__ import annotations

import threading
from typing import Any

import click

from creditmeter import present_webhooks as present
from creditmeter.cli.common import command, main
from creditmeter.cli.output import emit
from creditmeter.cli.tables import Column, show_table
from creditmeter.delivery import Deliverer
from creditmeter.engine import Engine
from creditmeter.errors import InputError
from creditmeter.serverconfig import WebhooksSection

DEFAULTS = WebhooksSection()  # the server's defaults: the worker's options start from them


@main.group()
def webhooks() -> None:
    """Webhook endpoints that receive alerts, signed; their deliveries and attempts."""


@command(webhooks, "add", at=True, as_json=True)
@click.argument("url", metavar="URL")
@click.option("--event", "events", multiple=True, metavar="TYPE",
              help="An alert type it receives (repeat for several; none: every type).")
@click.option("--description", metavar="TEXT", help="A note for people.")
def webhooks_add(engine: Engine, url: str, events: tuple[str, ...], description: str | None, at_us: int,
                 as_json: bool) -> None:
    """Add an endpoint at URL; prints its signing secret, which is shown this once only."""
    endpoint, secret = engine.add_webhook(url, at_us, events=list(events) or None, description=description)
    emit({**present.endpoint(endpoint), "secret": secret}, as_json, lambda data: click.echo(
        f"webhook {data['id']} → {data['url']}\nsecret {secret}  (shown once: keep it to verify signatures)"))


@command(webhooks, "list", as_json=True)
def webhooks_list(engine: Engine, as_json: bool) -> None:
    """Every endpoint, enabled or not (never its secret)."""
    rows = [present.endpoint(e) for e in engine.webhooks()]
    emit(rows, as_json, lambda _: show_table("Webhooks", (
        Column("id"), Column("url"), Column("events", whole=False, drop=2), Column("enabled"),
        Column("failures", right=True, drop=1), Column("disabled", drop=3)),
        [[r["id"], r["url"], ", ".join(r["events"]) if r["events"] else "every type",
          "yes" if r["enabled"] else "no", r["failures"], r["disabled_reason"]] for r in rows]))


@command(webhooks, "remove")
@click.argument("endpoint_id", metavar="ENDPOINT")
def webhooks_remove(engine: Engine, endpoint_id: str) -> None:
    """Remove an endpoint, with its deliveries and their log."""
    engine.remove_webhook(endpoint_id)
    click.echo(f"webhook {endpoint_id} removed")


@command(webhooks, "enable", at=True, as_json=True)
@click.argument("endpoint_id", metavar="ENDPOINT")
def webhooks_enable(engine: Engine, endpoint_id: str, at_us: int, as_json: bool) -> None:
    """Enable an endpoint its failures disabled; what it had pending is due at once."""
    endpoint = engine.enable_webhook(endpoint_id, at_us)
    emit(present.endpoint(endpoint), as_json, lambda data: click.echo(f"webhook {data['id']} enabled"))


@command(webhooks, "deliveries", as_json=True)
@click.argument("endpoint_id", metavar="[ENDPOINT]", required=False)
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many (per endpoint).")
@click.option("--before", metavar="DELIVERY", help="Only those made before this delivery (the next page).")
def webhooks_deliveries(engine: Engine, endpoint_id: str | None, limit: int, before: str | None,
                        as_json: bool) -> None:
    """The deliveries of ENDPOINT (else of every endpoint), newest first."""
    if endpoint_id is None and before is not None:
        raise InputError("before", "pages on within one endpoint: name the ENDPOINT too")
    endpoints = [endpoint_id] if endpoint_id is not None else [e.id for e in engine.webhooks()]
    rows = [present.delivery(d) for e in endpoints for d in engine.deliveries(e, limit, before)]
    emit(rows, as_json, lambda _: _deliveries_table(rows))


def _deliveries_table(rows: list[dict[str, Any]]) -> None:
    show_table("Deliveries", (
        Column("id"), Column("endpoint", drop=3), Column("type"), Column("account", drop=2), Column("status"),
        Column("attempts", right=True), Column("last", whole=False, drop=1), Column("next", drop=4)),
        [[r["id"], r["endpoint_id"], r["type"], r["account_id"], r["status"], r["attempts"],
          r["last_error"] or r["last_status_code"], r["next_attempt_at"]] for r in rows])


@command(webhooks, "attempts", as_json=True)
@click.argument("delivery_id", metavar="DELIVERY")
def webhooks_attempts(engine: Engine, delivery_id: str, as_json: bool) -> None:
    """A delivery and the log of its attempts."""
    data = present.delivery_with_attempts(*engine.delivery(delivery_id))
    emit(data, as_json, lambda _: show_table(
        f"{delivery_id}: {data['type']} ({data['webhook_id']}), {data['status']}",
        (Column("attempt", right=True), Column("at"), Column("status", right=True),
         Column("latency ms", right=True), Column("error", whole=False)),
        [[a["attempt"], a["at"], a["status_code"], a["latency_ms"], a["error"]]
         for a in data["attempt_log"]]))


@command(webhooks, "replay", at=True, as_json=True)
@click.argument("delivery_id", metavar="DELIVERY")
@click.option("--horizon", "horizon_s", type=float, default=DEFAULTS.horizon_s, show_default=True,
              help="Retry it for this many seconds.")
def webhooks_replay(engine: Engine, delivery_id: str, horizon_s: float, at_us: int, as_json: bool) -> None:
    """Send a delivery again, with the same webhook-id (a running worker sends it)."""
    replayed = engine.replay_delivery(delivery_id, at_us, horizon_s)
    emit(present.delivery(replayed), as_json, lambda data: click.echo(
        f"delivery {data['id']} ({data['webhook_id']}) will be sent again"))


@command(main, "deliver", as_json=True)
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit (for cron).")
@click.option("--interval", "interval_s", type=click.FloatRange(min=0.01), default=DEFAULTS.interval_s,
              show_default=True, help="Seconds between looks for due deliveries when idle.")
@click.option("--timeout", "timeout_s", type=float, default=DEFAULTS.timeout_s, show_default=True,
              help="The longest a request to an endpoint may take, all of it, in seconds.")
@click.option("--horizon", "horizon_s", type=float, default=DEFAULTS.horizon_s, show_default=True,
              help="Retry a delivery for this many seconds after it was made, then fail it.")
@click.option("--backoff-base", "backoff_base_s", type=float, default=DEFAULTS.backoff_base_s,
              show_default=True, help="The first retry's ceiling in seconds (doubling, full jitter).")
@click.option("--backoff-cap", "backoff_cap_s", type=float, default=DEFAULTS.backoff_cap_s,
              show_default=True, help="The most a retry's ceiling grows to, in seconds.")
@click.option("--lease", "lease_s", type=float, default=DEFAULTS.lease_s, show_default=True,
              help="How long a delivery taken is this worker's (longer than --timeout).")
@click.option("--disable-after-failures", type=int, default=DEFAULTS.disable_after_failures,
              show_default=True, help="Disable an endpoint after this many failed attempts in a row …")
@click.option("--disable-after", "disable_after_s", type=float, default=DEFAULTS.disable_after_s,
              show_default=True, help="… once they went on for this many seconds.")
@click.option("--concurrency", type=int, default=DEFAULTS.concurrency, show_default=True,
              help="Requests in flight at once.")
@click.option("--batch", type=int, default=DEFAULTS.batch, show_default=True,
              help="Deliveries taken at a time.")
def deliver(engine: Engine, once: bool, interval_s: float, concurrency: int, batch: int, as_json: bool,
            **policy: Any) -> None:
    """Deliver stored alerts to the webhook endpoints, signed, retrying failures; runs until
    stopped (any number of these may run at once), or with --once until nothing is due."""
    settings = _settings(interval_s=interval_s, concurrency=concurrency, batch=batch, **policy)
    deliverer = Deliverer(engine, settings.policy(), concurrency=concurrency, batch=batch)
    try:
        if once:
            report = deliverer.run_once()
            emit(report.to_dict(), as_json, lambda data: click.echo(
                f"{data['attempts']} sent: {data['delivered']} delivered, {data['retrying']} to retry, "
                f"{data['failed']} failed"
                + (f"; disabled {', '.join(report.disabled)}" if report.disabled else "")))
            return
        stop = threading.Event()
        try:
            deliverer.run_forever(interval_s, stop)
        except KeyboardInterrupt:
            stop.set()
    finally:
        deliverer.close()


def _settings(**values: Any) -> WebhooksSection:
    """The options checked as the server's ``webhooks:`` settings are (a bad one names itself)."""
    from pydantic import ValidationError

    try:
        return WebhooksSection(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "lease_s"  # the one rule across options
        raise InputError(field, first["msg"].removeprefix("Value error, ")) from None
