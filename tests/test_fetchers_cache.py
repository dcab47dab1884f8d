"""``CachedFetcher`` (``datapipe_django.fetchers.cache``) on the local-memory cache and SQLite:
hits, ttl and stale serving, one computation for concurrent misses, what is never stored, and a
cache outage as a bypass. (On the real Redis: tests/test_redis_cache.py.)"""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import pytest
from django.core.cache import caches

import datapipe_django
from datapipe_django import FallbackMode, Pipeline
from datapipe_django._internal import breaker as breaker_module
from datapipe_django.cache import generations
from datapipe_django.fetchers import CachedFetcher, FetchResult, ORMFetcher
from datapipe_django.fetchers import cache as cache_module
from datapipe_django.specs import Eq
from datapipe_django.test import InMemoryFetcher
from tests.cache_helpers import (
    FlakyCache,
    SlowFetcher,
    fetch_request,
    ids,
    isolated_cache,  # noqa: F401  (autouse: every test here)
    make,
    outcome,
    pipeline,
    position,
    run_threads,
)
from tests.testapp.models import Item

# -- serving -----------------------------------------------------------------------------------

def test_a_hit_skips_the_source_and_keeps_its_name():
    source = InMemoryFetcher([make(i) for i in range(1, 6)], name="appdb", priority=3)
    cached = CachedFetcher(source, ttl=30)
    assert (cached.name, cached.priority) == ("appdb", 3)
    p = pipeline(cached)
    first = p.execute(tenant="t1", limit=2)
    second = p.execute(tenant="t1", limit=2)
    assert ids(first) == ids(second) == [5, 4]
    # The same signed position (the signature's timestamp may be a second apart).
    assert second.has_more and position(second.next_cursor) == position(first.next_cursor)
    assert (outcome(first), outcome(second)) == ("miss", "hit")
    assert second.source == "appdb"  # X-Datapipe-Source names the store, not the cache
    assert len(source.calls) == 1
    assert cached.stats.as_dict() == {**dict.fromkeys(cached.stats.NAMES, 0),
                                      "hits": 1, "misses": 1}
    following = p.execute(tenant="t1", limit=2, cursor=second.next_cursor)
    assert ids(following) == [3, 2] and outcome(following) == "miss"


def test_can_handle_and_runs_inline_are_the_inner_fetchers():
    class Picky(InMemoryFetcher):
        def runs_inline(self, request):
            return True

    cached = CachedFetcher(Picky([], name="m", can_handle=lambda r: r.search is None), ttl=5)
    assert cached.can_handle(fetch_request())
    assert not cached.can_handle(fetch_request(search="x"))
    assert "declined" in cached.can_handle(fetch_request(search="x")).reason
    assert cached.runs_inline(fetch_request())
    with pytest.raises(AttributeError):
        cached.using  # noqa: B018  (an in-memory fetcher has no database alias)
    assert CachedFetcher(ORMFetcher("archive"), ttl=5).using == "archive"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ttl": 0}, "`ttl` must be positive"),
    ({"ttl": "30"}, "`ttl` must be positive"),
    ({"stale_ttl": -1}, "`stale_ttl`"),
    ({"lock_timeout": 0}, "`lock_timeout`"),
])
def test_configuration_mistakes_are_improperly_configured(kwargs, message):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=message):
        CachedFetcher(InMemoryFetcher([]), **kwargs)
    with pytest.raises(ImproperlyConfigured, match="is not a fetcher"):
        CachedFetcher(object(), ttl=5)


