"""The cycle collector paused while charging in bulk. No I/O, no clock.

Charging a batch makes many objects and no reference cycles: what it makes is freed as soon as
it is dropped. Left running, the collector is triggered by those objects all the same, and its
full collections walk every object the process keeps (the engine's books and what they hold),
so they cost more than the batch's own work. A long import pauses it throughout and collects
once in a while itself, so that the odd cycle (an exception retried, a driver's) is freed.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cycle collector for the block; as it was afterwards (however the block ends)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def collect() -> None:
    """A full collection, while paused (what a long paused run does every so often)."""
    gc.collect()


__all__ = ["collect", "collector_paused"]
