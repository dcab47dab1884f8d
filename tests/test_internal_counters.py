"""``datapipe_django._internal.counters``: named, thread-safe counters (the cache's and the
sync's stats) and the OpenTelemetry counters made once per name."""

from __future__ import annotations

import threading

import pytest

# -- counters ----------------------------------------------------------------------------------

def test_counters_count_by_name_from_many_threads():
    from datapipe_django.cache.stats import CacheStats
    from datapipe_django.search.sync import SyncStats

    stats = CacheStats()

    def count():
        for _ in range(1000):
            stats.incr("hits")
            stats.add(misses=2, errors=1)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats.as_dict() == {**dict.fromkeys(CacheStats.NAMES, 0),
                               "hits": 4000, "misses": 8000, "errors": 4000}
    assert stats["hits"] == stats.hits == 4000
    with pytest.raises(KeyError):
        stats.incr("hit")
    with pytest.raises(AttributeError):
        stats.hit  # noqa: B018
    stats.reset()
    assert set(stats.as_dict().values()) == {0}
    sync = SyncStats()
    sync.add(indexed=3, failures=1)
    assert (sync.indexed, sync.deleted, sync.failures, sync.recorded) == (3, 0, 1, 0)
    assert repr(sync) == "SyncStats({'indexed': 3, 'deleted': 0, 'failures': 1, 'recorded': 0})"
    assert sync == SyncStats(indexed=3, failures=1) != SyncStats()  # as the dataclass compared


def test_an_otel_counter_is_made_once_per_name_through_otel():
    from datapipe_django._internal.counters import otel_counter

    one = otel_counter("datapipe.test.counter", unit="{x}", description="A test counter.")
    assert one is not None and hasattr(one, "add")
    assert otel_counter("datapipe.test.counter", unit="{x}", description="Again.") is one