def test_entries_expire_after_ttl_and_may_be_served_stale_while_one_caller_refreshes(
        monkeypatch):
    clock = [time.time()]
    monkeypatch.setattr(cache_module.time, "time", lambda: clock[0])
    monkeypatch.setattr("django.core.cache.backends.locmem.time.time", lambda: clock[0])
    source = InMemoryFetcher([make(1)], name="m")
    plain = pipeline(CachedFetcher(source, ttl=10))
    plain.execute(tenant="t1")
    clock[0] += 11
    assert outcome(plain.execute(tenant="t1")) == "miss"

    source = InMemoryFetcher([make(1)], name="m")
    swr = CachedFetcher(source, ttl=10, stale_ttl=30)
    p = pipeline(swr, name="cache-swr")
    p.execute(tenant="t1")
    source.rows = [make(1, name="renamed")]  # changed behind the cache's back (no signal)
    clock[0] += 15
    plan = swr._plan(source.calls[0], frozenset())
    assert caches["default"].add(plan.lock_key, "someone else", 30)  # another caller refreshes
    stale = p.execute(tenant="t1")
    assert outcome(stale) == "stale" and stale.items[0].name == "n1"
    caches["default"].delete(plan.lock_key)
    refreshed = p.execute(tenant="t1")
    assert outcome(refreshed) == "miss" and refreshed.items[0].name == "renamed"
    assert outcome(p.execute(tenant="t1")) == "hit"
    clock[0] += 41
    assert outcome(p.execute(tenant="t1")) == "miss"  # past ttl + stale_ttl: gone
    assert swr.stats["stale"] == 1


def test_concurrent_misses_compute_once():
    source = SlowFetcher([make(i) for i in range(1, 4)], name="slow", delay=0.3)
    p = pipeline(CachedFetcher(source, ttl=30))
    barrier = threading.Barrier(12)
    results = []

    def call():
        barrier.wait()
        results.append(p.execute(tenant="t1", limit=2))

    run_threads(call, 12)
    assert len(source.calls) == 1
    assert all(ids(r) == [3, 2] for r in results) and len(results) == 12
    assert sorted(outcome(r) for r in results) == ["hit"] * 11 + ["miss"]


def test_waiters_compute_themselves_when_the_lock_holder_fails():
    from datapipe_django import SourcesUnavailable

    source = SlowFetcher([make(1)], name="slow", delay=0.2, available=False)
    p = pipeline(CachedFetcher(source, ttl=30))
    errors = []

    def call():
        try:
            p.execute(tenant="t1")
        except SourcesUnavailable as exc:
            errors.append(exc)

    run_threads(call, 4)
    assert len(errors) == 4  # nobody waits forever, nobody gets a cache error
    assert len(source.calls) >= 2


def test_a_request_that_cannot_be_keyed_is_served_without_the_cache():
    source = InMemoryFetcher([make(1)], name="m")
    cached = CachedFetcher(source, ttl=30)
    request = fetch_request(spec=Eq("name", object()), pipeline="odd")
    result = cached.fetch(request)
    assert result.meta["cache"] == "bypass" and "canonical" in result.meta["cache_reason"]


def test_rows_of_another_tenant_are_never_stored(caplog):
    class Leaky(InMemoryFetcher):
        def fetch(self, request):
            return FetchResult([make(1, tenant="t2")], False)

    cached = CachedFetcher(Leaky([], name="leaky"), ttl=30)
    for _ in range(2):
        assert cached.fetch(fetch_request()).meta["cache"] == "miss"
    assert "another tenant" in caplog.text


# -- outages -----------------------------------------------------------------------------------

