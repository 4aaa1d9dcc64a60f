"""Fewer garbage collections while a long loop makes and drops objects by the million.

CPython's cyclic collector runs its youngest generation every 700 new container objects.
Writing a course of 100,000 tiny files makes several small objects a file (a source,
its reader, the packed entry, the written entry, the manifest's line) that live for a
few milliseconds while the window holds them: collected that often, tens of thousands
of them are traversed again and again, survive into the older generations (they are
still in flight) and then die there, which sets off collections of the whole heap
(Prefect's, Polars'...) as well. Measured on the tiny mix here, the zip's pipeline took
2.2-2.9 s at the default and 1.8-2.0 s with 10,000 (benchmarks/course_mixes.py, README).

Objects freed by their reference count, which is nearly all of them, are never traversed
at all when the collector waits longer, so raising the youngest generation's threshold
costs only the memory of the cycles that wait: reference cycles are still collected,
every :data:`YOUNG_THRESHOLD` allocations instead of every 700.

The thresholds belong to the process: the first loop in raises them, the last one out
puts back what it found (loops may run at once in threads), and a threshold already
higher, or automatic collection switched off (threshold 0), is left as it is.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["YOUNG_THRESHOLD", "fewer_collections"]

#: The youngest generation's threshold while a loop runs (CPython's default is 700).
YOUNG_THRESHOLD = 10_000

_lock = threading.Lock()
_inside = 0
_found: tuple[int, ...] = ()


@contextmanager
def fewer_collections(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """Collect the youngest generation every ``young`` allocations inside the block."""
    global _inside, _found
    with _lock:
        if _inside == 0:
            _found = gc.get_threshold()
            if 0 < _found[0] < young:
                gc.set_threshold(young, *_found[1:])
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                gc.set_threshold(*_found)
