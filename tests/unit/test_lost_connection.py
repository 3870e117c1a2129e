"""A server shutdown met inside a pipeline surfaces as another error; it is still a lost
connection (the caller is told to retry), not a failure of the request."""

from __future__ import annotations

import psycopg
import psycopg.errors

from creditmeter.store.connection import _connection_lost


def _raised_inside(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception:
            raise outer  # noqa: B904 - the context is what is under test
    except Exception as exc:
        return exc


def test_a_shutdown_under_a_pipeline_error_is_a_lost_connection() -> None:
    shutdown = psycopg.errors.AdminShutdown("terminating connection due to administrator command")
    pipeline = _raised_inside(psycopg.OperationalError("cannot exit pipeline mode while busy"), shutdown)
    rollback = _raised_inside(psycopg.OperationalError("sending query failed"), pipeline)
    assert _connection_lost(rollback)


def test_an_error_with_no_lost_connection_under_it_is_not_one() -> None:
    assert not _connection_lost(_raised_inside(psycopg.OperationalError("x"), ValueError("y")))
