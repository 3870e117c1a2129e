"""What every command shares: the database URL, "now", engine settings, and errors as exit codes.

``command`` registers a command with the shared options (--db, and --at / --json where they apply);
``--at TIME`` is the only place "now" is read.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from creditmeter.engine import Settings, open_engine
from creditmeter.errors import EXIT_SYSTEM, CreditmeterError, InputError
from creditmeter.timeutil import parse_instant

DEFAULT_DB = "sqlite:///creditmeter.db"
F = TypeVar("F", bound=Callable[..., Any])


def now_us() -> int:
    return time.time_ns() // 1000


def settings_from_env() -> Settings:
    """Engine settings from CREDITMETER_LATENESS_WINDOW_S and CREDITMETER_HOLD_TTL_S."""
    values: dict[str, int] = {}
    for env, name in (("CREDITMETER_LATENESS_WINDOW_S", "lateness_window_s"),
                      ("CREDITMETER_HOLD_TTL_S", "default_hold_ttl_s")):
        raw = os.environ.get(env)
        if raw is not None:
            try:
                values[name] = int(raw)
            except ValueError:
                raise InputError(env, f"{raw!r} is not a whole number of seconds") from None
            if values[name] <= 0:
                raise InputError(env, "must be greater than zero")
    return Settings(**values)  # type: ignore[arg-type]


# ``--at`` is the command's "now", not an event's time: it is not bounded by the lateness window,
# but every instant derived from it (a package valid up to 100 years, a renewal, a hold's timeout)
# must still be one the engine stores (up to 9999-12-31), so it stops well before that.
LATEST_AT = "9000-01-01"


def parse_at(value: str) -> int:
    """``--at TIME`` as microseconds: from 1970-01-01 up to (not including) ``LATEST_AT``."""
    at_us = parse_instant(value, "at")
    if at_us >= parse_instant(LATEST_AT, "at"):
        raise InputError("at", f"{value!r} is out of range: --at must be from 1970-01-01 up to "
                         f"(not including) {LATEST_AT}")
    return at_us


def instant(value: str | None, field: str) -> int | None:
    """An optional time option as microseconds (None when it was not given)."""
    return None if value is None else parse_instant(value, field)


def fail(error: CreditmeterError) -> NoReturn:
    """Print ``error: FIELD: REASON`` to stderr and exit with the error's code (see errors.py)."""
    click.echo(f"error: {error}", err=True)
    sys.exit(error.exit_code)


def command(group: click.Group, name: str, *, at: bool = False, as_json: bool = False,
            signed: bool = False) -> Callable[[F], F]:
    """Register a command with the shared options (--db, and --at / --json where they apply).

    The wrapped function gets ``engine`` (and ``at_us``, ``as_json``); errors become exit codes.
    ``signed``: an argument may start with '-' (``grants add alice -50``), so that a negative
    amount reaches the command's own check, which names the field, rather than being taken for
    an unknown option.
    """
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def run(db: str | None, **kwargs: Any) -> None:
            url = db or os.environ.get("CREDITMETER_DB") or DEFAULT_DB
            try:
                if at:
                    at_text = kwargs.pop("at")
                    kwargs["at_us"] = now_us() if at_text is None else parse_at(at_text)
                engine = open_engine(url, settings_from_env())
                try:
                    fn(engine=engine, **kwargs)
                finally:
                    engine.close()
            except CreditmeterError as exc:
                fail(exc)

        wrapped: Any = run
        if as_json:
            wrapped = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(wrapped)
        if at:
            wrapped = click.option("--at", metavar="TIME",
                                   help="Run as if now were TIME (ISO 8601; a date is 00:00 UTC).")(wrapped)
        wrapped = click.option("--db", metavar="URL",
                               help=f"Database URL (env CREDITMETER_DB, default {DEFAULT_DB}).")(wrapped)
        group.command(name, context_settings={"ignore_unknown_options": True} if signed else None)(wrapped)
        return fn

    return decorate


class _Main(click.Group):
    """The command group; what the operating system refuses to any command (a full disk, a
    closed pipe, a file that cannot be opened) is one line on stderr, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a write that fails fails here, not silently at exit
            return result
        except OSError as exc:
            system_error(exc)


def system_error(exc: OSError) -> NoReturn:
    """Say what the operating system refused, in a line, and exit ``EXIT_SYSTEM``."""
    if exc.errno == errno.EPIPE:
        # Whoever read standard output has gone (``| head``): nothing more can reach it, and
        # Python's own flush at exit must not fail again.
        with contextlib.suppress(OSError, ValueError):  # (standard output may have no file)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename if exc.filename is not None else (
        "standard output" if exc.errno == errno.EPIPE else None)
    click.echo(f"error: {where}: {reason}" if where is not None else f"error: {reason}", err=True)
    sys.exit(EXIT_SYSTEM)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="creditmeter")
def main() -> None:
    """creditmeter: credits for AI products — prices, packages, burn-down, holds, usage."""
