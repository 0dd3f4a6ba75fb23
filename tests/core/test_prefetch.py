"""prefetch: results in order, one item loaded ahead in a background thread, failures kept with their item."""

from __future__ import annotations

import threading

import pytest

from prn_cli.errors import InvalidInputError
from prn_cli.prefetch import attempt, prefetch


def test_results_come_in_order_with_failures_kept_with_their_item():
    def load(x):
        if x == 3:
            raise InvalidInputError("three is bad")
        return x * 10

    out = [(item, attempt(f.result)) for item, f in prefetch(load, range(6))]
    assert [i for i, _ in out] == list(range(6))
    assert [r for i, r in out if i != 3] == [0, 10, 20, 40, 50]
    assert isinstance(out[3][1], InvalidInputError) and out[3][1].message == "three is bad"


@pytest.mark.parametrize("ahead", [0, 1, 2])
def test_the_same_results_whatever_the_lookahead(ahead):
    assert [f.result() for _, f in prefetch(lambda x: x * x, range(7), ahead=ahead)] == [x * x for x in range(7)]


def test_the_next_item_loads_while_the_caller_works_on_the_current_one():
    started = {k: threading.Event() for k in range(3)}
    threads = {}

    def load(k):
        threads[k] = threading.current_thread().name
        started[k].set()
        return k

    it = prefetch(load, range(3))
    item, future = next(it)
    assert item == 0 and future.result() == 0
    # while the caller holds item 0, item 1 is loaded in the background without the caller asking for it
    assert started[1].wait(timeout=10)
    assert threads[1].startswith("prn-prefetch") and threads[1] != threading.current_thread().name
    assert [f.result() for _, f in it] == [1, 2]


def test_stopping_early_does_not_load_everything():
    loaded = []
    gate = threading.Event()

    def load(k):
        if k >= 1:
            gate.wait(timeout=10)
        loaded.append(k)
        return k

    it = prefetch(load, range(100))
    next(it)
    gate.set()
    it.close()                              # e.g. Ctrl-C in the caller: the pool is shut down
    assert len(loaded) <= 3
