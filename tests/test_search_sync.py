"""Index sync on the real engine: writes reach the index when their transaction commits, in
one bulk request, never when it rolls back; an outage never breaks a write and leaves the rows
marked for re-index (:class:`datapipe_django.models.PendingIndex`)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from datapipe_django.models import PendingIndex
from datapipe_django.search.documents import DocumentAdapter, EmptyDocument, adapter_for
from datapipe_django.search.indexing import process_pending
from datapipe_django.search.sync import index_later, paused, reset_cooldowns, sync_stats
from tests.conftest import require_opensearch
from tests.search_documents import (
    ItemDocument,
    ItemOpenSearchDocument,
    autosync,
    empty_indices_fixture,  # noqa: F401
    indexed_source,
    search_indices_fixture,  # noqa: F401
)
from tests.testapp.models import Item, Owner, Tag

pytestmark = [pytest.mark.search, pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("empty_indices")]

BASE = dt.datetime(2024, 5, 1, 9, 30, 0, 123456, tzinfo=dt.UTC)


def new_item(pk: int, **kwargs: Any) -> Item:
    values: dict[str, Any] = {"tenant": "t1", "name": f"item {pk}", "status": "queued",
                              "amount": pk, "created_at": BASE, "day": BASE.date()}
    values.update(kwargs)
    return Item(id=pk, **values)


@pytest.fixture
def bulk_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(index, documents) of every bulk request."""
    calls: list[tuple[str, int]] = []
    real = DocumentAdapter.bulk

    def spy(self: DocumentAdapter, lines: Any, **kwargs: Any) -> Any:
        calls.append((self.index, sum(1 for line in lines if len(line) == 1
                                      and next(iter(line)) in ("index", "delete"))))
        return real(self, lines, **kwargs)

    monkeypatch.setattr(DocumentAdapter, "bulk", spy)
    return calls


@pytest.fixture
def engine_down() -> Iterator[None]:
    """The default connection points at a closed port (connection refused), then back."""
    from elasticsearch.dsl import connections

    connections.create_connection("default", hosts="http://127.0.0.1:9", max_retries=0)
    try:
        yield
    finally:
        connections.create_connection("default", **settings.ELASTICSEARCH_DSL["default"])
        reset_cooldowns()


def test_a_committed_write_is_indexed_with_every_field() -> None:
    owner = Owner.objects.create(id=1, name="Ann")
    with autosync(), transaction.atomic():
        new_item(1, owner=owner, score=3, category_id=7).save()
        assert indexed_source(1) is None  # not before the commit
    source = indexed_source(1)
    # A document is never indexed empty (django-elasticsearch-dsl 9.0 with elasticsearch-py
    # 9.4+ indexes {}, upstream #505: the `elasticsearch` extra pins <9.4).
    assert source == {
        "id": 1, "tenant": "t1", "name": "item 1", "status": "queued", "amount": 1,
        "active": True, "created_at": "2024-05-01T09:30:00.123456+00:00", "day": "2024-05-01",
        "score": 3, "category": 7, "owner": {"id": 1, "name": "Ann"},
    }


def test_autocommit_writes_go_out_at_once() -> None:
    with autosync():
        new_item(1).save()
        assert indexed_source(1) is not None
        Item.objects.get(pk=1).delete()
        assert indexed_source(1) is None


def rolled_back(*writes: Any) -> None:
    """Run ``writes`` in a transaction (a savepoint when nested) that is rolled back."""
    with transaction.atomic():
        for write in writes:
            write()
        raise RuntimeError("rolled back")


def rename_and_save(pk: int) -> None:
    Item.objects.filter(pk=pk).update(name="changed in the savepoint")
    Item.objects.get(pk=pk).save()


def test_a_rollback_leaves_no_document() -> None:
    with autosync():
        with pytest.raises(RuntimeError):
            rolled_back(new_item(1).save)
        assert indexed_source(1) is None
        # A rolled-back savepoint inside a committed transaction: only its rows are missing.
        with transaction.atomic():
            new_item(2).save()
            with pytest.raises(RuntimeError):
                rolled_back(new_item(3).save, lambda: rename_and_save(2))
            new_item(4).save()
        assert indexed_source(2)["name"] == "item 2"
        assert indexed_source(3) is None
        assert indexed_source(4) is not None
        # The next transaction on the connection starts a new batch.
        with transaction.atomic():
            new_item(5).save()
        assert indexed_source(5) is not None


def test_a_transaction_is_one_bulk_request(bulk_calls: list[tuple[str, int]]) -> None:
    require_opensearch()  # index_later reaches the OpenSearch Document too
    index = adapter_for(ItemDocument).index
    with autosync(), transaction.atomic():
        for pk in range(1, 41):
            new_item(pk).save()
        Item.objects.bulk_create([new_item(pk) for pk in range(41, 101)])  # no signals...
        index_later(Item.objects.filter(pk__gt=40))                      # ...so say it
        Item.objects.get(pk=1).delete()
    # One request per Document: 100 documents (99 rows and a delete) for the synced one;
    # index_later also reached the OpenSearch Document (it ignores *_AUTOSYNC).
    assert sorted(bulk_calls) == sorted([(index, 100),
                                         (adapter_for(ItemOpenSearchDocument).index, 60)])
    assert indexed_source(1) is None
    assert indexed_source(100) is not None


