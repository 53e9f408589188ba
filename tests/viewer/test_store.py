"""ResultStore: ids, TTL, eviction, reuse for the same analysis, thread safety."""

from __future__ import annotations

import threading

import pytest

from cds_service.viewer import ResultStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_put_returns_unguessable_ids_and_get_returns_the_object():
    store = ResultStore(ttl_s=60)
    a, b = object(), object()
    id_a, id_b = store.put(a), store.put(b)  # type: ignore[arg-type]
    assert id_a != id_b
    assert len(id_a) >= 21 and all(c.isalnum() or c in "-_" for c in id_a)  # 128 bits, URL-safe
    assert store.get(id_a) is a and store.get(id_b) is b
    assert store.get("unknown") is None


def test_results_expire_after_the_ttl():
    clock = Clock()
    store = ResultStore(ttl_s=60, clock=clock)
    result_id = store.put(object())  # type: ignore[arg-type]
    clock.now += 59.9
    assert store.get(result_id) is not None
    clock.now += 0.1
    assert store.get(result_id) is None
    assert len(store) == 0


def test_oldest_is_evicted_beyond_max_entries():
    store = ResultStore(ttl_s=60, max_entries=3)
    ids = [store.put(object()) for _ in range(5)]  # type: ignore[arg-type]
    assert [store.get(i) is not None for i in ids] == [False, False, True, True, True]
    assert len(store) == 3


def test_same_analysis_reuses_its_id_and_restarts_its_lifetime():
    clock = Clock()
    store = ResultStore(ttl_s=60, max_entries=2, clock=clock)
    analysis = object()
    first = store.put(analysis)  # type: ignore[arg-type]
    clock.now += 50
    assert store.put(analysis) == first  # type: ignore[arg-type]
    clock.now += 50
    assert store.get(first) is analysis  # 100 s after the first put, 50 s after the second
    store.put(object())  # type: ignore[arg-type]
    store.put(object())  # type: ignore[arg-type]
    assert store.get(first) is None  # evicted; a later put gets a new id
    assert store.put(analysis) != first  # type: ignore[arg-type]


def test_concurrent_puts_and_gets_are_safe():
    store = ResultStore(ttl_s=60, max_entries=50)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(300):
                item = object()
                result_id = store.put(item)  # type: ignore[arg-type]
                found = store.get(result_id)
                assert found is None or found is item
        except BaseException as exc:  # pragma: no cover — reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(store) == 50


@pytest.mark.parametrize("kwargs", [{"ttl_s": 0}, {"ttl_s": 10, "max_entries": 0}])
def test_rejects_nonsense_limits(kwargs):
    with pytest.raises(ValueError):
        ResultStore(**kwargs)
