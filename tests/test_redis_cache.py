"""CachedFetcher on the real Redis (django-redis), over the real PostgreSQL primary.

Hits and misses, what Redis holds, invalidation across threads and processes, tenant
isolation (a property test), one computation for concurrent misses, a slow Redis and Redis
stopped and started again during a run (scripts/services.sh stop-redis / start-redis).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings as django_settings
from django.core.cache import caches
from django.db import close_old_connections, connections
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from datapipe_django import Pipeline, PipelineRequest, invalidate
from datapipe_django._internal import breaker as breaker_module
from datapipe_django.cache import generations
from datapipe_django.conf import datapipe_settings
from datapipe_django.fetchers import CachedFetcher, ORMFetcher
from tests.cache_helpers import (
    SlowFetcher,
    ids,
    isolated_cache,
    make,
    outcome,
    position,
    run_threads,
)
from tests.conftest import require_alias, require_cache
from tests.services import SERVICES
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Item

__all__ = ["isolated_cache"]  # the autouse fixture applies here too

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent
PRIMARY = pytest.mark.django_db(
    databases=[a for a in ("default", "primary") if a in django_settings.DATABASES],
    transaction=True)


@pytest.fixture(autouse=True)
def redis_to_ourselves():
    """One Redis test at a time on this machine: these tests pause and stop the shared
    redis-server, which would break another test run's Redis tests in the middle."""
    with open(Path(tempfile.gettempdir()) / "datapipe-tests-redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def redis(redis_to_ourselves, settings, isolated_cache):
    """Every CachedFetcher uses the ``redis`` alias; this test's keys are removed after it."""
    require_cache("redis")
    settings.DATAPIPE = {**settings.DATAPIPE, "CACHE": "redis", "CACHE_BREAKER_SECONDS": 0.5}
    cache = caches["redis"]
    yield cache
    # A test that stopped Redis may have failed before starting it again.
    with contextlib.suppress(Exception):
        cache.delete_pattern(f"{datapipe_settings.CACHE_KEY_PREFIX}:*")


def primary_pipeline(name="cache-redis", **kwargs) -> Pipeline:
    require_alias("primary")
    return Pipeline(name, model=Item, filterset_class=ItemFilterSet, tenant_field="tenant",
                    ordering=("-created_at", "-id"), timeout=5.0, register=False,
                    fetchers=[CachedFetcher(ORMFetcher("primary"), ttl=300, **kwargs)])


def seed(*rows):
    Item.objects.using("primary").bulk_create(rows)
    invalidate(Item)


def redis_cli(*args: str) -> str:
    host, port = SERVICES["redis"]
    return subprocess.run(["redis-cli", "-h", host, "-p", str(port), *args], check=True,
                          capture_output=True, text=True, timeout=10).stdout.strip()


# -- hits, misses and what is stored -----------------------------------------------------------

@PRIMARY
def test_a_hit_makes_no_database_query(redis):
    seed(*(make(i) for i in range(1, 12)))
    p = primary_pipeline()
    first = p.execute(tenant="t1", limit=5, filters={"status": "queued"})
    with CaptureQueriesContext(connections["primary"]) as queries:
        second = p.execute(tenant="t1", limit=5, filters={"status": "queued"})
    assert len(queries) == 0
    assert (outcome(first), outcome(second)) == ("miss", "hit")
    assert ids(first) == ids(second) == [11, 10, 9, 8, 7]
    assert position(second.next_cursor) == position(first.next_cursor) and second.has_more
    assert [r.created_at for r in second.items] == [r.created_at for r in first.items]
    assert {r._state.db for r in second.items} == {"primary"}
    assert second.source == "primary"


@PRIMARY
def test_redis_holds_json_rows_never_pickles(redis):
    seed(make(1, name="ünïcode"), make(2))
    p = primary_pipeline()
    p.execute(tenant="t1")
    keys = redis.keys(f"{datapipe_settings.CACHE_KEY_PREFIX}:1:*")
    assert len(keys) == 1
    raw = redis.client.get_client().get(redis.make_key(keys[0]))
    assert not raw.startswith(b"\x80")  # not a pickle (JSONSerializer in tests/settings.py)
    entry = json.loads(json.loads(raw))
    assert entry["fs"][0][:3] == ["id", "tenant", "name"]
    assert [r[1][2] for r in entry["r"]] == ["n2", "ünïcode"]
    assert entry["m"] is False and entry["db"] == "primary"


# -- invalidation ------------------------------------------------------------------------------

@PRIMARY
def test_a_read_right_after_a_committed_write_is_never_stale(redis):
    seed(*(make(i) for i in range(1, 4)))
    p = primary_pipeline()
    for amount in range(100, 115):
        assert outcome(p.execute(tenant="t1")) in {"hit", "miss"}
        row = Item.objects.using("primary").get(pk=3)
        row.amount = amount
        row.save()
        result = p.execute(tenant="t1")
        assert result.items[0].amount == amount and outcome(result) == "miss"
        assert outcome(p.execute(tenant="t1")) == "hit"
    Item.objects.using("primary").filter(pk__in=[2, 3]).delete()
    assert ids(p.execute(tenant="t1")) == [1]
    Item.objects.using("primary").bulk_create([make(7)])
    invalidate(Item, tenant="t1")
    assert ids(p.execute(tenant="t1")) == [7, 1]


@PRIMARY
def test_concurrent_readers_never_see_a_committed_write_undone(redis):
    """Readers in other threads, writer in this one: once a write has committed, no read that
    starts afterwards returns the old value."""
    seed(make(1))
    p = primary_pipeline()
    committed = [0]
    errors: list[str] = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                floor = committed[0]
                amount = p.execute(tenant="t1").items[0].amount
                if amount < floor:
                    errors.append(f"read {amount} after {floor} was committed")
        finally:
            close_old_connections()
            connections.close_all()

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        row = Item.objects.using("primary").get(pk=1)
        for amount in range(2, 40):
            row.amount = amount
            row.save()
            committed[0] = amount
            time.sleep(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:5]


def shared_pipeline() -> Pipeline:
    """The pipeline both processes declare (a project's pipelines module): declaring it makes
    the process watch Item for writes."""
    return Pipeline("cache-redis-shared", model=Item, tenant_field="tenant", timeout=5.0,
                    ordering=("-created_at", "-id"), register=False,
                    fetchers=[CachedFetcher(ORMFetcher("primary"), ttl=300, cache="redis")])


WRITER = """
import os, sys, django
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
django.setup()
from django.conf import settings
from django.db import connections
from datapipe_django.conf import datapipe_settings
settings.DATAPIPE = {**settings.DATAPIPE, "CACHE": "redis", "CACHE_KEY_PREFIX": sys.argv[2]}
datapipe_settings.reload()
connections["primary"].settings_dict["NAME"] = sys.argv[1]
from tests.test_redis_cache import shared_pipeline
shared_pipeline()
from tests.testapp.models import Item
row = Item.objects.using("primary").get(pk=1)
row.name = "written by another process"
row.save()
print("ok")
"""


@PRIMARY
def test_a_write_in_another_process_invalidates(redis):
    require_alias("primary")
    seed(make(1), make(2))
    shared = shared_pipeline()
    assert shared.execute(tenant="t1").items[1].name == "n1"
    assert outcome(shared.execute(tenant="t1")) == "hit"
    name = connections["primary"].settings_dict["NAME"]
    out = subprocess.run([sys.executable, "-c", WRITER, name,
                          datapipe_settings.CACHE_KEY_PREFIX], cwd=ROOT, env=os.environ.copy(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = shared.execute(tenant="t1")
    assert result.items[1].name == "written by another process"
    assert outcome(result) == "miss"


# -- tenant isolation --------------------------------------------------------------------------

TENANTS = ["a", "A", "a ", "1", "01", "", "ä"]
STATUSES = [None, "queued", "processed"]

row_strategy = st.lists(
    st.tuples(st.sampled_from(TENANTS), st.sampled_from(["queued", "processed"]),
              st.integers(0, 5)),
    max_size=20,
)
request_strategy = st.lists(
    st.tuples(st.sampled_from(TENANTS), st.sampled_from(STATUSES), st.integers(1, 4),
              st.integers(0, 3), st.sampled_from([None, "private"])),
    min_size=1, max_size=12,
)


@pytest.mark.django_db(transaction=True)
@hypothesis_settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
@given(values=row_strategy, requests=request_strategy)
def test_one_tenants_cached_page_is_never_served_to_another(redis, values, requests):
    Item.objects.all().delete()
    Item.objects.bulk_create([make(i + 1, tenant=t, status=s, minutes=m)
                              for i, (t, s, m) in enumerate(values)])
    invalidate(Item)
    p = Pipeline("cache-tenants", model=Item, filterset_class=ItemFilterSet,
                 tenant_field="tenant", ordering=("-created_at", "-id"), timeout=None,
                 register=False, fetchers=[CachedFetcher(ORMFetcher("default"), ttl=300)])
    rows = list(Item.objects.all())
    for tenant, status, limit, offset, auth_type in requests * 2:  # the second pass hits
        filters = {"status": status} if status else {}
        result = p.execute(PipelineRequest(tenant=tenant, filters=filters, limit=limit,
                                           offset=offset, auth_type=auth_type))
        assert all(row.tenant == tenant for row in result.items)
        wanted = sorted((r for r in rows if r.tenant == tenant
                         and (status is None or r.status == status)),
                        key=lambda r: (r.created_at, r.pk), reverse=True)
        assert ids(result) == [r.pk for r in wanted][offset:offset + limit]


# -- concurrency -------------------------------------------------------------------------------

def test_concurrent_misses_on_redis_compute_once(redis):
    source = SlowFetcher([make(i) for i in range(1, 6)], name="slow", delay=0.3)
    p = Pipeline("cache-stampede", model=Item, tenant_field="tenant", timeout=5.0,
                 ordering=("-created_at", "-id"), register=False,
                 fetchers=[CachedFetcher(source, ttl=30)])
    barrier = threading.Barrier(16)
    results, errors = [], []

    def call():
        try:
            barrier.wait()
            results.append(p.execute(tenant="t1", limit=3))
        except Exception as exc:
            errors.append(exc)

    run_threads(call, 16)
    assert not errors
    assert len(source.calls) == 1
    assert [ids(r) for r in results] == [[5, 4, 3]] * 16
    assert sorted(outcome(r) for r in results) == ["hit"] * 15 + ["miss"]
    assert p.fetchers[0].stats["waits"] == 15


# -- outages -----------------------------------------------------------------------------------

@PRIMARY
def test_a_slow_redis_costs_one_socket_timeout_then_is_skipped(redis, caplog, monkeypatch):
    # The breaker's clock moves only when this test says: the ten requests all fall in the
    # open circuit however long they take.
    clock = [1000.0]
    monkeypatch.setattr(breaker_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    seed(*(make(i) for i in range(1, 4)))
    p = primary_pipeline()
    p.execute(tenant="t1")
    assert outcome(p.execute(tenant="t1")) == "hit"
    redis_cli("CLIENT", "PAUSE", "1500", "ALL")  # every command waits 1.5 s
    try:
        timings = []
        for _ in range(10):
            start = time.monotonic()
            result = p.execute(tenant="t1")
            timings.append(time.monotonic() - start)
            assert ids(result) == [3, 2, 1] and outcome(result) == "bypass"
        socket_timeout = django_settings.CACHES["redis"]["OPTIONS"]["SOCKET_TIMEOUT"]
        assert socket_timeout <= timings[0] < socket_timeout + 1.0  # one socket timeout...
        assert p.fetchers[0].stats["errors"] == 1  # ...then the circuit is open: no Redis call
        assert max(timings[1:]) < 1.0
    finally:
        redis_cli("CLIENT", "UNPAUSE")
    assert "is unavailable" in caplog.text and "TimeoutError" in caplog.text
    clock[0] += 0.6  # past CACHE_BREAKER_SECONDS: the next request probes Redis
    deadline = time.monotonic() + 5
    while outcome(p.execute(tenant="t1")) == "bypass" and time.monotonic() < deadline:
        clock[0] += 0.6
        time.sleep(0.1)
    assert outcome(p.execute(tenant="t1")) == "hit"


def services(command: str) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), command], check=True,
                   capture_output=True, timeout=120)


@PRIMARY
def test_redis_stopped_during_a_run(redis, caplog):
    """Redis goes away under a running reader and a writer, then comes back: every response
    is right, none is an error, none waits for Redis, and the cache is used again after."""
    caplog.set_level(logging.WARNING, "datapipe_django.cache")
    seed(*(make(i) for i in range(1, 9)))
    p = primary_pipeline()
    cached = p.fetchers[0]
    p.execute(tenant="t1", limit=5)
    assert outcome(p.execute(tenant="t1", limit=5)) == "hit"

    before = [(i, f"n{i}") for i in range(8, 3, -1)]
    after = [(8, "written while Redis was down"), *before[1:]]
    writing_from = written_at = float("inf")
    log: list[tuple[float, float, str, list[tuple[int, str]]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                start = time.monotonic()
                result = p.execute(tenant="t1", limit=5)
                log.append((start, time.monotonic(), outcome(result),
                            [(r.pk, r.name) for r in result.items]))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        time.sleep(0.3)
        services("stop-redis")
        time.sleep(1.0)
        row = Item.objects.using("primary").get(pk=8)
        row.name = "written while Redis was down"
        writing_from = time.monotonic()
        row.save()
        written_at = time.monotonic()
        time.sleep(1.0)
    finally:
        services("start-redis")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if log and log[-1][2] in {"hit", "miss"} and log[-1][0] > written_at:
                break
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()

    assert not errors, errors
    outcomes = [o for _, _, o, _ in log]
    assert "bypass" in outcomes and outcomes[-1] in {"hit", "miss"}
    for start, end, _outcome, page in log:
        if end < writing_from:  # ended before the write began
            assert page == before
        elif start > written_at:  # began after it was committed
            assert page == after, (start - written_at, _outcome)
        else:
            assert page in (before, after)
    assert max(end - start for start, end, _, _ in log) < 1.0
    assert cached.stats["errors"] >= 1 and cached.stats["bypasses"] >= 3
    assert "Cache 'redis' is unavailable" in caplog.text
    assert "reachable again" in caplog.text
    assert not generations._pending.get("redis")
    final = p.execute(tenant="t1", limit=5)
    assert [(r.pk, r.name) for r in final.items] == after and outcome(final) == "hit"
    bypass_times = sorted(end - start for start, end, o, _ in log if o == "bypass")
    print(f"\n{len(log)} requests during the run: " + ", ".join(
        f"{o}={outcomes.count(o)}" for o in ("hit", "miss", "bypass"))
        + f"; bypasses took median {bypass_times[len(bypass_times) // 2] * 1e3:.1f} ms, "
          f"max {bypass_times[-1] * 1e3:.1f} ms; cache errors {cached.stats['errors']}")
