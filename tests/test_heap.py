"""Fewer collections inside a loop: raised while any loop runs, put back after the last,
and cycles still collected meanwhile."""

from __future__ import annotations

import gc
import io
import threading
import weakref
from collections.abc import Iterator

import pytest

from course_exports.heap import YOUNG_THRESHOLD, fewer_collections
from course_exports.zipstream import Source, ZipStreamWriter, stream_entries


@pytest.fixture(autouse=True)
def default_thresholds() -> Iterator[None]:
    found = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*found)


def test_raised_inside_and_put_back_after() -> None:
    with fewer_collections():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_put_back_after_an_error() -> None:
    with pytest.raises(KeyError), fewer_collections():
        raise KeyError("x")
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_loops_put_back_only_when_the_last_ends() -> None:
    first_in, second_out = threading.Event(), threading.Event()
    seen: list[tuple[int, ...]] = []

    def other() -> None:
        with fewer_collections():
            first_in.set()
            second_out.wait(5)
        seen.append(gc.get_threshold())

    thread = threading.Thread(target=other)
    with fewer_collections():
        thread.start()
        first_in.wait(5)
    seen.append(gc.get_threshold())  # this loop is out; the other still runs
    second_out.set()
    thread.join()
    assert seen == [(YOUNG_THRESHOLD, 10, 10), (700, 10, 10)]


@pytest.mark.parametrize("threshold", [(0, 10, 10), (50_000, 5, 5)])
def test_a_threshold_set_by_the_operator_is_left_alone(threshold: tuple[int, int, int]) -> None:
    gc.set_threshold(*threshold)
    with fewer_collections():
        assert gc.get_threshold() == threshold
    assert gc.get_threshold() == threshold


def test_cycles_are_still_collected_inside() -> None:
    class Node:
        pass

    with fewer_collections():
        node = Node()
        node.self = node  # type: ignore[attr-defined]
        alive = weakref.ref(node)
        del node
        # Containers that stay alive count (those freed at once give their count back).
        kept: list[list[int]] = [[] for _ in range(YOUNG_THRESHOLD * 2)]
        assert alive() is None
        del kept


def test_the_zip_pipeline_runs_with_fewer_collections() -> None:
    seen: list[tuple[int, ...]] = []

    def sources() -> Iterator[Source]:
        for i in range(3):
            seen.append(gc.get_threshold())
            yield Source.of_bytes(f"f{i}.txt", b"x" * i)

    entries = list(stream_entries(ZipStreamWriter(io.BytesIO()), sources()))
    assert len(entries) == 3
    assert seen == [(YOUNG_THRESHOLD, 10, 10)] * 3
    assert gc.get_threshold() == (700, 10, 10)
