"""A real engine outage: the test starts a node of its own (``scripts/search-node.sh`` on
free ports, with its own state directory, so runs sharing the machine's node are not
disturbed), stops it, checks what searches and writes do meanwhile, and starts it again.

* ``q`` is served by PostgreSQL full-text search (the next source), with a 200 and the
  engine named in ``X-Datapipe-Unavailable``; without a database fallback it is a 503.
* Writes succeed; their rows are marked pending, and ``manage.py datapipe_index pending``
  indexes them once the node is back, after which the engine serves searches again.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from rest_framework.test import APIRequestFactory

from datapipe_django import Pipeline, PipelineRequest, SourcesUnavailable
from datapipe_django.fetchers import ORMFetcher, SearchFetcher
from datapipe_django.models import PendingIndex
from datapipe_django.rest import PipelineViewSet
from datapipe_django.search.sync import reset_cooldowns
from tests.conftest import require_alias
from tests.search_documents import (
    ItemDocument,
    autosync,
    index_rows,
    indexed_source,
    recreate,
    search_indices_fixture,  # noqa: F401
)
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Item
from tests.testapp.serializers import ItemSerializer

pytestmark = [pytest.mark.search, pytest.mark.postgres,
              pytest.mark.django_db(databases=["default", "primary"], transaction=True)]

NODE = Path(__file__).resolve().parent.parent / "scripts" / "search-node.sh"
BASE = dt.datetime(2024, 7, 1, tzinfo=dt.UTC)
NAMES = ["monthly invoice", "invoice reminder", "salary July", "reinvoice fee"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Node:
    """A search node of this test's own (``search-node.sh`` with its own home and ports)."""

    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, "SEARCH_HOME": str(home), "SEARCH_PORT": str(self.port),
                    "SEARCH_TRANSPORT_PORT": str(free_port())}
        self.url = f"http://127.0.0.1:{self.port}"

    def run(self, command: str) -> float:
        start = time.monotonic()
        subprocess.run(["bash", str(NODE), command], check=True, capture_output=True,
                       env=self.env, timeout=300)
        return time.monotonic() - start


@pytest.fixture
def node(search_indices: None) -> Iterator[Node]:
    """The node, as the Documents' default connection (the machine's node afterwards)."""
    from django.conf import settings
    from elasticsearch.dsl import connections

    home = Path(tempfile.mkdtemp(prefix="datapipe-search-outage-"))
    node = Node(home)
    started = node.run("start")
    print(f"own search node started in {started:.1f}s")
    connections.create_connection("default", hosts=node.url, max_retries=0)
    try:
        recreate(ItemDocument)
        yield node
    finally:
        connections.create_connection("default", **settings.ELASTICSEARCH_DSL["default"])
        node.run("stop")
        shutil.rmtree(home, ignore_errors=True)
        reset_cooldowns()


def pipeline() -> Pipeline:
    return Pipeline("search-outage", model=Item, filterset_class=ItemFilterSet,
                    search_fields=("name",), tenant_field="tenant",
                    ordering=("-created_at", "-id"),
                    fetchers=[SearchFetcher(ItemDocument, using="primary", cooldown=0),
                              ORMFetcher("primary", search="fulltext")],
                    register=False, timeout=5.0)


class OutageViewSet(PipelineViewSet):
    serializer_class = ItemSerializer

    def get_pipeline(self) -> Pipeline:
        return pipeline()

    def get_tenant(self) -> str:
        return "t1"


def get(params: dict[str, Any]) -> Any:
    view = OutageViewSet.as_view({"get": "list"})
    response = view(APIRequestFactory().get("/items", params))
    response.render()
    return response


def test_searches_fall_back_and_writes_are_marked_while_the_engine_is_down(
        node: Node) -> None:
    require_alias("primary")
    rows = Item.objects.using("primary").bulk_create([
        Item(id=pk, tenant="t1", name=name, status="queued", amount=pk,
             created_at=BASE + dt.timedelta(minutes=pk), day=BASE.date())
        for pk, name in enumerate(NAMES, start=1)
    ])
    index_rows(rows, using="primary")
    up = get({"q": "invoice"})
    assert up["X-Datapipe-Source"] == "search"
    assert [i["id"] for i in json.loads(up.content)["items"]] == [2, 1]

    stopped = node.run("stop")
    try:
        down = get({"q": "invoice"})
        assert down.status_code == 200
        assert down["X-Datapipe-Source"] == "primary"
        assert down["X-Datapipe-Unavailable"] == "search"
        # Full-text search: whole words, as the engine matches them ("reinvoice" is not).
        assert [i["id"] for i in json.loads(down.content)["items"]] == [2, 1]
        result = pipeline().execute(PipelineRequest(tenant="t1", search="invoice"))
        assert result.attempts[0].outcome == "unavailable"
        assert result.attempts[0].reason.startswith("connection failed")
        only_engine = Pipeline("search-outage-only", model=Item, search_fields=("name",),
                               tenant_field="tenant", register=False,
                               fetchers=[SearchFetcher(ItemDocument, using="primary")])
        with pytest.raises(SourcesUnavailable):
            only_engine.execute(PipelineRequest(tenant="t1", search="invoice"))
        assert get({"q": "invoice", "status": "bogus"}).status_code == 400  # still validated

        # Writes go through; their documents are marked for re-index.
        with autosync(), transaction.atomic(using="primary"):
            Item.objects.using("primary").filter(pk=3).update(name="invoice July")
            Item.objects.using("primary").get(pk=3).save(using="primary")
            Item(id=5, tenant="t1", name="invoice five", status="queued", amount=5,
                 created_at=BASE, day=BASE.date()).save(using="primary")
        marks = PendingIndex.objects.using("primary").order_by("object_pk")
        assert [m.object_pk for m in marks] == ["3", "5"]
    finally:
        started = node.run("start")
        reset_cooldowns()
    print(f"search node: stopped in {stopped:.1f}s, started again in {started:.1f}s")

    out = io.StringIO()
    call_command("datapipe_index", "pending", "ItemDocument", "--database", "primary",
                 stdout=out)
    assert "2 marked, 2 indexed, 0 deleted" in out.getvalue()
    assert not PendingIndex.objects.using("primary").exists()
    assert indexed_source(3)["name"] == "invoice July"
    back = get({"q": "invoice"})
    assert back["X-Datapipe-Source"] == "search"
    assert [i["id"] for i in json.loads(back.content)["items"]] == [3, 2, 1, 5]
