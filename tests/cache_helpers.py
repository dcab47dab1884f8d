"""Rows, pipelines, stand-in caches and the per-test cache isolation shared by the tests of the
cache (tests/test_cache_*.py, tests/test_fetchers_cache.py, tests/test_redis_*.py). Outages are
simulated with :class:`FlakyCache` (local memory that raises ``ConnectionRefusedError`` on
demand); :class:`BuggyCache` is a client with a bug (never swallowed)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.core.cache.backends.locmem import LocMemCache

from datapipe_django import Pipeline, PipelineRequest
from datapipe_django.cache import generations
from datapipe_django.cache import guard as cache_guard
from datapipe_django.fetchers import FetchRequest
from datapipe_django.paging import Ordering
from datapipe_django.specs import Eq
from datapipe_django.test import InMemoryFetcher
from tests.testapp.models import Item

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parent.parent


def make(pk, *, tenant="t1", minutes=None, name=None, amount=None, status="queued",
         owner=None, category=None) -> Item:
    return Item(id=pk, tenant=tenant, name=name or f"n{pk}", status=status,
                amount=pk if amount is None else amount,
                created_at=BASE + dt.timedelta(minutes=pk if minutes is None else minutes),
                day=BASE.date(), owner=owner, category=category)


def pipeline(*fetchers, name="cache-test", **kwargs) -> Pipeline:
    kwargs.setdefault("timeout", None)
    kwargs.setdefault("tenant_field", "tenant")
    return Pipeline(name, model=Item, fetchers=list(fetchers), ordering=("-created_at", "-id"),
                    ordering_fields=("created_at", "amount", "name"), register=False, **kwargs)


def ids(result) -> list[int]:
    return [row.pk for row in result.items]


def outcome(result) -> str:
    return result.attempts[0].meta.get("cache", "")


class SlowFetcher(InMemoryFetcher):
    """An in-memory source that takes ``delay`` seconds (``calls`` counts its fetches)."""

    def __init__(self, rows, *, delay=0.0, **kwargs):
        super().__init__(rows, **kwargs)
        self.delay = delay

    def fetch(self, request):
        time.sleep(self.delay)
        return super().fetch(request)


class FlakyCache(LocMemCache):
    """Local memory that refuses connections while ``FlakyCache.down`` is true."""

    down = False
    calls = 0

    def _check(self):
        type(self).calls += 1
        if type(self).down:
            raise ConnectionRefusedError(111, "Connection refused")

    def get_many(self, *args, **kwargs):
        self._check()
        return super().get_many(*args, **kwargs)

    def set_many(self, *args, **kwargs):
        self._check()
        return super().set_many(*args, **kwargs)

    def add(self, *args, **kwargs):
        self._check()
        return super().add(*args, **kwargs)

    def set(self, *args, **kwargs):
        self._check()
        return super().set(*args, **kwargs)


class BuggyCache(LocMemCache):
    """A cache whose client has a bug: not an outage, so it must not be swallowed."""

    def get_many(self, *args, **kwargs):
        raise TypeError("bug in the cache client")


@pytest.fixture(autouse=True)
def isolated_cache(settings):
    """A fresh key prefix per test (entries of other tests are never seen), a closed circuit
    breaker, no held-back invalidations; ``FlakyCache`` up."""
    settings.DATAPIPE = {**settings.DATAPIPE, "CACHE_KEY_PREFIX": f"t{uuid.uuid4().hex[:10]}"}
    settings.CACHES = {**settings.CACHES,
                       "flaky": {"BACKEND": "tests.cache_helpers.FlakyCache", "LOCATION": "flaky"},
                       "buggy": {"BACKEND": "tests.cache_helpers.BuggyCache", "LOCATION": "buggy"}}
    FlakyCache.down, FlakyCache.calls = False, 0
    cache_guard._guards.clear()
    generations._pending.clear()
    yield
    FlakyCache.down = False
    cache_guard._guards.clear()
    generations._pending.clear()


def run_threads(target, count: int) -> None:
    """``target()`` on ``count`` threads at once; returns when all have ended."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def position(cursor: str) -> str:
    """The payload of a signed cursor, without the signing time and signature."""
    return cursor.rsplit(":", 2)[0]


def fetch_request(**changes) -> FetchRequest:
    base = FetchRequest(request=PipelineRequest(auth_type="public"), model=Item,
                        spec=Eq("status", "queued"),
                        ordering=Ordering.for_model(Item, ["-created_at"]), size=11,
                        tenant_field="tenant", tenant="t1", pipeline="keys")
    return dataclasses.replace(base, **changes)
