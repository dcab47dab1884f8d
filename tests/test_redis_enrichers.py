"""BatchEnricher(cache_ttl=...): service values kept in the real Redis across requests.

A key seen recently costs no call; tenants and auth types never share a value (a property
test); only JSON values are cached, so a hit equals a call; a missing key is remembered as
None; the TTL bounds staleness; a dead cache is a bypass, never an error.
"""

from __future__ import annotations

import decimal
import threading
import time

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from datapipe_django.cache import guard as cache_guard
from datapipe_django.conf import datapipe_settings
from datapipe_django.enrichers import BatchEnricher
from datapipe_django.enrichers.base import EnrichContext
from tests.cache_helpers import isolated_cache
from tests.conftest import require_cache
from tests.test_redis_cache import redis_to_ourselves

# Autouse fixtures: a fresh key prefix and closed breakers; no other run pausing Redis meanwhile.
__all__ = ["isolated_cache", "redis_to_ourselves"]

pytestmark = pytest.mark.redis


class Service:
    """A stand-in for a remote service: records every batch it is asked for."""

    requires_context = True

    def __init__(self, values=None):
        self.values = values
        self.calls: list[list] = []
        self.lock = threading.Lock()

    def __call__(self, keys, context):
        with self.lock:
            self.calls.append(list(keys))
        if self.values is not None:
            return {k: self.values[k] for k in keys if k in self.values}
        return {k: {"key": k, "tenant": context.tenant, "auth": context.auth_type}
                for k in keys}

    @property
    def asked(self) -> list:
        return [k for call in self.calls for k in call]


def context(tenant="t1", auth_type="private", pipeline="payouts") -> EnrichContext:
    return EnrichContext(pipeline=pipeline, expand=frozenset({"txn"}), tenant=tenant,
                         auth_type=auth_type)


def enricher(service, **kwargs) -> BatchEnricher:
    kwargs.setdefault("cache", "redis")
    return BatchEnricher("txn", key="txn_id", load=service, cache_ttl=60, **kwargs)


@pytest.fixture(autouse=True)
def redis_cache():
    require_cache("redis")


def test_keys_seen_by_an_earlier_request_cost_no_call():
    service = Service()
    txn = enricher(service)
    first = txn.load_many([1, 2, 3], context())
    assert service.calls == [[1, 2, 3]]
    assert txn.load_many([1, 2, 3], context()) == first
    assert service.calls == [[1, 2, 3]]
    second = txn.load_many([2, 3, 4], context())
    assert service.calls[-1] == [4]
    assert second == {k: {"key": k, "tenant": "t1", "auth": "private"} for k in (2, 3, 4)}
    stats = txn.stats.as_dict()
    assert (stats["hits"], stats["misses"]) == (5, 4)


def test_the_value_is_in_redis_as_json_under_a_key_naming_pipeline_and_enricher():
    txn = enricher(Service())
    txn.load_many([7], context())
    client = caches["redis"].client.get_client()
    prefix = datapipe_settings.CACHE_KEY_PREFIX  # one per test (isolated_cache)
    keys = [k.decode() for k in client.keys(f"*:{prefix}:enrich1:payouts:txn:*")]
    assert len(keys) == 1
    assert caches["redis"].get(keys[0].split(":", 2)[2]) == (
        '{"key":7,"tenant":"t1","auth":"private"}')


@given(requests=st.lists(
    st.tuples(st.sampled_from(["t1", "t2", "t3"]), st.sampled_from(["public", "private"]),
              st.lists(st.integers(0, 6), max_size=5)),
    min_size=1, max_size=12))
@hypothesis_settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_tenant_or_auth_type_ever_reads_another_ones_value(requests):
    cache_guard._guards.clear()
    txn = enricher(Service(), cache_version=time.monotonic_ns())  # fresh entries per example
    for tenant, auth_type, keys in requests:
        got = txn.load_many(keys, context(tenant, auth_type))
        assert got == {k: {"key": k, "tenant": tenant, "auth": auth_type} for k in keys}


def test_pipelines_and_versions_do_not_share_entries():
    service = Service()
    enricher(service).load_many([1], context(pipeline="payouts"))
    enricher(service).load_many([1], context(pipeline="refunds"))
    enricher(service, cache_version=2).load_many([1], context(pipeline="payouts"))
    assert service.calls == [[1], [1], [1]]


def test_a_missing_key_is_remembered_as_none():
    service = Service(values={1: {"amount": 5}})
    txn = enricher(service)
    assert txn.load_many([1, 2], context()) == {1: {"amount": 5}, 2: None}
    assert txn.load_many([1, 2], context()) == {1: {"amount": 5}, 2: None}
    assert service.calls == [[1, 2]]


def test_values_json_would_change_are_loaded_every_time(caplog):
    exact = {"amount": decimal.Decimal("1.10")}
    service = Service(values={1: exact, 2: {"amount": "1.10"}, 3: (1, 2)})
    txn = enricher(service)
    for _ in range(2):
        got = txn.load_many([1, 2, 3], context())
        assert got == {1: exact, 2: {"amount": "1.10"}, 3: (1, 2)}
        assert type(got[1]["amount"]) is decimal.Decimal and type(got[3]) is tuple
    assert service.calls == [[1, 2, 3], [1, 3]]
    assert sum("not JSON" in r.getMessage() for r in caplog.records) == 1  # warned once


def test_an_entry_lives_cache_ttl_seconds():
    service = Service()
    txn = BatchEnricher("txn", key="txn_id", load=service, cache="redis", cache_ttl=1)
    txn.load_many([1], context())
    txn.load_many([1], context())
    assert service.calls == [[1]]
    time.sleep(2.1)  # Redis expires whole seconds
    txn.load_many([1], context())
    assert service.calls == [[1], [1]]


def test_a_dead_cache_is_a_bypass_and_the_breaker_spares_it_the_next_calls(settings):
    settings.CACHES = {**settings.CACHES, "nowhere": {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:9/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2}}}
    service = Service()
    txn = enricher(service, cache="nowhere")
    for _ in range(3):
        assert txn.load_many([1, 2], context()) == {
            k: {"key": k, "tenant": "t1", "auth": "private"} for k in (1, 2)}
    assert len(service.calls) == 3
    stats = txn.stats.as_dict()
    assert stats["errors"] == 1 and stats["bypasses"] == 3 and stats["hits"] == 0
    assert cache_guard.get_guard("nowhere").is_open


def test_cache_ttl_must_be_positive_seconds():
    for bad in (0, -1, "60", True):
        with pytest.raises(ImproperlyConfigured, match="cache_ttl"):
            BatchEnricher("txn", key="txn_id", load=Service(), cache_ttl=bad)


def test_keys_equal_as_text_but_of_other_types_do_not_share_entries():
    service = Service()
    txn = enricher(service)
    got = txn.load_many([1, "1", 1.5, "1.5"], context())
    assert txn.load_many([1, "1", 1.5, "1.5"], context()) == got
    assert [type(v["key"]) for v in got.values()] == [int, str, float, str]
    assert service.calls == [[1, "1", 1.5, "1.5"]]
