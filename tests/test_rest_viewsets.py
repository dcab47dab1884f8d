"""PipelineViewSet through DRF's APIClient: envelope, header, errors, expand, retrieve."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tests.testapp import pipelines
from tests.testapp.models import Category, Item, Owner

pytestmark = pytest.mark.django_db

BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@pytest.fixture
def rows():
    owners = Owner.objects.bulk_create([Owner(id=1, name="Ann"), Owner(id=2, name="Bob")])
    cat = Category.objects.create(id=1, name="cat")
    items = [
        Item(id=i, tenant="t1" if i <= 12 else "t2", name=f"item {i}",
             status=["queued", "processed"][i % 2], amount=i * 100, active=i % 3 != 0,
             created_at=BASE + dt.timedelta(hours=i), day=BASE.date(), score=i % 4 or None,
             owner=owners[i % 2], category=cat if i % 2 else None)
        for i in range(1, 16)
    ]
    return Item.objects.bulk_create(items)


@pytest.fixture
def client():
    c = APIClient()
    c.credentials(HTTP_X_TENANT="t1")
    return c


def ids(response):
    return [row["id"] for row in response.json()["items"]]


def test_list_envelope_and_source_header(client, rows):
    response = client.get("/v1/items", {"limit": 5})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"entity", "count", "has_more", "next_cursor", "items"}
    assert body["entity"] == "collection"
    assert body["count"] == 5 and body["has_more"] is True and body["next_cursor"]
    assert ids(response) == [12, 11, 10, 9, 8]
    assert response["X-Datapipe-Source"] == "default"


def test_cursor_walk_covers_the_tenant_exactly_once(client, rows):
    seen, params = [], {"limit": 5}
    while True:
        body = client.get("/v1/items", params).json()
        seen.extend(r["id"] for r in body["items"])
        if not body["has_more"]:
            assert body["next_cursor"] is None
            break
        params = {"limit": 5, "cursor": body["next_cursor"]}
    assert seen == list(range(12, 0, -1))


def test_filters_ordering_and_search(client, rows):
    response = client.get("/v1/items", {"status": "processed", "ordering": "amount",
                                        "amount__gte": 300})
    assert ids(response) == [3, 5, 7, 9, 11]
    assert ids(client.get("/v1/items", {"q": "item 1", "ordering": "id"})) == [1, 10, 11, 12]


def test_other_tenants_rows_are_invisible(client, rows):
    assert all(r["tenant"] == "t1" for r in client.get("/v1/items", {"limit": 100})
               .json()["items"])
    assert client.get("/v1/items/13").status_code == 404
    assert client.get("/v1/items/3").json()["id"] == 3


def test_a_caller_without_tenant_is_refused(rows):
    assert APIClient().get("/v1/items").status_code == 403


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"status": "bogus"}, "status"),
        ({"amount": "ten"}, "amount"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"offset": "-3"}, "offset"),
        ({"offset": "x"}, "offset"),
        ({"cursor": "garbage"}, "cursor"),
        ({"ordering": "tenant"}, "ordering"),
        ({"ordering": "-nope"}, "ordering"),
        ({"expand[]": "nope"}, "expand"),
        ({"expand": "owner.a.b"}, "expand"),
        ({"created_at_after": "yesterday"}, "created_at"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter_and_queries_nothing(client, rows, params,
                                                                     name):
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/v1/items", params)
    assert response.status_code == 400, response.content
    assert name in response.json()
    assert len(queries) == 0


def test_offset_and_cursor_together_is_a_400(client, rows):
    cursor = client.get("/v1/items", {"limit": 2}).json()["next_cursor"]
    response = client.get("/v1/items", {"cursor": cursor, "offset": 2})
    assert response.status_code == 400


def test_expand_renders_nested_objects_only_when_asked(client, rows):
    plain = client.get("/v1/items", {"limit": 1}).json()["items"][0]
    assert plain["owner"] == 1  # item 12 belongs to Ann
    expanded = client.get("/v1/items", {"limit": 1, "expand[]": "owner"}).json()["items"][0]
    assert expanded["owner"] == {"id": 1, "name": "Ann", "email": ""}
    same = client.get("/v1/items", {"limit": 1, "expand": "owner"}).json()["items"][0]
    assert same == expanded


def test_expansion_is_prefetch_style(client, rows):
    with CaptureQueriesContext(connection) as queries:
        client.get("/v1/items", {"limit": 12, "expand[]": "owner"})
    assert len(queries) == 2  # the page, then all owners at once


def test_a_private_expansion_is_unknown_to_a_public_caller(client, rows):
    response = client.get("/v1/items", {"expand[]": "category"})
    assert response.status_code == 400
    assert response.json() == {"expand": ["Unknown expansion 'category'."]}
    private = client.get("/v1/items", {"expand[]": "category", "limit": 1},
                         HTTP_X_AUTH_TYPE="private")
    assert private.status_code == 200
    assert private.json()["items"][0]["category"] is None or isinstance(
        private.json()["items"][0]["category"], dict)


def test_retrieve(client, rows):
    response = client.get("/v1/items/5", {"expand[]": "owner"})
    assert response.status_code == 200
    assert response.json()["owner"]["name"] == "Bob"
    assert response["X-Datapipe-Source"] == "default"
    assert client.get("/v1/items/999").status_code == 404
    assert client.get("/v1/items/abc").status_code == 404


def test_every_source_down_is_a_503_with_retry_after(client, rows, monkeypatch):
    from datapipe_django.test import InMemoryFetcher

    monkeypatch.setattr(pipelines.items, "fetchers",
                        [InMemoryFetcher(name="a", available=False),
                         InMemoryFetcher(name="b", available=False)])
    response = client.get("/v1/items")
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response["X-Datapipe-Unavailable"] == "a,b"
    assert response.json()["code"] == "sources_unavailable"


def test_the_deadline_is_a_504(client, rows, monkeypatch):
    from datapipe_django.test import InMemoryFetcher

    class Slow(InMemoryFetcher):
        def fetch(self, request):
            import time

            time.sleep(0.3)
            return super().fetch(request)

    monkeypatch.setattr(pipelines.items, "fetchers",
                        [Slow(name="slow", available=False), InMemoryFetcher(name="b")])
    monkeypatch.setattr(pipelines.items, "_timeout", 0.1)
    response = client.get("/v1/items")
    assert response.status_code == 504
    assert response.json()["code"] == "deadline_exceeded"


def test_a_required_enricher_failure_is_a_502_and_an_optional_one_is_reported(client, rows,
                                                                              monkeypatch):
    from datapipe_django.enrichers import BaseEnricher

    class Failing(BaseEnricher):
        def enrich(self, items, context):
            raise ConnectionError("ledger down")

    enrichers = [Failing("owner")]
    monkeypatch.setattr(pipelines.items, "enrichers", enrichers)
    monkeypatch.delattr(pipelines.items, "composite_enricher", raising=False)
    response = client.get("/v1/items", {"expand[]": "owner", "limit": 2})
    assert response.status_code == 200
    assert response.json()["errors"] == [{"enricher": "owner", "code": "failed"}]
    assert isinstance(response.json()["items"][0]["owner"], int)
    enrichers[0].required = True
    monkeypatch.delattr(pipelines.items, "composite_enricher", raising=False)
    assert client.get("/v1/items", {"expand[]": "owner"}).status_code == 502


def test_a_source_that_could_not_answer_is_named_in_a_header(client, rows, monkeypatch):
    from datapipe_django.fetchers import ORMFetcher
    from datapipe_django.test import InMemoryFetcher

    monkeypatch.setattr(pipelines.items, "fetchers",
                        [InMemoryFetcher(name="cache", available=False), ORMFetcher("default")])
    response = client.get("/v1/items", {"limit": 2})
    assert response.status_code == 200
    assert response["X-Datapipe-Source"] == "default"
    assert response["X-Datapipe-Unavailable"] == "cache"
    assert client.get("/v1/items/3")["X-Datapipe-Unavailable"] == "cache"


def test_server_timing_names_each_stage_and_each_source_asked(client, rows, monkeypatch,
                                                               settings):
    from datapipe_django.fetchers import ORMFetcher
    from datapipe_django.test import InMemoryFetcher

    assert "Server-Timing" not in client.get("/v1/items", {"limit": 2})  # off by default
    settings.DATAPIPE = {**getattr(settings, "DATAPIPE", {}), "SERVER_TIMING": True}
    monkeypatch.setattr(pipelines.items, "fetchers", [
        InMemoryFetcher(name="hot cache", available=False), ORMFetcher("default"),
        InMemoryFetcher(name="never", can_handle=lambda request: False)])
    for response in (client.get("/v1/items", {"limit": 2}), client.get("/v1/items/3")):
        entries = [e.strip().split(";") for e in response["Server-Timing"].split(",")]
        names = [e[0] for e in entries]
        assert names == ["validate", "fetch", "transform", "enrich", "build",
                         "source.hot-cache", "source.default"]
        durations = {e[0]: float(e[1].removeprefix("dur=")) for e in entries}
        assert all(d >= 0 for d in durations.values())
        assert durations["fetch"] >= durations["source.default"]
        assert entries[-2][2] == 'desc="unavailable"' and entries[-1][2] == 'desc="ok"'


def _tiers(rows, *, archive_up=True, hot_up=True):
    """A hot tier holding the items of the last 6 hours of BASE + 12 h, an archive of all."""
    from datapipe_django.specs import Range
    from datapipe_django.test import InMemoryFetcher

    cut = BASE + dt.timedelta(hours=7)
    hot = InMemoryFetcher([r for r in rows if r.created_at >= cut], name="hot",
                          holds=Range("created_at", gte=cut), available=hot_up)
    return [hot, InMemoryFetcher(rows, name="archive", available=archive_up)]


def test_a_page_that_needed_a_down_source_says_partial_in_the_body(client, rows, monkeypatch):
    monkeypatch.setattr(pipelines.items, "fetchers", _tiers(rows, archive_up=False))
    inside = client.get("/v1/items", {"limit": 3})  # items 12, 11, 10: the hot tier's
    assert inside.status_code == 200 and ids(inside) == [12, 11, 10]
    assert "partial" not in inside.json() and "X-Datapipe-Unavailable" not in inside
    crossing = client.get("/v1/items", {"limit": 10})  # needs items 6..3 from the archive
    assert crossing.status_code == 200
    body = crossing.json()
    assert body["partial"] is True and ids(crossing) == [12, 11, 10, 9, 8, 7]
    assert crossing["X-Datapipe-Unavailable"] == "archive"
    # next_cursor goes on after the last row served: the archive's rows come after it.
    assert body["has_more"] is True and body["next_cursor"]
    monkeypatch.setattr(pipelines.items, "fetchers", _tiers(rows))
    rest = client.get("/v1/items", {"limit": 10, "cursor": body["next_cursor"]})
    assert ids(rest) == [6, 5, 4, 3, 2, 1] and "partial" not in rest.json()


def test_partial_error_makes_such_a_page_a_503(client, rows, monkeypatch):
    monkeypatch.setattr(pipelines.items, "fetchers", _tiers(rows, archive_up=False))
    monkeypatch.setattr(pipelines.items, "partial", "error")
    assert client.get("/v1/items", {"limit": 3}).status_code == 200  # the hot tier's alone
    response = client.get("/v1/items", {"limit": 10})
    assert response.status_code == 503
    assert response["Retry-After"] == "1" and response["X-Datapipe-Unavailable"] == "archive"
    assert response.json()["code"] == "sources_unavailable"


def test_a_hot_tier_down_is_no_partial_page_when_the_archive_holds_everything(client, rows,
                                                                              monkeypatch):
    monkeypatch.setattr(pipelines.items, "fetchers", _tiers(rows, hot_up=False))
    response = client.get("/v1/items", {"limit": 10})
    assert response.status_code == 200 and "partial" not in response.json()
    assert ids(response) == list(range(12, 2, -1))
    assert response["X-Datapipe-Unavailable"] == "hot"


def test_retrieve_is_a_404_only_when_every_source_that_could_hold_the_id_answered(
        client, rows, monkeypatch):
    monkeypatch.setattr(pipelines.items, "fetchers", _tiers(rows, archive_up=False))
    assert client.get("/v1/items/12").json()["id"] == 12  # the hot tier has it
    # Item 3 is in the archive only, which is down: not "not found" but "try again".
    response = client.get("/v1/items/3")
    assert response.status_code == 503
    assert response["Retry-After"] == "1" and response["X-Datapipe-Unavailable"] == "archive"
    assert client.get("/v1/items/999").status_code == 503  # nor for an id that may be there
    monkeypatch.setattr(pipelines.items, "fetchers", _tiers(rows, hot_up=False))
    # The hot tier is down but the archive holds every row: it answered, so 404 is exact.
    assert client.get("/v1/items/999").status_code == 404
    assert client.get("/v1/items/12").json()["id"] == 12
    monkeypatch.setattr(pipelines.items, "fetchers", _tiers(rows))
    assert client.get("/v1/items/999").status_code == 404
    assert client.get("/v1/items/13").status_code == 404  # another tenant's: not found


def test_a_list_splits_its_query_string_once(client, rows, monkeypatch):
    from datapipe_django.rest import viewsets as viewsets_module

    calls = []
    real = viewsets_module.split_query

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(viewsets_module, "split_query", counting)
    response = client.get("/v1/items", {"limit": 3, "status": "processed"})
    assert response.status_code == 200 and len(calls) == 1
    items = response.json()["items"]
    assert items and all(item["status"] == "processed" for item in items)
