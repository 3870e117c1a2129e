"""``creditmeter webhooks`` and ``creditmeter deliver --once`` through click's runner, on both
stores, delivering to a real local receiver."""

from __future__ import annotations

import json

from click.testing import CliRunner, Result

from creditmeter.alerts import Alert, AlertType, alert_id
from creditmeter.cli import main
from creditmeter.delivery import system_clock_us
from tests.conftest import EngineFactory
from tests.webhooks.receiver import running_receiver


def run(db: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--db", db])


def test_the_webhook_commands(make_engine: EngineFactory) -> None:
    engine = make_engine()
    db = engine.store.url
    bad = run(db, "webhooks", "add", "ftp://example.com/h")
    assert bad.exit_code == 2 and "url:" in bad.output
    bad = run(db, "webhooks", "add", "https://example.com/h", "--event", "credits.depleted",
              "--event", "nope")
    assert bad.exit_code == 2 and "events[1]: unknown event type 'nope'" in bad.output
    assert json.loads(run(db, "webhooks", "list", "--json").output) == []
    bad = run(db, "deliver", "--once", "--timeout", "30", "--lease", "20")
    assert bad.exit_code == 2 and "lease_s" in bad.output, bad.output

    with running_receiver() as receiver:
        added = run(db, "webhooks", "add", receiver.url, "--event", "credits.depleted", "--json")
        assert added.exit_code == 0, added.output
        endpoint = json.loads(added.output)
        receiver.secret = endpoint["secret"]
        shown = run(db, "webhooks", "add", receiver.url, "--description", "second")
        assert "secret whsec_" in shown.output and "shown once" in shown.output
        second = run(db, "webhooks", "list", "--json")
        other = [w["id"] for w in json.loads(second.output) if w["id"] != endpoint["id"]]
        assert run(db, "webhooks", "remove", other[0]).exit_code == 0

        now = system_clock_us()
        with engine.store.transaction(write=True) as tx:
            tx.insert_alert(Alert("bob", AlertType.DEPLETED, "depleted:x", now), now)
        done = run(db, "deliver", "--once", "--json", "--backoff-base", "0.05")
        assert done.exit_code == 0, done.output
        assert json.loads(done.output) | {"disabled": []} == {
            "routed": 1, "attempts": 1, "delivered": 1, "retrying": 0, "failed": 0, "disabled": []}
        assert list(receiver.delivered()) == [alert_id("bob", "depleted:x")]

        [delivery] = json.loads(run(db, "webhooks", "deliveries", "--json").output)
        assert delivery["status"] == "delivered" and delivery["endpoint_id"] == endpoint["id"]
        table = run(db, "webhooks", "deliveries", endpoint["id"])
        assert delivery["id"] in table.output and "delivered" in table.output
        log = json.loads(run(db, "webhooks", "attempts", delivery["id"], "--json").output)
        assert [(a["attempt"], a["status_code"]) for a in log["attempt_log"]] == [(1, 200)]
        assert "200" in run(db, "webhooks", "attempts", delivery["id"]).output
        replay = run(db, "webhooks", "replay", delivery["id"])
        assert replay.exit_code == 0 and "sent again" in replay.output
        assert "1 sent: 1 delivered" in run(db, "deliver", "--once").output
        assert [r.msg_id for r in receiver.received] == [delivery["webhook_id"]] * 2

    listed = run(db, "webhooks", "list")
    assert endpoint["id"] in listed.output and receiver.url in listed.output
    assert json.loads(run(db, "webhooks", "enable", endpoint["id"], "--json").output)["enabled"] is True
    assert run(db, "webhooks", "remove", endpoint["id"]).exit_code == 0
    gone = run(db, "webhooks", "attempts", delivery["id"])
    assert gone.exit_code == 3 and "delivery_id: unknown delivery" in gone.output
    assert run(db, "webhooks", "deliveries", "--before", "dlv_x").exit_code == 2
