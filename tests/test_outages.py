"""Real outages: the tests stop and restart the real servers (scripts/services.sh).

Through the REST endpoint a pipeline reads primary → standby → archive. With each server
down in turn the endpoint still answers 200 with the right rows (or a clean 503 when nothing
is left), never a 500 and never a wrong row, and it recovers when the servers come back,
without a process restart.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from datapipe_django.replicas import forget_replica_status
from tests.conftest import require_alias
from tests.testapp.models import Item
from tests.topology import services, set_replay_paused, stopped, wait_for_replay

pytestmark = [
    pytest.mark.outage,
    pytest.mark.django_db(databases=["default", "primary", "replica", "archive"],
                          transaction=True),
]

BASE = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
TOPOLOGY = {"PRIMARY": "primary", "REPLICAS": ["replica"], "ARCHIVES": ["archive"],
            "TIMEOUT": 5.0}


def make(pk: int, tenant: str = "t1") -> Item:
    return Item(id=pk, tenant=tenant, name=f"n{pk}", status="queued", amount=pk,
                created_at=BASE + dt.timedelta(minutes=pk), day=BASE.date())


@pytest.fixture
def world():
    """Rows 1-6 on the primary (and so on the standby), rows 1-10 in the archive."""
    for alias in ("primary", "replica", "archive"):
        require_alias(alias)
    Item.objects.using("primary").bulk_create([make(i) for i in range(1, 7)]
                                              + [make(50, tenant="t2")])
    Item.objects.using("archive").bulk_create([make(i) for i in range(1, 11)]
                                              + [make(60, tenant="t2")])
    wait_for_replay()
    forget_replica_status()
    with override_settings(DATAPIPE=TOPOLOGY):
        yield
    forget_replica_status()


@pytest.fixture
def client():
    c = APIClient()
    c.credentials(HTTP_X_TENANT="t1")
    return c


def page(client, **params):
    response = client.get("/v1/outage-items", {"limit": 20, **params})
    assert response.status_code == 200, response.content
    body = response.json()
    assert all(row["tenant"] == "t1" for row in body["items"])
    return [row["id"] for row in body["items"]], response["X-Datapipe-Source"]


ALL = list(range(10, 0, -1))


def test_healthy_topology_reads_the_standby_then_the_archive(world, client):
    assert page(client) == (ALL, "replica,archive")
    assert client.get("/v1/outage-items/3").json()["id"] == 3


def test_primary_down(world, client):
    with stopped("postgres"):
        assert page(client) == (ALL, "replica,archive")
        assert client.get("/v1/outage-items/3").status_code == 200
        assert client.get("/v1/outage-items/9").json()["id"] == 9
        assert client.get("/v1/outage-items/50").status_code == 404
    assert page(client) == (ALL, "replica,archive")


def test_standby_down(world, client):
    with stopped("replica"):
        ids, source = page(client)
        assert ids == ALL and source == "primary,archive"
        response = client.get("/v1/outage-items/4")
        assert response.status_code == 200 and response["X-Datapipe-Source"] == "primary"
    # Back within a second, without clearing anything: it is re-measured as it comes back.
    back = time.monotonic()
    while (answer := page(client)) != (ALL, "replica,archive"):
        assert answer[0] == ALL  # meanwhile the primary serves, complete
        assert time.monotonic() - back < 1.0, "the standby is not read again"
        time.sleep(0.01)


def test_archive_down(world, client):
    with stopped("mariadb"):
        response = client.get("/v1/outage-items", {"limit": 20})
        assert response.status_code == 200
        assert [r["id"] for r in response.json()["items"]] == list(range(6, 0, -1))
        assert response["X-Datapipe-Source"] == "replica"
        assert response["X-Datapipe-Unavailable"] == "archive"
        archive_only = client.get("/v1/outage-archive")
        assert archive_only.status_code == 503
        assert archive_only["Retry-After"] == "1"
        assert archive_only.json()["code"] == "sources_unavailable"
    assert client.get("/v1/outage-archive", {"limit": 3}).status_code == 200


def test_everything_down_then_back(world, client):
    with stopped("mariadb"), stopped("replica"), stopped("postgres"):
        response = client.get("/v1/outage-items")
        assert response.status_code == 503
        assert client.get("/v1/outage-items/3").status_code == 503
    # Same process, same connections: the service recovers by itself.
    assert page(client) == (ALL, "replica,archive")
    assert client.get("/v1/outage-items/7").json()["id"] == 7


def test_the_view_connections_recover_after_a_restart_without_closing_them(world, client):
    assert page(client)[0] == ALL
    services("stop-mariadb")
    services("start-mariadb")
    # The archive connection of this thread is now dead; the first read fails over and
    # drops it, the next one reconnects.
    first = page(client)
    second = page(client)
    assert first[0] in (ALL, list(range(6, 0, -1)))
    assert second == (ALL, "replica,archive")


def test_primary_down_right_after_a_lag_episode_reads_the_caught_up_standby(world, client):
    set_replay_paused(True)
    try:
        Item.objects.using("primary").create(**{f.attname: getattr(make(7), f.attname)
                                                for f in Item._meta.concrete_fields})
        time.sleep(5.5)  # past the default REPLICA_MAX_LAG: the standby is measured as behind
        ids, source = page(client)
        assert ids == ALL and "replica" not in source.split(",")
    finally:
        set_replay_paused(False)
    wait_for_replay()
    with stopped("postgres"):
        # Measured again at its first use: caught up, so it serves (no cache cleared).
        assert page(client) == (ALL, "replica,archive")
