"""Settles the database could not take when a request ended, kept on disk until they go through.

The upstream has answered and the client has its reply: the usage must be charged. When the
database is down at that moment, the settle is written to a file (``REQUEST_ID.json``, written
whole and synced before anything else happens) and retried in the background by one thread per
process; a worker that starts again (or another worker on the same directory) picks up what is
left. Each database has its own folder in the directory, so servers of several databases may share
it. A retry uses the request's id as the event id, so however often it runs — from two workers
at once, or after a success whose answer was lost — the request is charged once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from creditmeter.engine import Engine, Usage
from creditmeter.errors import CreditmeterError, Unavailable

log = logging.getLogger("creditmeter.gateway")


def database_key(url: str) -> str:
    """A folder name for one database: a settle is only ever retried against its own."""
    return "db-" + hashlib.blake2b(url.encode(), digest_size=8).hexdigest()


def default_directory() -> Path:
    """``$XDG_STATE_HOME/creditmeter/pending`` (``~/.local/state/creditmeter/pending``)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "creditmeter" / "pending"


class PendingSettles:
    def __init__(self, directory: Path, engine: Engine, clock: Callable[[], int], *,
                 pause_s: float = 5.0) -> None:
        self.directory = directory
        self.engine = engine
        self.clock = clock
        self.pause_s = pause_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, request_id: str, usage: Usage) -> None:
        """Keep a settle to retry (on disk first), and make sure the retries run."""
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"request_id": request_id, "model": usage.model, "input_tokens": usage.input_tokens,
                  "output_tokens": usage.output_tokens, "cached_input_tokens": usage.cached_input_tokens,
                  "cache_write_tokens": usage.cache_write_tokens, "quantities": list(usage.quantities),
                  "metadata": dict(usage.metadata or {}), "reasoning_tokens": usage.reasoning_tokens,
                  "cache_write_1h_tokens": usage.cache_write_1h_tokens,
                  "service_tier": usage.service_tier}
        final = self.directory / f"{request_id}.json"
        partial = final.with_suffix(".part")
        with partial.open("wb") as out:
            out.write(orjson.dumps(record))
            out.flush()
            os.fsync(out.fileno())
        partial.replace(final)
        self.start()

    def start(self) -> None:
        """Retry what is waiting (this process's and any left by an earlier one), if anything."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if not any(self.directory.glob("*.json")):
                return
            self._thread = threading.Thread(target=self._run, name="pending-settles", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def drain(self) -> int:
        """One pass over what is waiting; answers how many are still waiting."""
        waiting = 0
        for path in sorted(self.directory.glob("*.json")):
            try:
                record = orjson.loads(path.read_bytes())
            except FileNotFoundError:  # another worker settled it just now
                continue
            except (OSError, orjson.JSONDecodeError) as exc:
                log.error("pending settle %s cannot be read (%s); left for the operator", path, exc)
                path.rename(path.with_suffix(".bad"))
                continue
            request_id = record["request_id"]
            usage = _usage(record)
            try:
                self.engine.settle(request_id, usage, self.clock(), event_id=request_id)
                log.info("request %s: settled on a later attempt", request_id)
            except Unavailable:
                waiting += 1
                continue
            except CreditmeterError as exc:  # retrying cannot help: the operator must look at it
                log.error("request %s: settle refused (%s); usage %s", request_id, exc, usage)
            path.unlink(missing_ok=True)
        return waiting

    def _run(self) -> None:
        while not self._stop.wait(self.pause_s):
            try:
                if self.drain() == 0 and not any(self.directory.glob("*.json")):
                    break
            except Exception:  # noqa: BLE001 - the retries must outlive any one failure
                log.exception("pending settles: a pass failed; trying again in %s s", self.pause_s)
        with self._lock:
            self._thread = None
        self.start()  # a settle added while this pass was ending


def _usage(record: dict[str, Any]) -> Usage:
    """The usage a pending file keeps (files kept before reasoning tokens, 1-hour cache writes
    and the service tier were recorded have none of them: 0, 0 and the standard tier)."""
    return Usage(record["model"], record["input_tokens"], record["output_tokens"],
                 record["cached_input_tokens"], record["cache_write_tokens"],
                 tuple((name, count) for name, count in record["quantities"]), record["metadata"],
                 reasoning_tokens=record.get("reasoning_tokens", 0),
                 cache_write_1h_tokens=record.get("cache_write_1h_tokens", 0),
                 service_tier=record.get("service_tier"))
