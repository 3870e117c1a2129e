"""What raising alerts asks the store, beyond the books: the accounts time is about to cross a
threshold for (packages expiring soon, subscriptions ending), and how many top-ups an account
requested in a month."""

from __future__ import annotations

import sqlalchemy as sa

from creditmeter.alerts import AlertType
from creditmeter.store.driver import DriverTransaction
from creditmeter.store.schema import accounts, alerts, grants, subscriptions


class AlertQueries(DriverTransaction):
    """Reads for ``engine.alerting``."""

    def expiring_grants(self, after_us: int,
                        until_us: int) -> list[tuple[str, str, str, int, int, str | None]]:
        """(account, grant, name, expiry, credits left, the account's terms) of each package usable
        at ``after_us``, not voided, with credits left, expiring in ``(after_us, until_us]``, of
        which no ``package.expiring`` alert was raised yet."""
        g, a = grants, alerts
        left = g.c.amount_uc - g.c.used_uc - g.c.held_uc - g.c.closed_uc
        raised = (sa.select(a.c.seq).where(a.c.account_id == g.c.account_id,
                                           a.c.type == AlertType.PACKAGE_EXPIRING.value,
                                           a.c.dedupe_key.like(sa.literal("%:") + g.c.id)).exists())
        query = (sa.select(g.c.account_id, g.c.id, g.c.name, g.c.expires_at_us, left, accounts.c.terms)
                 .join(accounts, accounts.c.id == g.c.account_id)
                 .where(g.c.expires_at_us > after_us, g.c.expires_at_us <= until_us,
                        g.c.effective_at_us <= after_us, g.c.voided_at_us.is_(None), left > 0, ~raised)
                 .order_by(g.c.account_id, g.c.id))
        return [(r[0], r[1], r[2], int(r[3]), int(r[4]), r[5]) for r in self.conn.execute(query)]

    def subscriptions_ending(self, after_us: int, until_us: int) -> list[tuple[str, str, str, int]]:
        """(account, subscription, plan, end) of the cancelled subscriptions whose last period
        ends in ``(after_us, until_us]``."""
        query = (sa.select(subscriptions.c.account_id, subscriptions.c.id, subscriptions.c.plan_id,
                           subscriptions.c.cancel_at_us)
                 .where(subscriptions.c.cancel_at_us > after_us, subscriptions.c.cancel_at_us <= until_us)
                 .order_by(subscriptions.c.account_id, subscriptions.c.id))
        return [(r[0], r[1], r[2], int(r[3])) for r in self.conn.execute(query)]

    def topups_between(self, account_id: str, from_us: int, to_us: int) -> int:
        """How many top-ups the account requested in ``[from_us, to_us)`` (by the alerts' time)."""
        query = (sa.select(sa.func.count()).select_from(alerts)
                 .where(alerts.c.account_id == account_id,
                        alerts.c.type == AlertType.TOPUP_REQUESTED.value,
                        alerts.c.at_us >= from_us, alerts.c.at_us < to_us))
        return int(self.conn.execute(query).scalar_one())

    def last_alert_at(self, account_id: str, key_prefix: str) -> int | None:
        """When the account's latest alert whose dedupe key starts with ``key_prefix`` was raised."""
        pattern = key_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = (sa.select(sa.func.max(alerts.c.at_us))
                 .where(alerts.c.account_id == account_id,
                        alerts.c.dedupe_key.like(pattern, escape="\\")))
        found = self.conn.execute(query).scalar_one()
        return None if found is None else int(found)
