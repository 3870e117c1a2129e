"""``creditmeter consume``: charge usage events from a durable stream (NATS JetStream or Kafka).

Runs until stopped (SIGTERM or Ctrl-C end it after the batch in hand), or with ``--idle-exit``
once nothing came for that long. Start as many as you like with the same ``--durable``: they share
the work. See docs/stream.md.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import click

from creditmeter.cli.common import command, main, now_us
from creditmeter.cli.output import emit
from creditmeter.engine import Engine
from creditmeter.errors import InputError, Unavailable
from creditmeter.stream.core import Backoff, ConsumeOptions, Source, SourceUnavailable, consume
from creditmeter.stream.metrics import StreamStats, serve_metrics
from creditmeter.stream.subjects import check_durable


@command(main, "consume", as_json=True)
@click.argument("url", metavar="URL")
@click.option("--stream", default="USAGE", show_default=True, help="NATS: the JetStream stream.")
@click.option("--subject", default=None,
              help="NATS: the subjects read (default 'usage.>'); Kafka: the topic (default 'usage').")
@click.option("--durable", required=True, metavar="NAME",
              help="NATS: the durable consumer's name; Kafka: the consumer group. Consumers of the "
                   "same name share the work.")
@click.option("--dead-letter", "dead_letter", default=None, metavar="SUBJECT",
              help="Where rejected events go, with their reason (default 'dead.STREAM'; Kafka: "
                   "'TOPIC.dead'); never one this consumer reads.")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True,
              help="Messages fetched and charged per transaction.")
@click.option("--ack-wait", "ack_wait_s", type=click.FloatRange(1, 3600), default=30.0,
              show_default=True, help="NATS: seconds before an unacknowledged message is delivered again.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics at http://HOST:PORT/metrics.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port.")
@click.option("--progress", "progress_s", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Seconds between progress lines on stderr (0: none).")
@click.option("--connect-attempts", type=click.IntRange(1), default=10, show_default=True,
              help="How often to try the broker at start (0.2 s apart, doubling up to 5 s) before "
                   "giving up (exit 7); once connected, a consumer reconnects for ever.")
@click.option("--idle-exit", "idle_exit_s", type=click.FloatRange(0), default=None,
              help="Stop once no message came for this many seconds.")
def consume_command(engine: Engine, url: str, stream: str, subject: str | None, durable: str,
                    dead_letter: str | None, batch_size: int, ack_wait_s: float,
                    metrics_port: int | None, metrics_host: str, progress_s: float,
                    connect_attempts: int, idle_exit_s: float | None, as_json: bool) -> None:
    """Charge usage events from a NATS JetStream stream or a Kafka topic, exactly once."""
    stats = StreamStats()
    options = ConsumeOptions(batch_size=batch_size, idle_exit_s=idle_exit_s, backoff=Backoff())
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("nats", "tls", "kafka"):
        raise InputError("url", f"{url!r}: use nats://HOST:PORT or kafka://HOST:PORT")
    url = f"{scheme}://{rest}"  # the clients know their schemes in lower case only
    check_durable(durable)
    settings = {"stream": stream, "subject": subject, "durable": durable, "dead_letter": dead_letter,
                "ack_wait_s": ack_wait_s, "connect_attempts": connect_attempts}
    if metrics_port is not None:
        try:
            serve_metrics(stats, metrics_port, metrics_host)
        except OSError as exc:
            raise InputError("metrics-port", f"cannot listen on {metrics_host}:{metrics_port}: "
                             f"{exc.strerror or exc}") from None
    asyncio.run(_run(engine, scheme, url, settings, stats, options, progress_s))
    emit(stats.to_dict(), as_json, lambda _: click.echo(stats.line()))


async def _run(engine: Engine, scheme: str, url: str, settings: dict[str, Any], stats: StreamStats,
               options: ConsumeOptions, progress_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    def notice(line: str) -> None:
        stats.broker_failed(line)
        click.echo(f"consume: {line}", err=True)

    source = await _open(scheme, url, {**settings, "notice": notice}, stop, options.backoff)
    reporter = asyncio.create_task(_report(stats, progress_s, stop)) if progress_s > 0 else None
    try:
        await consume(source, engine, now_us, stats, stop, options)
    finally:
        if reporter is not None:
            reporter.cancel()
        await source.close()  # type: ignore[attr-defined]


async def _open(scheme: str, url: str, settings: dict[str, Any], stop: asyncio.Event,
                backoff: Backoff) -> Source:
    """The source, once the broker answers: tried ``connect_attempts`` times with backoff, each
    try given up when stopped. Raises ``Unavailable`` when the broker never answered, and when
    stopped before it did."""
    attempts = 0
    while True:
        attempt = asyncio.ensure_future(_connect(scheme, url, settings))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({attempt, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not attempt.done():
            attempt.cancel()
            await asyncio.gather(attempt, return_exceptions=True)
            raise Unavailable(f"stopped before the broker at {url} answered")
        try:
            return attempt.result()
        except SourceUnavailable as exc:
            attempts += 1
            if attempts >= settings["connect_attempts"]:
                raise Unavailable(f"{exc} (tried {attempts} times)") from None
            click.echo(f"consume: {exc}; trying again", err=True)
        try:
            await asyncio.wait_for(stop.wait(), backoff.after(attempts))
        except TimeoutError:
            continue
        raise Unavailable(f"stopped before the broker at {url} answered")


async def _connect(scheme: str, url: str, settings: dict[str, Any]) -> Source:
    if scheme == "kafka":
        try:
            from creditmeter.stream.kafka_client import open_kafka
        except ImportError:
            raise InputError("url", "kafka:// needs the Kafka client: pip install "
                             "'creditmeter[kafka]'") from None
        topic = settings["subject"] or "usage"
        return await open_kafka(url.partition("://")[2], topic=topic, group=settings["durable"],
                                dead_letter=settings["dead_letter"] or f"{topic}.dead")
    try:
        from creditmeter.stream.nats import NatsSource
    except ImportError:
        raise InputError("url", "nats:// needs the NATS client: pip install 'creditmeter[stream]'") from None
    return await NatsSource.open(url, stream=settings["stream"], subject=settings["subject"] or "usage.>",
                                 durable=settings["durable"],
                                 dead_letter=settings["dead_letter"] or f"dead.{settings['stream']}",
                                 ack_wait_s=settings["ack_wait_s"], notice=settings["notice"])


async def _report(stats: StreamStats, every_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(every_s)
        print(f"consume: {stats.line()}", file=sys.stderr, flush=True)
