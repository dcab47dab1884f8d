"""``PrimaryReplicaRouter`` without a standby: writes to the primary, reads to the primary when
no replica is healthy, archives never chosen, no migrations on replicas, relations within the
primary's group only. (Reads from the real standby, its lag and read-your-writes:
tests/test_replicas.py.)"""

from __future__ import annotations

import pytest
from django.test import override_settings

from datapipe_django.pinning import request_scope, use_primary
from datapipe_django.replicas import forget_replica_status
from datapipe_django.routers import PrimaryReplicaRouter
from tests.testapp.models import Item

#: ``down`` is PostgreSQL on a closed port (tests/settings.py): a replica that never answers.
TOPOLOGY = {"PRIMARY": "default", "REPLICAS": ["down"], "ARCHIVES": ["archive"]}


@pytest.fixture
def router(django_db_blocker):
    forget_replica_status()
    with override_settings(DATAPIPE=TOPOLOGY), django_db_blocker.unblock():
        yield PrimaryReplicaRouter()
    forget_replica_status()


def test_writes_go_to_the_primary(router: PrimaryReplicaRouter) -> None:
    assert router.db_for_write(Item) == "default"


def test_reads_go_to_the_primary_when_no_replica_is_healthy(router: PrimaryReplicaRouter
                                                            ) -> None:
    assert router.db_for_read(Item) == "default"
    with request_scope():
        assert router.db_for_read(Item) == "default"
        assert router.db_for_read(Item) == "default"  # the scope's choice, kept


def test_a_pinned_client_reads_the_primary_without_asking_the_replicas(
        router: PrimaryReplicaRouter) -> None:
    with use_primary():
        assert router.db_for_read(Item) == "default"


def test_replicas_take_no_migrations_and_archives_are_left_to_django(
        router: PrimaryReplicaRouter) -> None:
    assert router.allow_migrate("down", "testapp") is False
    assert router.allow_migrate("default", "testapp") is None
    assert router.allow_migrate("archive", "testapp", "item") is None


def test_relations_only_within_the_primary_and_its_replicas(router: PrimaryReplicaRouter
                                                            ) -> None:
    def on(alias: str) -> Item:
        item = Item(id=1)
        item._state.db = alias
        return item

    assert router.allow_relation(on("default"), on("down")) is True
    assert router.allow_relation(on("default"), on("archive")) is None
