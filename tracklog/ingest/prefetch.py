"""Read ahead: the next chunk is read, decompressed and split into lines in a background thread
while DuckDB works on the current one (file reads, zlib and Arrow's reader release the GIL).

Exactly one item is prepared ahead, never more, so memory holds at most two chunks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class ReadAhead(Generic[T]):
    """Iterate `source` one item ahead in a worker thread; errors surface in the consumer, in
    order. Use as a context manager: leaving early stops the worker and closes `source`."""

    def __init__(self, source: Iterator[T]) -> None:
        self._source = source
        self._want = threading.Semaphore(1)  # the worker may prepare one item
        self._ready = threading.Semaphore(0)
        self._item: object = None
        self._error: BaseException | None = None
        self._stop = False
        self.cpu_seconds = 0.0  # the worker's own CPU time, when it has ended (close())
        self._thread = threading.Thread(target=self._work, name="tracklog-read-ahead", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        started = time.thread_time()
        try:
            while True:
                self._want.acquire()
                if self._stop:
                    return
                try:
                    self._item = next(self._source)
                except StopIteration:
                    self._item = _END
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
                    self._error, self._item = exc, _END
                self._ready.release()
                if self._item is _END:
                    return
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()
            self.cpu_seconds = time.thread_time() - started

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        self._ready.acquire()
        item = self._item
        if item is _END:
            self._ready.release()  # stay at the end
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            raise StopIteration
        self._item = None  # the caller's now: not kept alive here
        self._want.release()  # prepare the next one while the caller works on this one
        return item  # type: ignore[return-value]

    def close(self) -> None:
        self._stop = True
        self._want.release()
        self._thread.join()

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