def test_index_later_without_autosync_and_for_every_document(
        bulk_calls: list[tuple[str, int]]) -> None:
    require_opensearch()
    rows = Item.objects.bulk_create([new_item(pk) for pk in (1, 2, 3)])
    index_later(rows)
    assert sorted(bulk_calls) == sorted([(adapter_for(ItemDocument).index, 3),
                                         (adapter_for(ItemOpenSearchDocument).index, 3)])
    assert indexed_source(3, ItemOpenSearchDocument)["name"] == "item 3"
    Item.objects.filter(pk=3).update(name="renamed")
    with transaction.atomic():
        index_later(Item.objects.filter(pk=3))
        assert indexed_source(3)["name"] == "item 3"
    assert indexed_source(3)["name"] == "renamed"


def test_writes_are_not_synced_when_the_library_says_so() -> None:
    new_item(1).save()  # ELASTICSEARCH_DSL_AUTOSYNC is False in the test settings
    assert indexed_source(1) is None
    with autosync(), override_settings(ELASTICSEARCH_DSL_AUTOSYNC=False):
        new_item(2).save()
    assert indexed_source(2) is None


def test_paused_writes_are_left_to_a_rebuild() -> None:
    with autosync():
        with paused():
            new_item(1).save()
        new_item(2).save()
    assert indexed_source(1) is None
    assert indexed_source(2) is not None


def test_documents_embedding_a_related_row_follow_it() -> None:
    with autosync():
        owner = Owner.objects.create(id=1, name="Ann")
        new_item(1, owner=owner).save()
        new_item(2, owner=owner).save()
        owner.name = "Anna"
        owner.save()
        assert indexed_source(1)["owner"] == {"id": 1, "name": "Anna"}
        assert indexed_source(2)["owner"] == {"id": 1, "name": "Anna"}
        owner.delete()  # SET_NULL on the items: no signal for them, the related hook sees it
        assert indexed_source(1)["owner"] == {}


def test_many_to_many_changes_reindex_the_row(bulk_calls: list[tuple[str, int]]) -> None:
    item = new_item(1)
    item.save()
    tag = Tag.objects.create(name="t")
    with autosync():
        item.tags.add(tag)
    assert bulk_calls == [(adapter_for(ItemDocument).index, 1)]


def test_an_outage_never_breaks_a_write_and_marks_the_rows(
        engine_down: None, caplog: pytest.LogCaptureFixture) -> None:
    stats = sync_stats()
    stats.reset()
    with autosync(), caplog.at_level(logging.WARNING, "datapipe_django.search"):
        with transaction.atomic():
            new_item(1).save()
            new_item(2).save()
        new_item(3).save()  # within the cooldown: the engine is not even tried
    assert Item.objects.count() == 3
    marks = {m.object_pk: m.reason for m in PendingIndex.objects.all()}
    assert set(marks) == {"1", "2", "3"}
    assert marks["1"].startswith("connection failed")
    assert marks["3"].startswith("engine skipped after: connection failed")
    assert {m.document for m in PendingIndex.objects.all()} == {adapter_for(ItemDocument).label}
    assert stats.failures == 3 and stats.recorded == 3
    assert "2 datapipe-test" in caplog.text or "marked for re-index" in caplog.text


def test_pending_rows_are_reindexed_and_their_marks_removed() -> None:
    rows = Item.objects.bulk_create([new_item(pk) for pk in (1, 2)])
    label = adapter_for(ItemDocument).label
    PendingIndex.objects.bulk_create([
        PendingIndex(document=label, object_pk="1", reason="down"),
        PendingIndex(document=label, object_pk="2", reason="down"),
        PendingIndex(document=label, object_pk="9", reason="down"),  # deleted since
    ])
    # A mark renewed after the re-index read its row stays for the next run.
    PendingIndex.objects.filter(object_pk="2").update(
        created_at=timezone.now() + dt.timedelta(hours=1))
    report = process_pending(ItemDocument, using="default")
    assert (report.processed, report.indexed, report.deleted) == (3, 2, 1)
    assert [m.object_pk for m in PendingIndex.objects.all()] == ["2"]
    assert indexed_source(rows[0].pk) is not None


def test_a_refused_document_is_logged_and_marked(caplog: pytest.LogCaptureFixture) -> None:
    with autosync(), caplog.at_level(logging.ERROR, "datapipe_django.search"):
        # `created_at` is date_nanos: the engine refuses a date before 1970.
        new_item(1, created_at=dt.datetime(1960, 1, 1, tzinfo=dt.UTC)).save()
        new_item(2).save()
    assert indexed_source(1) is None
    assert indexed_source(2) is not None
    mark = PendingIndex.objects.get()
    assert mark.object_pk == "1"
    assert "exception" in mark.reason
    assert "refused 1" in caplog.text


def test_an_empty_document_is_refused_not_indexed(caplog: pytest.LogCaptureFixture) -> None:
    class Empty(ItemDocument):
        class Index:
            name = adapter_for(ItemDocument).index

        def prepare(self, instance: Any) -> dict[str, Any]:
            return {}

    Empty.django = ItemDocument.django
    item = new_item(1)
    item.save()
    with pytest.raises(EmptyDocument, match="#505"):
        adapter_for(Empty).actions([item])
