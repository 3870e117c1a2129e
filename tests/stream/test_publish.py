"""The producers' helper, the subject rules, and the consumer's refusals.

``publish`` checks an event before sending it (a bad one names its field, and nothing is sent),
stamps its time, and lets JetStream drop a republish of the same id; what it published is charged
by a consumer in this process. The consumer refuses a dead-letter subject it would read itself.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest
from click.testing import CliRunner

from creditmeter.cli import main
from creditmeter.errors import InputError
from creditmeter.stream import encode_event, publish, publish_many
from creditmeter.stream.core import ConsumeOptions, consume
from creditmeter.stream.metrics import StreamStats
from creditmeter.stream.nats import NatsSource
from creditmeter.stream.subjects import check_dead_letter, subject_matches
from tests.stream.conftest import Ledger
from tests.stream.harness import NatsServer

EVENT = {"id": "pub-1", "account_id": "stream-0", "model": "small", "input_tokens": 1_000,
         "output_tokens": 10}


@pytest.mark.parametrize(("pattern", "subject", "matches"), [
    ("usage.>", "usage.dead", True), ("usage.>", "usage", False), ("usage.*", "usage.a.b", False),
    ("usage.*.x", "usage.a.x", True), ("usage.events", "usage.events", True),
    ("usage.events", "dead.usage", False), (">", "anything.at.all", True),
])
def test_subject_matching(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


@pytest.mark.parametrize(("reads", "dead", "field"), [
    ("usage.>", "usage.dead", "dead-letter"), ("usage.*", "usage.dead", "dead-letter"),
    ("usage.>", "dead.*", "dead-letter"), ("usage.>", "dead..x", "dead-letter"),
    ("usage.>.x", "dead", "subject"),
])
def test_refused_dead_letter_subjects(reads: str, dead: str, field: str) -> None:
    with pytest.raises(InputError) as caught:
        check_dead_letter(reads, dead)
    assert caught.value.field == field


def test_the_command_refuses_its_own_subject_as_dead_letter(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["consume", "nats://127.0.0.1:1", "--durable", "d",
                                       "--subject", "usage.>", "--dead-letter", "usage.dead",
                                       "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 2
    assert "error: dead-letter: 'usage.dead' is read by this consumer" in result.output


def test_the_command_names_a_wrong_url(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["consume", "http://x", "--durable", "d",
                                       "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 2 and "error: url:" in result.output


def test_encode_event_checks_and_stamps() -> None:
    with pytest.raises(InputError) as caught:
        encode_event({**EVENT, "input_tokens": -1})
    assert caught.value.field == "input_tokens"
    assert b'"timestamp":"1970-01-01T00:00:01Z"' in encode_event(EVENT, now_us=1_000_000)


def test_published_events_are_charged(nats_server: NatsServer, ledger: Ledger) -> None:
    async def scenario() -> tuple[int, int, StreamStats, int]:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.add_stream(name="USAGE", subjects=["usage.>"])
        with pytest.raises(InputError):
            await publish(js, {**EVENT, "model": ""})
        first = await publish(js, EVENT)
        again = await publish(js, EVENT)  # dropped by JetStream: the same Nats-Msg-Id
        await publish_many(js, [{**EVENT, "id": f"pub-many-{i}"} for i in range(50)], window=7)
        stored = (await js.stream_info("USAGE")).state.messages
        await nc.close()
        source = await NatsSource.open(nats_server.url, stream="USAGE", subject="usage.>",
                                       durable="charger", dead_letter="dead.usage")
        stats = StreamStats()
        await consume(source, ledger.engine, lambda: time.time_ns() // 1000, stats, asyncio.Event(),
                      ConsumeOptions(fetch_timeout_s=0.2, idle_exit_s=0.5))
        await source.close()
        return first, again, stats, stored

    first, again, stats, stored = asyncio.run(scenario())
    assert first == again == 1 and stored == 51
    assert (stats.charged, stats.duplicate, stats.dead_lettered) == (51, 0, 0)
    assert stats.lag == 0
    assert len(ledger.charged()) == 51
