"""Primary, real streaming standby and archive: replica lag, the router, read-your-writes."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import connections, transaction
from django.test import override_settings

from datapipe_django import FallbackMode, Pipeline
from datapipe_django.conf import datapipe_settings
from datapipe_django.fetchers import ORMFetcher
from datapipe_django.pinning import use_primary
from datapipe_django.replicas import forget_replica_status, replica_status
from datapipe_django.routers import PrimaryReplicaRouter
from datapipe_django.test import InMemoryFetcher
from tests.conftest import require_alias
from tests.testapp.models import Item
from tests.topology import set_replay_paused, wait_for_replay

BASE = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
# The default REPLICA_MAX_LAG (5 s) and REPLICA_CHECK_INTERVAL (1 s): the replica guarantees
# are proved at the settings a user gets.
TOPOLOGY = {"PRIMARY": "primary", "REPLICAS": ["replica"]}
MAX_LAG = 5.0


def make(pk, minutes=0):
    return Item(id=pk, tenant="t1", name=f"n{pk}", status="queued", amount=pk,
                created_at=BASE + dt.timedelta(minutes=minutes or pk), day=BASE.date())


@pytest.fixture
def standby():
    """The real primary + standby, with a fresh health cache, replay resumed afterwards."""
    require_alias("primary")
    require_alias("replica")
    forget_replica_status()
    with override_settings(DATAPIPE=TOPOLOGY):
        yield
    set_replay_paused(False)
    forget_replica_status()


def pipeline(fallback=FallbackMode.SEQUENTIAL):
    return Pipeline("topology", model=Item, tenant_field="tenant", timeout=5.0, register=False,
                    ordering=("-created_at",), fallback=fallback,
                    fetchers=[ORMFetcher("replica"), ORMFetcher("primary")])


@pytest.mark.django_db(databases=["default", "primary", "replica"], transaction=True)
def test_a_caught_up_standby_serves_reads(standby):
    Item.objects.using("primary").bulk_create([make(1), make(2)])
    wait_for_replay()
    status = replica_status("replica")
    assert status.healthy and status.lag == 0.0
    result = pipeline().execute(tenant="t1")
    assert result.source == "replica"
    assert [r.pk for r in result.items] == [2, 1]
    assert {r._state.db for r in result.items} == {"replica"}


@pytest.mark.django_db(databases=["default", "primary", "replica"], transaction=True)
def test_after_a_quiet_spell_a_lagging_standby_is_measured_again_and_skipped(standby):
    assert datapipe_settings.REPLICA_MAX_LAG == MAX_LAG  # the default
    Item.objects.using("primary").create(**_fields(make(1)))
    wait_for_replay()
    first = pipeline().execute(tenant="t1")
    assert first.source == "replica"  # measured healthy, and read
    set_replay_paused(True)
    Item.objects.using("primary").create(**_fields(make(2)))
    # A quiet spell: nothing asks for the replica's health until the last measurement plus
    # its lag is past REPLICA_MAX_LAG. The standby is now further behind than that.
    time.sleep(MAX_LAG + 0.5)
    result = pipeline().execute(tenant="t1")
    assert [r.pk for r in result.items] == [2, 1]
    assert result.source == "primary"
    declined = next(a for a in result.attempts if a.source == "replica")
    assert declined.outcome == "declined" and "REPLICA_MAX_LAG" in declined.reason
    assert PrimaryReplicaRouter().db_for_read(Item) == "primary"
    # Caught up: read again at once (no waiting for a check interval, no cache cleared).
    set_replay_paused(False)
    wait_for_replay()
    again = pipeline().execute(tenant="t1")
    assert again.source == "replica" and [r.pk for r in again.items] == [2, 1]
    assert PrimaryReplicaRouter().db_for_read(Item) == "replica"


@pytest.mark.django_db(databases=["default", "primary", "replica"], transaction=True)
def test_a_standby_is_never_read_past_the_bound_under_steady_traffic(standby):
    """Requests every 50 ms while replay is paused: every read of the standby happens while
    its last measured lag plus the measurement's age is within REPLICA_MAX_LAG, and the first
    read after the standby fell behind by more than that goes to the primary."""
    first_answer = pipeline(FallbackMode.FIRST_SUCCESS)  # the replica's page, when it is read
    Item.objects.using("primary").create(**_fields(make(1)))
    wait_for_replay()
    assert first_answer.execute(tenant="t1").source == "replica"
    set_replay_paused(True)
    paused_at = time.monotonic()
    Item.objects.using("primary").create(**_fields(make(2)))
    sources = []
    while time.monotonic() - paused_at < MAX_LAG + 1.5:
        asked = time.monotonic()
        result = first_answer.execute(tenant="t1")
        sources.append((asked - paused_at, result.source, [r.pk for r in result.items]))
        time.sleep(0.05)
    for behind, source, ids in sources:
        if source == "replica":
            # Stale, but never by more than the bound: the write is at most MAX_LAG old.
            assert ids == [1] and behind <= MAX_LAG + 0.1, (behind, source)
        else:
            assert source == "primary" and ids == [2, 1]
    assert sources[0][1] == "replica"  # the measurement taken before the pause still held
    assert sources[-1][1] == "primary"


def _fields(item):
    return {f.attname: getattr(item, f.attname) for f in Item._meta.concrete_fields}


def test_an_unreachable_replica_is_unhealthy_and_declined(down_alias):
    forget_replica_status()
    with override_settings(DATAPIPE={"REPLICAS": [down_alias]}):
        status = replica_status(down_alias)
        assert not status.healthy and status.reason.startswith("unreachable")
        p = Pipeline("topology-down", model=Item, tenant_field="tenant", register=False,
                     fetchers=[ORMFetcher(down_alias), InMemoryFetcher([make(1)], name="m")])
        result = p.execute(tenant="t1")
        assert result.source == "m"
        attempt = next(a for a in result.attempts if a.source == down_alias)
        assert attempt.outcome == "declined" and "unreachable" in attempt.reason
    forget_replica_status()


@pytest.mark.django_db(databases=["default", "archive"])
def test_a_mariadb_that_replicates_nothing_reports_no_lag():
    # SHOW SLAVE STATUS on the real MariaDB, which is no replica: an empty answer, no lag.
    require_alias("archive")
    forget_replica_status()
    with override_settings(DATAPIPE={"REPLICAS": ["archive"], "REPLICA_MAX_LAG": 0.5}):
        status = replica_status("archive")
    forget_replica_status()
    assert status.healthy and status.lag == 0.0 and status.reason == ""


def _replication(statement):
    with connections["archive_replica"].cursor() as cursor:
        cursor.execute(statement)


def _on_replica(pk, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if Item.objects.using("archive_replica").filter(pk=pk).exists():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.django_db(databases=["default", "archive", "archive_replica"], transaction=True)
def test_a_mariadb_replica_that_stops_applying_is_skipped_until_it_catches_up():
    require_alias("archive")
    require_alias("archive_replica")
    p = Pipeline("topology-mysql", model=Item, tenant_field="tenant", register=False,
                 fetchers=[ORMFetcher("archive_replica"), ORMFetcher("archive")])
    forget_replica_status()
    with override_settings(DATAPIPE={"REPLICAS": ["archive_replica"]}):
        try:
            Item.objects.using("archive").create(**_fields(make(1)))
            assert _on_replica(1)
            status = replica_status("archive_replica")
            assert status.healthy and status.lag is not None and status.lag <= 1.0  # whole seconds
            assert p.execute(tenant="t1").source == "archive_replica"

            _replication("STOP SLAVE SQL_THREAD")  # received, no longer applied
            Item.objects.using("archive").create(**_fields(make(2)))
            # The status measured a moment ago still holds (lag 0 plus its age is within
            # REPLICA_MAX_LAG); once the bound is past, the replica is measured again.
            time.sleep(MAX_LAG + 0.2)
            status = replica_status("archive_replica")
            assert not status.healthy and status.reason == "lag unknown"
            result = p.execute(tenant="t1")  # the fresh row, from the archive itself
            assert result.source == "archive" and [i.pk for i in result.items] == [1, 2]
            reasons = {a.source: a.reason for a in result.attempts}
            assert "lag unknown" in reasons["archive_replica"]
        finally:
            _replication("START SLAVE SQL_THREAD")
        assert _on_replica(2)
        assert replica_status("archive_replica").healthy  # measured again at once
        assert p.execute(tenant="t1").source == "archive_replica"
    forget_replica_status()


@pytest.mark.django_db(databases=["default", "primary", "replica"], transaction=True)
def test_router_reads_from_the_replica_and_writes_to_the_primary(standby):
    router = PrimaryReplicaRouter()
    assert router.db_for_read(Item) == "replica"
    assert router.db_for_write(Item) == "primary"
    with use_primary():
        assert router.db_for_read(Item) == "primary"
    with transaction.atomic(using="primary"):
        assert router.db_for_read(Item) == "primary"
    assert router.allow_migrate("replica", "testapp") is False
    assert router.allow_migrate("primary", "testapp") is None
    a, b = make(1), make(2)
    a._state.db, b._state.db = "primary", "replica"
    assert router.allow_relation(a, b) is True
    b._state.db = "archive"
    assert router.allow_relation(a, b) is None


@pytest.mark.django_db(databases=["default", "primary", "replica"], transaction=True)
def test_use_primary_makes_the_replica_fetcher_decline_even_in_worker_threads(standby):
    Item.objects.using("primary").bulk_create([make(1)])
    wait_for_replay()
    p = Pipeline("topology-pin", model=Item, tenant_field="tenant", register=False,
                 fallback=FallbackMode.PARALLEL,
                 fetchers=[ORMFetcher("replica"), ORMFetcher("primary")])
    with use_primary():
        result = p.execute(tenant="t1")
    assert result.source == "primary"
    reasons = {a.source: a.reason for a in result.attempts}
    assert "read-your-writes" in reasons["replica"]
    unpinned = p.execute(tenant="t1")
    # The replica holds what its primary holds: the primary is read only in its place.
    assert unpinned.source == "replica"
    assert {a.source for a in unpinned.attempts if a.outcome == "ok"} == {"replica"}
    outcome = {a.source: (a.outcome, a.reason) for a in unpinned.attempts}
    assert outcome["primary"] == ("not_needed", "replica, a mirror of primary, answered")


@pytest.mark.django_db(databases=["default", "primary", "replica"], transaction=True)
def test_a_standby_that_is_not_streaming_while_its_primary_is_up_is_not_read(standby):
    """The standby's WAL receiver reconnects after its primary restarted (or lost it): until it
    streams again it may lack what the primary wrote meanwhile, though it has replayed all it
    received. Its lag is then unknown, and with the primary up it is not read."""
    from datapipe_django.replicas import _measure, _postgresql_lag

    Item.objects.using("primary").create(**_fields(make(1)))
    wait_for_replay()
    with connections["primary"].cursor() as cursor:  # the primary drops its WAL sender
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
    seen = []
    end = time.monotonic() + 3
    while time.monotonic() < end and None not in seen:
        seen.append(_postgresql_lag(connections["replica"]))
        time.sleep(0.005)
    assert None in seen, "the standby never reported a lost WAL receiver"
    # Measured while not streaming (if it reconnected in between, measured as it is).
    measured = _measure("replica", 1.0)
    if measured.lag is None:
        assert not measured.healthy and measured.reason == "lag unknown"
    wait_for_replay()
    deadline = time.monotonic() + 5
    while _postgresql_lag(connections["replica"]) is None:  # streaming again
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert _measure("replica", 1.0).healthy
