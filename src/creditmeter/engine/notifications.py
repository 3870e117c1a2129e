"""Notices: an account's alerts as one reader sees them, and the reader's read marks.

Reading writes nothing; marking read writes only the reader's marks (never an account's book), so
it neither waits on nor holds up charging. Alerts themselves are raised by the commands that cross
them (``Transaction.insert_alert``).
"""

from __future__ import annotations

from collections.abc import Sequence

from creditmeter.engine._unit import EngineBase, _check_instant
from creditmeter.errors import InputError, NotFound
from creditmeter.ids import check_id, check_text
from creditmeter.notices import MAX_PAGE, MAX_SEQ, Notice, NoticePage, notice_text
from creditmeter.store.base import Transaction

MAX_READER = 300  # a reader is an account id (up to 255) or a key id, with its kind's prefix

MAX_MARK = 1_000  # ids marked read in one call


class NoticeCommands(EngineBase):
    """Read an account's notices and mark them read, per reader."""

    def notifications(self, account_id: str, reader: str, at_us: int, *, unread_only: bool = False,
                      before: int | None = None, limit: int = 50) -> NoticePage:
        """A page of the account's notices, newest first (those before the ``before`` cursor;
        only the reader's unread ones with ``unread_only``), worded as of ``at_us``."""
        _check_reader(account_id, reader)
        _check_instant(at_us, "at")
        if before is not None and (type(before) is not int or not 1 <= before <= MAX_SEQ):
            raise InputError("before", f"must be a whole number from 1 to {MAX_SEQ} (a page's next_before), "
                             f"got {before!r}")
        if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
            raise InputError("limit", f"must be a whole number from 1 to {MAX_PAGE}, got {limit!r}")
        with self._read() as tx:
            _account(tx, account_id)
            rows = tx.notices(account_id, reader, unread_only=unread_only, before_seq=before,
                              limit=limit + 1)
            unread = tx.unread_notices(account_id, reader)
        notices = [Notice(seq, ident, alert.type, alert.at_us, alert.data, read,
                          notice_text(alert.type, alert.data, at_us))
                   for (seq, ident, alert, _), read in rows[:limit]]
        more = len(rows) > limit
        return NoticePage(notices, unread, notices[-1].seq if more else None)

    def mark_read(self, account_id: str, reader: str, at_us: int, *, ids: Sequence[str] | None = None,
                  through: int | None = None) -> tuple[int, int]:
        """Mark notices read for ``reader``: those of ``ids``, or (``ids`` None) every one the
        account has so far (with ``through``: up to that notice's ``seq``, the newest a reader was
        shown). An id that is not one of the account's notices is not found, and nothing is
        marked. Returns (how many were newly marked, how many stay unread)."""
        _check_reader(account_id, reader)
        _check_instant(at_us, "at")
        wanted = _check_ids(ids)
        if through is not None and (type(through) is not int or not 1 <= through <= MAX_SEQ):
            raise InputError("through", f"must be a whole number from 1 to {MAX_SEQ} (a notice's seq), "
                             f"got {through!r}")

        def work(tx: Transaction) -> tuple[int, int]:
            _account(tx, account_id)
            if wanted is not None:
                found = tx.alert_ids_of(account_id, wanted)
                for ident in wanted:
                    if ident not in found:
                        raise NotFound("notification", ident, "ids")
            marked = tx.mark_notices_read(account_id, reader, at_us, ids=wanted, through_seq=through)
            return marked, tx.unread_notices(account_id, reader)

        return self._write(work)


def _check_reader(account_id: str, reader: str) -> None:
    check_id(account_id, "account_id")
    if not check_text(reader, "reader", MAX_READER):
        raise InputError("reader", "must not be empty")


def _check_ids(ids: Sequence[str] | None) -> list[str] | None:
    if ids is None:
        return None
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise InputError("ids", "must be a list of notification ids")
    if not 1 <= len(ids) <= MAX_MARK:
        raise InputError("ids", f"must list from 1 to {MAX_MARK} notification ids, got {len(ids)}")
    for index, ident in enumerate(ids):
        check_id(ident, f"ids[{index}]")
    return list(dict.fromkeys(ids))


def _account(tx: Transaction, account_id: str) -> None:
    if tx.get_account(account_id) is None:
        raise NotFound("account", account_id, "account_id")
