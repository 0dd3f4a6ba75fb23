"""Overlap reading with the network: ``prefetch(load, items)`` runs ``load`` on the next items in a background
thread while the caller works on the current one, and yields the results in order.

``prn segment`` and ``prn refine`` decode photos and base PNGs and render PRN's input maps this way while the
network runs on the previous batch. A thread, not a process: PIL's decoders and torch's kernels release the GIL,
nothing has to be pickled (the predictor stays in one process), and a failure stays an ordinary exception of the
item it belongs to. Outputs do not change: every item is loaded exactly as without prefetching.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(load: Callable[[T], R], items: Iterable[T], *, ahead: int = 1) -> Iterator[tuple[T, Future]]:
    """Yield ``(item, future)`` for each item in order, ``future.result()`` being ``load(item)`` (or raising what
    it raised). Up to ``ahead`` items beyond the current one are loaded in a background thread; ``ahead=0`` loads
    each item when it is reached, in the caller's thread. Stopping early (an exception, Ctrl-C, ``close()``)
    cancels what has not started and waits for the one item being loaded."""
    if ahead <= 0:
        for item in items:
            done: Future = Future()
            try:
                done.set_result(load(item))
            except Exception as exc:        # noqa: BLE001 - handed to the caller with its item
                done.set_exception(exc)
            yield item, done
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prn-prefetch")
    pending: list[tuple[T, Future]] = []
    source = iter(items)
    try:
        for item in source:
            pending.append((item, pool.submit(load, item)))
            if len(pending) > ahead:
                yield pending.pop(0)
        while pending:
            yield pending.pop(0)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def attempt(fn: Callable[..., R], *args):
    """``fn(*args)``, or the :class:`~prn_cli.errors.InvalidInputError` it raised (a bad input is reported with
    its item by the caller; any other exception propagates)."""
    from .errors import InvalidInputError

    try:
        return fn(*args)
    except InvalidInputError as exc:
        return exc
