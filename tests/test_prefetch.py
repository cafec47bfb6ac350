"""ReadAhead: the read-ahead thread of ingest yields every item in order, surfaces the source's
error in the consumer after the items before it, and stops cleanly when left early."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tracklog.ingest.prefetch import ReadAhead


def test_yields_all_items_in_order_then_stays_exhausted() -> None:
    with ReadAhead(iter(range(1000))) as items:
        assert list(items) == list(range(1000))
        assert next(items, "end") == "end"


def test_prepares_exactly_one_item_ahead() -> None:
    produced: list[int] = []
    step = threading.Event()

    def source() -> Iterator[int]:
        for i in range(5):
            produced.append(i)
            step.set()
            yield i

    with ReadAhead(source()) as items:
        step.wait(5)
        assert next(items) == 0
        # the worker now prepares item 1, and no more until item 1 is taken
        for _ in range(200):
            if len(produced) == 2:
                break
            threading.Event().wait(0.01)
        threading.Event().wait(0.05)
        assert produced == [0, 1]
        assert next(items) == 1


def test_error_of_the_source_is_raised_in_the_consumer_after_earlier_items() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("corrupt gzip data")

    with ReadAhead(source()) as items:
        assert next(items) == 1
        assert next(items) == 2
        with pytest.raises(ValueError, match="corrupt gzip"):
            next(items)


def test_leaving_early_stops_the_worker_and_closes_the_source() -> None:
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    items = ReadAhead(source())
    assert next(items) == 0
    items.close()
    assert closed.is_set()
    assert not items._thread.is_alive()
