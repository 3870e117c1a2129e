"""The cycle collector paused while charging in bulk. No I/O, no clock.

Charging a batch makes many objects and, for a valid file, no reference cycles: what it makes is
freed as soon as it is dropped (a rejected event's and a retried write's errors let their frames
go, see ``errors.let_frames_go``). Left running, the collector is triggered by those objects all
the same, and its full collections walk every object the process keeps (the engine's books and
what they hold), at a cost larger than the batch's own work. A long import pauses it throughout
and collects every so often itself, so that a cycle made elsewhere (a driver's) is still freed.

The pause is the whole process's (Python has one collector): it is for the CLI's import and the
stream consumers' batches, not for a server's request threads. Pauses may overlap (batches on
several threads): the collector runs again once the last one ends, if it ran before the first.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pauses = 0  # pauses in progress
_was_enabled = False  # whether the collector ran when the first of them began


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cycle collector for the block (see the module docstring)."""
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()


def collect() -> None:
    """A full collection, while paused (what a long paused run does every so often)."""
    gc.collect()


__all__ = ["collect", "collector_paused"]
