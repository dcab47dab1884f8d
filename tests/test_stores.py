"""Isolation between stores (datapipe_django.stores), on the real servers.

A store that is down costs the others nothing: a read of it fails at once once it is known to
be down, waiting for a connection (psycopg's pool included) is bounded by the deadline, an
enricher reads a row's relations from a database that mirrors the row's own, and the store is
read again within a second of coming back. The outage tests stop the real PostgreSQL primary.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import OperationalError, connections
from django.test import override_settings

from datapipe_django import Pipeline
from datapipe_django.enrichers import PrefetchEnricher
from datapipe_django.errors import SourceUnavailable
from datapipe_django.fetchers import CachedFetcher, ORMFetcher
from datapipe_django.stores import get_store_guard, is_connection_failure, mirrors, use_store
from tests.conftest import require_alias
from tests.testapp.models import Item, Owner
from tests.topology import FAULT_FLAG, services, stopped, wait_for_replay

BASE = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
TOPOLOGY = {"PRIMARY": "primary", "REPLICAS": ["replica"], "ARCHIVES": ["archive"]}
#: What "a few milliseconds past the deadline" may be on a shared two-core machine.
SLACK = 0.05


def make(pk: int, owner: int | None = None) -> Item:
    return Item(id=pk, tenant="t1", name=f"n{pk}", status="queued", amount=pk, owner_id=owner,
                created_at=BASE + dt.timedelta(minutes=pk), day=BASE.date())


def wait_closed(alias: str, within: float) -> float:
    """Seconds until the breaker of ``alias`` is closed (fails past ``within``)."""
    start = time.monotonic()
    while get_store_guard(alias).is_open:
        assert time.monotonic() - start < within, f"{alias} still refused after {within}s"
        time.sleep(0.005)
    return time.monotonic() - start


def test_mirrors_are_the_primary_and_its_replicas():
    with override_settings(DATAPIPE={"PRIMARY": "p", "REPLICAS": ["r1", "r2"],
                                     "ARCHIVES": ["a"]}):
        assert mirrors("p") == ["r1", "r2"]
        assert mirrors("r2") == ["p", "r1"]
        assert mirrors("a") == [] and mirrors("other") == []


@pytest.mark.django_db(databases=["default", "primary"], transaction=True)
def test_a_statement_timeout_is_not_an_outage():
    require_alias("primary")
    guard = get_store_guard("primary")
    with (pytest.raises(OperationalError) as info, use_store("primary", 0.05) as connection,
          connection.cursor() as cursor):
        cursor.execute("SELECT pg_sleep(2)")
    assert not is_connection_failure(info.value)
    assert not guard.is_open
    with use_store("primary", 1.0) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1")  # the store is still read


def test_a_refused_connection_opens_the_breaker_and_later_reads_fail_at_once(down_alias):
    guard = get_store_guard(down_alias)
    if not guard.is_open:
        with pytest.raises(OperationalError) as info, use_store(down_alias, 5.0) as connection:
            connection.ensure_connection()
        assert is_connection_failure(info.value)
    assert guard.is_open and guard.failures >= 1
    start = time.perf_counter()
    with pytest.raises(SourceUnavailable), use_store(down_alias, 5.0):
        pass
    assert time.perf_counter() - start < 0.005


# -- the primary stopped -------------------------------------------------------------------------

OUTAGE_DBS = ["default", "primary", "replica", "pooled", "archive"]


@pytest.fixture
def world():
    """Items 1-8 with owners on the primary (so on the standby, and on its pooled alias), and
    the same items in the archive."""
    for alias in ("primary", "replica", "pooled", "archive"):
        require_alias(alias)
    for alias in ("primary", "archive"):
        Owner.objects.using(alias).bulk_create([Owner(id=i, name=f"o{i}") for i in (1, 2)])
        Item.objects.using(alias).bulk_create([make(i, owner=1 + i % 2) for i in range(1, 9)])
    wait_for_replay()
    with override_settings(DATAPIPE=TOPOLOGY):
        yield
    for alias in ("primary", "pooled", "replica", "archive"):
        get_store_guard(alias).close()


@pytest.mark.outage
@pytest.mark.django_db(databases=OUTAGE_DBS, transaction=True)
def test_a_pooled_store_that_is_down_costs_no_more_than_the_deadline_and_recovers_at_once(
        world):
    pipeline = Pipeline("stores-pooled", model=Item, tenant_field="tenant", timeout=1.0,
                        register=False, ordering=("-created_at", "-id"),
                        fetchers=[ORMFetcher("pooled"), ORMFetcher("archive")])
    assert pipeline.execute(tenant="t1").source == "pooled"
    FAULT_FLAG.touch()
    try:
        services("stop-postgres")
        for _ in range(5):
            start = time.monotonic()
            result = pipeline.execute(tenant="t1")
            elapsed = time.monotonic() - start
            # psycopg's pool alone would wait its 30 s timeout for a connection.
            assert elapsed <= 1.0 + SLACK, elapsed
            assert result.source == "archive" and len(result.items) == 8
        assert get_store_guard("pooled").is_open
        start = time.monotonic()
        pipeline.execute(tenant="t1")
        assert time.monotonic() - start < 0.2  # refused at once, no waiting
        services("start-postgres")
        back_at = time.monotonic()  # accepting connections
        wait_closed("pooled", within=1.0)
        result = pipeline.execute(tenant="t1")
        assert result.source == "pooled", result.attempts
        assert time.monotonic() - back_at <= 1.0
    finally:
        services("start-postgres")
        services("start-replica")
        for alias in connections:
            connections[alias].close()
        FAULT_FLAG.unlink(missing_ok=True)


@pytest.mark.outage
@pytest.mark.django_db(databases=OUTAGE_DBS, transaction=True)
def test_with_the_primary_down_cached_rows_are_expanded_from_the_standby(world):
    """The issue's starvation: cached primary rows whose relations live on the dead primary.
    The standby holds the same rows: every expansion is served from it, within the deadline,
    even with many more concurrent requests than the shared pool has threads."""
    pipeline = Pipeline(
        "stores-mirror", model=Item, tenant_field="tenant", timeout=1.0, register=False,
        ordering=("-created_at", "-id"), parallel_enrichment=True,
        fetchers=[CachedFetcher(ORMFetcher("primary"), ttl=300, cache="default")],
        enrichers=[PrefetchEnricher("owner")],
    )
    warm = pipeline.execute(tenant="t1", expand={"owner"})
    assert warm.source == "primary" and not warm.errors
    with stopped("postgres"):
        outcomes: list[tuple[float, list, list]] = []
        lock = threading.Lock()

        def one() -> None:
            start = time.monotonic()
            result = pipeline.execute(tenant="t1", expand={"owner"})
            owners = [(i.pk, i.owner.name, i.owner._state.db) for i in result.items]
            try:
                with lock:
                    outcomes.append((time.monotonic() - start, result.errors, owners))
            finally:
                for alias in connections:
                    connections[alias].close()

        threads = [threading.Thread(target=one) for _ in range(24)]  # MAX_WORKERS is 8
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(outcomes) == 24
    for elapsed, errors, owners in outcomes:
        assert elapsed <= 1.0 + SLACK, elapsed
        assert errors == []
        assert [(pk, name) for pk, name, _ in owners] == [
            (pk, f"o{1 + pk % 2}") for pk in range(8, 0, -1)]
        assert {db for _, _, db in owners} == {"replica"}
