"""Rebuilding an index from a database and ``manage.py datapipe_index``, on the real engine."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from datapipe_django.inspect import describe_documents
from datapipe_django.models import PendingIndex
from datapipe_django.search.documents import adapter_for
from datapipe_django.search.indexing import Progress, rebuild
from tests.conftest import require_opensearch
from tests.search_documents import (
    ItemDocument,
    ItemOpenSearchDocument,
    empty_indices_fixture,  # noqa: F401
    indexed_source,
    search_indices_fixture,  # noqa: F401
)
from tests.testapp.models import Item

pytestmark = [pytest.mark.search, pytest.mark.django_db, pytest.mark.usefixtures("empty_indices")]

BASE = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)


def rows(count: int, start: int = 1) -> list[Item]:
    return Item.objects.bulk_create([
        Item(id=pk, tenant="t1", name=f"row {pk}", status="queued", amount=pk,
             created_at=BASE + dt.timedelta(seconds=pk), day=BASE.date())
        for pk in range(start, start + count)
    ])


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("datapipe_index", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_rebuild_swaps_in_a_new_index_atomically() -> None:
    adapter = adapter_for(ItemDocument)
    rows(25)
    seen: list[tuple[int, int]] = []
    first = rebuild(ItemDocument, using="default", batch_size=10,
                    progress=lambda done, total: seen.append((done, total)))
    assert (first.rows, first.indexed, first.failed) == (25, 25, {})
    assert seen == [(10, 25), (20, 25), (25, 25)]
    assert first.replaced == [adapter.index]  # the concrete index of the same name
    assert adapter.aliased_indices(adapter.index) == [first.built]
    assert adapter.count() == 25
    Item.objects.filter(pk__gt=20).delete()
    second = rebuild(ItemDocument, using="default", batch_size=100)
    assert second.replaced == [first.built]  # the previous build is deleted
    assert adapter.aliased_indices(adapter.index) == [second.built]
    assert not adapter.exists(first.built)
    assert adapter.count() == 20
    assert indexed_source(20) is not None and indexed_source(21) is None


def test_rebuild_in_place_and_the_opensearch_library() -> None:
    require_opensearch()
    rows(5)
    report = rebuild(ItemOpenSearchDocument, using="default", swap=False)
    adapter = adapter_for(ItemOpenSearchDocument)
    assert report.built == adapter.index
    assert adapter.aliased_indices(adapter.index) == []
    assert adapter.count() == 5
    assert indexed_source(3, ItemOpenSearchDocument)["name"] == "row 3"


def test_a_failed_build_never_goes_live(monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = adapter_for(ItemDocument)
    rows(3)
    live = rebuild(ItemDocument, using="default").built

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bulk failed")

    monkeypatch.setattr(type(adapter), "bulk", broken)
    with pytest.raises(RuntimeError):
        rebuild(ItemDocument, using="default")
    monkeypatch.undo()
    assert adapter.aliased_indices(adapter.index) == [live]
    client = adapter.client()
    assert list(client.indices.get(index=f"{adapter.index}-*")) == [live]


def test_the_command_rebuilds_and_reindexes_pending_rows() -> None:
    rows(12)
    label = adapter_for(ItemDocument).label
    PendingIndex.objects.create(document=label, object_pk="99", reason="down")  # deleted row
    out, err = run("rebuild", "ItemDocument", "--database", "default", "--batch-size", "5")
    assert "Rebuilding tests.search_documents.ItemDocument" in out
    assert "Indexed 12 of 12 rows into" in out
    assert "Pending tests.search_documents.ItemDocument on 'default': 1 marked, 0 indexed, " \
           "1 deleted." in out
    assert f"{adapter_for(ItemDocument).index}: 12/12 (100%" in err  # no terminal: lines
    assert not PendingIndex.objects.exists()
    out, _ = run("list")
    assert f"{label}: elasticsearch index {adapter_for(ItemDocument).index!r} (alias of " in out
    assert "12 documents, model testapp.Item; pending: none" in out
    (info,) = describe_documents([ItemDocument])  # what `list` prints, as data
    assert (info["label"], info["size"], info["pending"]) == (label, 12, {})
    assert info["where"].startswith("alias of ") and info["model"] == "testapp.Item"


def test_the_command_pending_only_and_errors() -> None:
    rows(2)
    label = adapter_for(ItemDocument).label
    PendingIndex.objects.create(document=label, object_pk="2", reason="down")
    assert describe_documents([ItemDocument])[0]["pending"] == {"default": 1}
    out, _ = run("pending", adapter_for(ItemDocument).index)
    assert "1 marked, 1 indexed, 0 deleted" in out
    assert indexed_source(1) is None and indexed_source(2) is not None
    with pytest.raises(CommandError, match=r"Unknown Document 'Nope'\. Known: .*ItemDocument"):
        run("rebuild", "Nope")
    with pytest.raises(CommandError, match="batch-size"):
        run("pending", "--batch-size", "0")


def test_the_command_says_when_the_engine_is_down() -> None:
    from django.conf import settings
    from elasticsearch.dsl import connections

    connections.create_connection("default", hosts="http://127.0.0.1:9", max_retries=0)
    try:
        with pytest.raises(CommandError, match=r"search engine is unavailable \(connection"):
            run("rebuild", "ItemDocument", "--database", "default")
        out, _ = run("list")
        assert "unreachable" in out
        (info,) = describe_documents([ItemDocument])
        assert info["size"] is None and info["where"].startswith("connection")
    finally:
        connections.create_connection("default", **settings.ELASTICSEARCH_DSL["default"])


def test_progress_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress("items", stream=stream, width=10)
    progress(5, 10)
    progress(10, 10)
    text = stream.getvalue()
    assert "\ritems [#####-----] 5/10  50%" in text
    assert "\ritems [##########] 10/10 100%" in text and text.endswith("\n")
