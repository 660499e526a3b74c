"""Dynamic micro-batching: concurrent requests merged into one model call.

A model call on 32 texts costs far less than 32 calls on one text, so :class:`MicroBatcher`
collects what arrives within ``max_wait_ms`` of the first waiting request (up to ``max_batch``
texts), runs ``fn`` once on all of it in a single worker thread, and hands each request back
exactly its own slice of the outputs, by position. Requests are never split, so a request's
texts always come back together and in order.

The queue is bounded (``max_queue`` texts waiting): past it, :meth:`submit` raises
:class:`QueueFullError` at once (the server answers 503 with ``Retry-After``) instead of
building an unbounded backlog. :meth:`close` stops accepting and finishes what is queued.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
log = logging.getLogger("verticore.serving")


class QueueFullError(RuntimeError):
    """The batcher's queue is full (or it is shutting down): retry later (HTTP 503)."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Item:
    __slots__ = ("texts", "future", "enqueued")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.enqueued = time.monotonic()


class MicroBatcher(Generic[T]):
    """Merge concurrent ``submit(texts)`` calls into batched ``fn(all_texts)`` calls.

    ``fn`` must return one output per input text, in order (a list, or an array whose rows are
    the outputs). ``on_batch(n_texts, n_requests)`` is called after each model call (metrics).
    """

    def __init__(self, fn: Callable[[list[str]], Sequence[T]], max_batch: int = 64, max_wait_ms: float = 5.0,
                 max_queue: int = 1024, name: str = "batch",
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_ms >= 0")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.name = name
        self.on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._queued_texts = 0
        self._cond = threading.Condition()
        self._closed = False
        self._busy = False
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.batch_sizes: list[int] = []  # the last 1000 batch sizes (tests, debugging)

    # -- submitting -------------------------------------------------------------------------
    def submit_future(self, texts: Sequence[str]) -> concurrent.futures.Future:
        """Queue ``texts``; the returned future resolves to their outputs (a list, same order)."""
        texts = list(texts)
        item = _Item(texts)
        if not texts:
            item.future.set_result([])
            return item.future
        with self._cond:
            if self._closed:
                raise QueueFullError(f"{self.name}: the server is shutting down")
            if self._queued_texts + len(texts) > self.max_queue and self._queue:
                raise QueueFullError(f"{self.name}: queue full ({self._queued_texts} texts waiting, "
                                     f"limit {self.max_queue}); retry shortly")
            self._queue.append(item)
            self._queued_texts += len(texts)
            if self._thread is None:
                self._thread = threading.Thread(target=self._worker, name=f"verticore-{self.name}", daemon=True)
                self._thread.start()
            self._cond.notify()
        return item.future

    async def submit(self, texts: Sequence[str]) -> list[T]:
        """Await the outputs for ``texts`` (raises :class:`QueueFullError` when the queue is full)."""
        return await asyncio.wrap_future(self.submit_future(texts))

    def submit_sync(self, texts: Sequence[str], timeout: float | None = None) -> list[T]:
        """Blocking variant for sync handlers (they run in a thread pool)."""
        return self.submit_future(texts).result(timeout)

    @property
    def queued(self) -> int:
        return self._queued_texts

    # -- the worker -------------------------------------------------------------------------
    def _take_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            # Wait until the oldest request has waited max_wait_s or the batch is full.
            deadline = self._queue[0].enqueued + self.max_wait_s
            while self._queued_texts < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, n = [], 0
            while self._queue and (not batch or n + len(self._queue[0].texts) <= self.max_batch):
                item = self._queue.popleft()
                batch.append(item)
                n += len(item.texts)
            self._queued_texts -= n
            self._busy = True
            return batch

    def _run(self, items: list[_Item]) -> None:
        texts = [t for it in items for t in it.texts]
        out = self.fn(texts)
        if len(out) != len(texts):
            raise RuntimeError(f"{self.name}: model returned {len(out)} outputs for {len(texts)} texts")
        start = 0
        for it in items:
            end = start + len(it.texts)
            _resolve(it.future, list(out[start:end]))
            start = end

    def _worker(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except BaseException as exc:  # noqa: BLE001 - every waiting request must get an answer
                if len(batch) > 1:
                    # One bad request must not fail the others merged with it: retry one by one.
                    for it in batch:
                        try:
                            self._run([it])
                        except BaseException as one:  # noqa: BLE001
                            _fail(it.future, one)
                else:
                    _fail(batch[0].future, exc)
            finally:
                n = sum(len(it.texts) for it in batch)
                self.batches += 1
                self.batch_sizes.append(n)
                del self.batch_sizes[:-1000]
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                if self.on_batch is not None:
                    try:
                        self.on_batch(n, len(batch))
                    except Exception:
                        log.exception("batch metrics callback failed")

    # -- shutdown ---------------------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting new texts; finish every queued and in-flight batch (up to ``timeout``)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)


def _resolve(fut: concurrent.futures.Future, value) -> None:
    if not fut.done():  # a caller that gave up (client disconnected) cancelled it
        try:
            fut.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass


def _fail(fut: concurrent.futures.Future, exc: BaseException) -> None:
    if not fut.done():
        try:
            fut.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass


__all__ = ["MicroBatcher", "QueueFullError"]