def test_a_cache_outage_is_a_bypass_with_a_warning_and_a_short_circuit(settings, caplog,
                                                                        monkeypatch):
    settings.DATAPIPE = {**settings.DATAPIPE, "CACHE_BREAKER_SECONDS": 0.3}
    # The breaker's clock moves only when this test says: the circuit stays open as long as
    # the test needs, however slow the machine.
    clock = [1000.0]
    monkeypatch.setattr(breaker_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    source = InMemoryFetcher([make(i) for i in range(1, 4)], name="appdb")
    cached = CachedFetcher(source, ttl=30, cache="flaky")
    p = pipeline(cached)
    assert outcome(p.execute(tenant="t1")) == "miss"
    FlakyCache.down = True
    caplog.set_level(logging.WARNING, "datapipe_django.cache")
    down = [p.execute(tenant="t1")]
    calls = FlakyCache.calls
    down += [p.execute(tenant="t1") for _ in range(4)]
    assert FlakyCache.calls == calls  # the circuit is open: the cache is not called at all
    assert all(ids(r) == [3, 2, 1] and outcome(r) == "bypass" for r in down)
    assert cached.stats["errors"] == 1 and cached.stats["bypasses"] == 5
    assert "Cache 'flaky' is unavailable (ConnectionRefusedError" in caplog.text
    clock[0] += 0.25
    assert outcome(p.execute(tenant="t1")) == "bypass"  # still open: no probe yet
    assert FlakyCache.calls == calls
    clock[0] += 0.1
    assert outcome(p.execute(tenant="t1")) == "bypass"  # the probe fails: open again
    assert cached.stats["errors"] == 2
    FlakyCache.down = False
    assert outcome(p.execute(tenant="t1")) == "bypass"  # open for another 0.3 s
    clock[0] += 0.35
    assert outcome(p.execute(tenant="t1")) == "hit"  # the probe succeeds: closed
    assert "reachable again" in caplog.text
    assert not cached.guard.is_open


def test_an_unreachable_redis_costs_one_connection_attempt(settings):
    settings.CACHES = {**settings.CACHES, "nowhere": {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:9/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2}}}
    cached = CachedFetcher(InMemoryFetcher([make(1)], name="m"), ttl=30, cache="nowhere")
    p = pipeline(cached)
    start = time.monotonic()
    results = [p.execute(tenant="t1") for _ in range(20)]
    assert time.monotonic() - start < 2
    assert all(ids(r) == [1] and outcome(r) == "bypass" for r in results)
    assert cached.stats["errors"] == 1
    assert "ConnectionError" in results[0].attempts[0].meta["cache_reason"]


def test_a_bug_in_the_cache_client_is_not_swallowed():
    p = pipeline(CachedFetcher(InMemoryFetcher([make(1)], name="m"), ttl=30, cache="buggy"))
    with pytest.raises(TypeError, match="bug in the cache client"):
        p.execute(tenant="t1")


@pytest.mark.django_db(transaction=True)
def test_invalidations_held_back_by_an_outage_are_written_before_the_next_read(settings):
    settings.DATAPIPE = {**settings.DATAPIPE, "CACHE_BREAKER_SECONDS": 0.1}
    Item.objects.bulk_create([make(1), make(2)])
    p = pipeline(CachedFetcher(ORMFetcher("default"), ttl=300, cache="flaky"))
    assert outcome(p.execute(tenant="t1")) == "miss"
    FlakyCache.down = True
    row = Item.objects.get(pk=2)
    row.name = "written during the outage"
    row.save()  # the token cannot be replaced now
    assert generations._pending["flaky"]
    assert p.execute(tenant="t1").items[0].name == "written during the outage"  # bypass
    FlakyCache.down = False
    time.sleep(0.15)
    result = p.execute(tenant="t1")
    assert result.items[0].name == "written during the outage"
    assert outcome(result) == "miss" and not generations._pending.get("flaky")


def test_pipelines_modules_are_discovered_at_startup():
    # tests/testapp/pipelines.py is imported by the app's ready(), not by this test.
    assert "test-items" in {p.name for p in datapipe_django.registry.all_pipelines()}


def test_system_checks_name_a_missing_cache_alias_and_a_per_process_cache(settings):
    from django.core import checks

    from datapipe_django import registry

    cached = CachedFetcher(InMemoryFetcher([]), ttl=5, cache="nope")
    Pipeline("cache-check", model=Item, fetchers=[cached])
    try:
        errors = checks.run_checks(tags=[checks.Tags.caches])
        assert "datapipe_django.E003" in {e.id for e in errors}
        settings.DATAPIPE = {**settings.DATAPIPE, "CACHE": "default"}
        cached._cache = None
        deploy = checks.run_checks(tags=[checks.Tags.caches], include_deployment_checks=True)
        assert "datapipe_django.W003" in {e.id for e in deploy}
    finally:
        registry.unregister("cache-check")


def test_chain_modes_see_the_cached_rows_as_their_source():
    recent = InMemoryFetcher([make(i) for i in range(3, 6)], name="appdb")
    archive = InMemoryFetcher([make(i) for i in range(1, 6)], name="archive")
    for mode in FallbackMode:
        p = pipeline(CachedFetcher(recent, ttl=30), archive, fallback=mode)
        expected = [p.execute(tenant="t1", limit=4, offset=1) for _ in range(2)]
        assert ids(expected[0]) == ids(expected[1]), mode
        assert expected[0].sources == expected[1].sources, mode
