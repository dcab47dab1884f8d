"""The fetcher contract, one suite run over every fetcher on its real store.

What every fetcher promises (``datapipe_django.fetchers.base`` and DESIGN §2/§3): ``fetch`` of a
spec returns that tenant's matching rows as model instances, in the request's total ordering,
after the keyset position, offset and size applied; cursor pages chain without gaps or
duplicates; never a row of another tenant; ``can_handle`` says yes or declines with a reason
(never raises) and a pipeline turns a spec no source can serve into ``NoFetcher``; ``count``
(when it counts) is the exact number of matching rows, whatever the page; a pk request reads
that one row of the tenant; empty results are empty; text survives the round trip whatever
its script; a store that is down raises one of ``chain.UNAVAILABLE_ERRORS`` and a pipeline of
that source alone says ``SourcesUnavailable``. A Hypothesis property draws FilterSet
parameters: every source that serves them gives the ids ``Spec.matches`` gives in memory.

The fetchers (one ``backend`` each): ``ORMFetcher`` on SQLite, PostgreSQL (the primary, and the
real hot standby as ``DATAPIPE["REPLICAS"]``), MariaDB; ``CachedFetcher`` on Redis over the
PostgreSQL one; ``SearchFetcher`` on Elasticsearch and on OpenSearch (rows built from
``_source``); ``InMemoryFetcher``. The same rows are stored once per backend (module scope,
committed) and read by every test; nothing here writes to a store afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from django.test import override_settings
from hypothesis import HealthCheck, event, given, note
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from datapipe_django import NoFetcher, Pipeline, PipelineRequest, SourcesUnavailable
from datapipe_django.chain import UNAVAILABLE_ERRORS
from datapipe_django.errors import ValidationFailed
from datapipe_django.fetchers import CachedFetcher, FetchRequest, ORMFetcher, SearchFetcher
from datapipe_django.fetchers.base import Fetcher, as_fetcher
from datapipe_django.paging import SCORE_ATTR, Ordering
from datapipe_django.replicas import forget_replica_status
from datapipe_django.specs import Eq, IsNull, MatchAll, Range, Spec, compile_filterset
from datapipe_django.test import InMemoryFetcher
from tests.conftest import require_alias, require_cache, require_opensearch, require_search
from tests.search_documents import (
    ItemDocument,
    ItemOpenSearchDocument,
    index_objects,
    recreate,
    search_indices_fixture,  # noqa: F401
)
from tests.specs_data import CATEGORIES, DANGLING, OWNERS, as_query, params_strategy
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Category, Item, Owner
from tests.topology import wait_for_replay, wait_for_standby

DB = pytest.mark.django_db(databases=[alias for alias in ("default", "primary", "replica",
                                                         "archive")
                                      if alias in settings.DATABASES])

BASE = dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)
#: Names in several scripts, with the characters LIKE and wildcard patterns treat specially.
NAMES = ["Zoë box", "zoe BOX", "日本語 テキスト", "emoji 🎉 party", "Straße", "ÄRGER a",
         "a_b%c", "back\\slash", "plain", "Blue Box", "blue bag", "ıI dotless"]
STATUSES = [s.value for s in Item.Status]
ORDERINGS = [("-created_at", "-id"), ("score",), ("-score", "name"), ("amount", "-created_at"),
             ("name",), ("id",)]
#: A run's own cache entries (Redis is shared by test runs: their rows may differ).
RUN = uuid.uuid4().hex


def make_world() -> list[Item]:
    """40 rows of two tenants: ties on created_at, NULL scores, unicode names, every status,
    dangling category ids; each with its owner attached (what ``matches`` reads)."""
    owners = {pk: Owner(id=pk, name=name) for pk, name in OWNERS.items()}
    rows = []
    for pk in range(1, 41):
        owner = [None, 1, 2, 3][pk % 4]
        rows.append(Item(
            id=pk, tenant="t2" if pk % 7 in (1, 4) else "t1", name=NAMES[pk % len(NAMES)],
            status=STATUSES[pk % len(STATUSES)], amount=(pk * 7) % 9 - 4, active=pk % 3 != 0,
            created_at=BASE + dt.timedelta(minutes=pk // 3, microseconds=pk % 2),
            day=(BASE + dt.timedelta(days=pk % 5)).date(),
            score=None if pk % 5 == 0 else pk % 4 - 1,
            category_id=[None, 1, 2, 3, DANGLING][pk % 5],
            owner=None if owner is None else owners[owner]))
    return rows


WORLD = make_world()


# --------------------------------------------------------------------------------------------
# The backends
# --------------------------------------------------------------------------------------------

@dataclass
class Backend:
    """One fetcher on its store, holding ``WORLD``."""

    fetcher: Any
    #: Text lookups (case-sensitive and -insensitive) compare as ``matches()`` does: the
    #: engine may still decline one it cannot fold exactly (``can_handle``).
    exact_text: bool = True


def store_rows(alias: str) -> None:
    delete_rows(alias)
    Category.objects.using(alias).bulk_create(
        [Category(id=pk, name=name) for pk, name in CATEGORIES.items()])
    Owner.objects.using(alias).bulk_create([Owner(id=pk, name=n) for pk, n in OWNERS.items()])
    Item.objects.using(alias).bulk_create(WORLD)


def delete_rows(alias: str, attempts: int = 3) -> None:
    """Delete the committed rows, again after a reconnect if the server restarted meanwhile
    (the servers are shared: another run may have restarted one): rows left behind would be
    there for every later test module."""
    for attempt in range(attempts):
        try:
            for model in (Item, Owner, Category):
                model.objects.using(alias).all().delete()
            return
        except (OperationalError, InterfaceError):
            connections[alias].close()
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


@contextlib.contextmanager
def database_down(alias: str) -> Iterator[Any]:
    """An ``ORMFetcher`` on ``alias``: a server of the same engine on a closed port."""
    require_alias(alias)
    yield ORMFetcher(alias)


@contextlib.contextmanager
def engine_down(document: type[Any]) -> Iterator[Any]:
    """A ``SearchFetcher`` of ``document`` whose connection is a closed local port."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    alias = f"contract-down-{uuid.uuid4().hex[:6]}"
    if document is ItemDocument:
        from elasticsearch.dsl import connections

        connections.create_connection(alias, hosts=url, max_retries=0)
    else:
        from opensearchpy import OpenSearch
        from opensearchpy.connection.connections import connections

        connections.add_connection(alias, OpenSearch(hosts=[url], max_retries=0))
    try:
        yield SearchFetcher(document, handles="all", connection=alias)
    finally:
        connections.remove_connection(alias)


@contextlib.contextmanager
def memory_down() -> Iterator[Any]:
    yield InMemoryFetcher(WORLD, available=False)


@contextlib.contextmanager
def cached_inner_down() -> Iterator[Any]:
    require_alias("down")
    yield CachedFetcher(ORMFetcher("down"), cache="redis", ttl=60, version=RUN)


@contextlib.contextmanager
def on_database(alias: str, **settings_: Any) -> Iterator[Backend]:
    require_alias(alias)
    store_rows(alias)
    try:
        yield Backend(ORMFetcher(alias), **settings_)
    finally:
        delete_rows(alias)


@contextlib.contextmanager
def on_replica() -> Iterator[Backend]:
    require_alias("primary")
    require_alias("replica")
    store_rows("primary")
    forget_replica_status()
    try:
        wait_for_replay()
        with override_settings(DATAPIPE={"PRIMARY": "primary", "REPLICAS": ["replica"]}):
            yield Backend(ORMFetcher("replica"))
    finally:
        delete_rows("primary")
        forget_replica_status()


@contextlib.contextmanager
def on_redis() -> Iterator[Backend]:
    require_cache("redis")
    require_alias("primary")
    store_rows("primary")
    try:
        yield Backend(CachedFetcher(ORMFetcher("primary"), cache="redis", ttl=60, version=RUN,
                                    depends_on=(Owner,)))
    finally:
        delete_rows("primary")


@contextlib.contextmanager
def on_engine(document: type[Any], request: pytest.FixtureRequest) -> Iterator[Backend]:
    require_search()
    if document is ItemOpenSearchDocument:
        require_opensearch()
    request.getfixturevalue("search_indices")
    recreate(document)
    index_objects(WORLD, document=document)
    try:
        yield Backend(SearchFetcher(document, handles="all"))
    finally:
        recreate(document)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], contextlib.AbstractContextManager[Backend]]]
BACKENDS = {
    # The text lookups of SQLite (LIKE folds ASCII case only) and of MariaDB (case follows the
    # collation: utf8mb4_bin here) differ from matches(): docs/specifications.md, "Backend
    # caveats". Exact comparisons, numbers, dates, ranges, in and isnull agree.
    "orm-sqlite": lambda r: on_database("default", exact_text=False),
    "orm-postgres": lambda r: on_database("primary"),
    "orm-postgres-replica": lambda r: on_replica(),
    "orm-mariadb": lambda r: on_database("archive", exact_text=False),
    "cached-redis": lambda r: on_redis(),
    "search-elasticsearch": lambda r: on_engine(ItemDocument, r),
    "search-opensearch": lambda r: on_engine(ItemOpenSearchDocument, r),
    "memory": lambda r: contextlib.nullcontext(Backend(InMemoryFetcher(WORLD))),
}
#: A fetcher of the same kind whose store is down. SQLite is embedded: no server to lose. The
#: replica is a real standby: a down one is skipped by ``can_handle`` (tests/test_replicas.py
#: and tests/test_outages.py stop it).
OUTAGES: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {
    "orm-postgres": lambda: database_down("down"),
    "orm-mariadb": lambda: database_down("archive_down"),
    "cached-redis": lambda: cached_inner_down(),
    "search-elasticsearch": lambda: engine_down(ItemDocument),
    "search-opensearch": lambda: engine_down(ItemOpenSearchDocument),
    "memory": lambda: memory_down(),
}
MARKS = {"orm-postgres": [pytest.mark.postgres], "orm-postgres-replica": [pytest.mark.postgres],
         "orm-mariadb": [pytest.mark.mysql], "cached-redis": [pytest.mark.redis],
         "search-elasticsearch": [pytest.mark.search],
         "search-opensearch": [pytest.mark.search]}


@pytest.fixture(scope="module", params=[pytest.param(name, marks=MARKS.get(name, []))
                                        for name in BACKENDS])
def backend(request: pytest.FixtureRequest, django_db_setup: None,
            django_db_blocker: Any) -> Iterator[Backend]:
    with django_db_blocker.unblock():
        if "replica" in settings.DATABASES:
            # Every test here opens a transaction on the standby too: it must have the test
            # database the run has just created on the primary.
            wait_for_standby()
        with BACKENDS[request.param](request) as found:
            yield found


# --------------------------------------------------------------------------------------------
# Requests and what they must give
# --------------------------------------------------------------------------------------------

def ask(spec: Spec | None = None, *, ordering: tuple[str, ...] = ORDERINGS[0], size: int = 100,
        tenant: str = "t1", **kwargs: Any) -> FetchRequest:
    return FetchRequest(request=PipelineRequest(tenant=tenant), model=Item,
                        spec=MatchAll() if spec is None else spec,
                        ordering=Ordering.for_model(Item, ordering), size=size,
                        search_fields=("name",), tenant_field="tenant", tenant=tenant,
                        deadline=time.monotonic() + 10, pipeline="contract", **kwargs)


def expected(request: FetchRequest) -> list[int]:
    """The ids every source must give for ``request``, computed in memory over ``WORLD``."""
    spec = request.full_spec
    rows = [r for r in WORLD if spec is None or spec.matches(r)]
    if request.pk is not None:
        rows = [r for r in rows if r.pk == int(request.pk)]
    if request.after is not None:
        rows = [r for r in rows if request.ordering.is_after(r, request.after)]
    rows.sort(key=request.ordering.key)
    return [r.pk for r in rows[request.offset: request.offset + request.size]]


def served(fetcher: Any, request: FetchRequest) -> list[int] | None:
    """The ids ``fetcher`` gives for ``request``, or None when it declines it."""
    verdict = fetcher.can_handle(request)
    if not verdict:
        assert getattr(verdict, "reason", ""), f"{fetcher!r} declined without a reason"
        return None
    result = fetcher.fetch(request)
    assert all(isinstance(row, Item) for row in result.items)
    return [row.pk for row in result.items]


def pipeline(fetcher: Any) -> Pipeline:
    return Pipeline("contract", model=Item, filterset_class=ItemFilterSet,
                    search_fields=("name",), tenant_field="tenant",
                    ordering=ORDERINGS[0], ordering_fields=("created_at", "score", "amount"),
                    fetchers=[fetcher], register=False)


SPECS: list[Spec] = [
    MatchAll(),
    Eq("status", "queued"),
    ~Eq("status", "queued") & Range("amount", gte=-1),
    IsNull("score"),
    Eq("owner__name", "bob") | Eq("category", 2),
]


# --------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------

@DB
def test_it_is_a_fetcher(backend: Backend) -> None:
    assert isinstance(backend.fetcher, Fetcher)
    assert as_fetcher(backend.fetcher) is backend.fetcher  # every hook declared
    assert backend.fetcher.name
    assert backend.fetcher.can_handle(ask())


@DB
@pytest.mark.parametrize("ordering", ORDERINGS, ids="/".join)
@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_fetch_applies_the_spec_the_ordering_and_the_limit(backend: Backend, spec: Spec,
                                                           ordering: tuple[str, ...]) -> None:
    whole = ask(spec, ordering=ordering)
    assert whole_ids(backend, whole) == expected(whole)
    assert expected(whole), "a spec of this table that matches nothing tests nothing"
    for offset, size in ((0, 3), (2, 5), (len(expected(whole)) - 1, 4)):
        page = replace(whole, offset=offset, size=size)
        result = backend.fetcher.fetch(page)
        assert [r.pk for r in result.items] == expected(page)
        if len(expected(replace(page, size=size + 1))) > size:
            assert result.has_more, "a page followed by more rows must say has_more"


def whole_ids(backend: Backend, request: FetchRequest) -> list[int]:
    """Every id of ``request``; asked twice (a cache serves the second from its entry)."""
    first = backend.fetcher.fetch(request)
    second = backend.fetcher.fetch(request)
    assert [r.pk for r in first.items] == [r.pk for r in second.items]
    assert not first.has_more or len(first.items) == request.size
    return [r.pk for r in first.items]


@DB
@pytest.mark.parametrize("size", [1, 3, 7])
@pytest.mark.parametrize("ordering", ORDERINGS, ids="/".join)
def test_cursor_pages_chain_without_gaps_or_duplicates(backend: Backend, size: int,
                                                       ordering: tuple[str, ...]) -> None:
    request = ask(ordering=ordering, size=size)
    everything = expected(replace(request, size=100))
    seen: list[int] = []
    for _ in range(len(WORLD) + 1):
        result = backend.fetcher.fetch(request)
        seen += [r.pk for r in result.items]
        if not result.items:
            break
        assert len(result.items) <= size
        request = replace(request, after=request.ordering.values(result.items[-1]))
        if not result.has_more:
            break
    assert seen == everything


@DB
@pytest.mark.parametrize("tenant", ["t1", "t2", "nobody", "t1' OR '1'='1"])
def test_never_a_row_of_another_tenant(backend: Backend, tenant: str) -> None:
    rows = backend.fetcher.fetch(ask(tenant=tenant)).items
    assert {r.tenant for r in rows} <= {tenant}
    assert [r.pk for r in rows] == expected(ask(tenant=tenant))
    foreign = next(r for r in WORLD if r.tenant != tenant)
    assert backend.fetcher.fetch(ask(tenant=tenant, pk=foreign.pk)).items == []


@DB
def test_retrieve_by_pk(backend: Backend) -> None:
    row = next(r for r in WORLD if r.tenant == "t1" and r.score is None)
    for pk in (row.pk, str(row.pk)):  # "12" from a URL is the integer 12
        found = backend.fetcher.fetch(ask(pk=pk, size=2)).items
        assert [(r.pk, r.name, r.score, r.tenant) for r in found] == [
            (row.pk, row.name, None, "t1")]
    assert backend.fetcher.fetch(ask(pk=10_000, size=2)).items == []
    assert backend.fetcher.fetch(ask(Eq("status", "reversed"), pk=row.pk, size=2)).items == (
        [] if row.status != "reversed" else backend.fetcher.fetch(ask(pk=row.pk)).items)


@DB
@pytest.mark.parametrize("spec", [*SPECS, Eq("status", "nothing")], ids=repr)
def test_count_is_exact_whatever_the_page(backend: Backend, spec: Spec) -> None:
    count = backend.fetcher.count
    request = ask(spec)
    total = len(expected(request))
    assert count(request) == total
    after = request.ordering.values(WORLD[0])
    assert count(replace(request, offset=3, size=2, after=after)) == total


@DB
def test_empty_results(backend: Backend) -> None:
    for request in (ask(Eq("status", "nothing")), ask(tenant="nobody"),
                    ask(Eq("name", "Zoë box") & Eq("name", "plain")),
                    ask(after=ask().ordering.values(max(WORLD, key=ask().ordering.key)))):
        result = backend.fetcher.fetch(request)
        assert result.items == [] and not result.has_more


@DB
def test_text_in_any_script_survives_the_round_trip(backend: Backend) -> None:
    rows = backend.fetcher.fetch(ask()).items
    names = {r.pk: r.name for r in WORLD if r.tenant == "t1"}
    assert {r.pk: r.name for r in rows} == names
    for name in ("日本語 テキスト", "emoji 🎉 party", "Straße", "a_b%c", "back\\slash"):
        request = ask(Eq("name", name))
        assert served(backend.fetcher, request) == expected(request), name
        assert expected(request)


@DB
def test_a_spec_it_cannot_serve_is_declined_with_its_reason(backend: Backend) -> None:
    verdict = backend.fetcher.can_handle(replace(ask(), spec=None, uncompilable="opaque"))
    assert not verdict
    assert "opaque" in verdict.reason
    with pytest.raises(NoFetcher) as info:
        pipeline(backend.fetcher).execute(PipelineRequest(tenant="t1",
                                                          filters={"opaque": "x"}))
    assert "opaque" in info.value.reasons[backend.fetcher.name]


@DB
def test_relevance_only_from_a_source_that_ranks(backend: Backend) -> None:
    request = replace(ask(search="box"), ordering=Ordering.by_relevance(Item))
    if not backend.fetcher.can_rank(request):
        verdict = backend.fetcher.can_handle(request)
        assert not verdict and "relevance" in verdict.reason
        return
    rows = backend.fetcher.fetch(request).items
    scores = [getattr(r, SCORE_ATTR) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(s is not None for s in scores)
    assert {r.pk for r in rows} <= {r.pk for r in WORLD if r.tenant == "t1"}
    assert rows


@pytest.mark.parametrize("name", [pytest.param(name, marks=MARKS.get(name, []))
                                  for name in OUTAGES])
def test_an_outage_is_the_documented_error(name: str, django_db_blocker: Any) -> None:
    with django_db_blocker.unblock(), OUTAGES[name]() as down:
        with pytest.raises(UNAVAILABLE_ERRORS):
            down.fetch(ask())
        with pytest.raises(SourcesUnavailable):
            pipeline(down).execute(PipelineRequest(tenant="t1"))


CACHED = [pytest.param("cached-redis", marks=MARKS["cached-redis"])]


@pytest.mark.parametrize("backend", CACHED, indirect=True)
@pytest.mark.parametrize("ordering", ORDERINGS, ids="/".join)
def test_a_cached_page_is_served_from_its_entry(backend: Backend, ordering: tuple[str, ...],
                                                django_db_blocker: Any) -> None:
    # Outside a test transaction: a CachedFetcher stores a page when the reading transaction
    # commits (inside one it is read but not stored, "cache_store": "on_commit").
    with django_db_blocker.unblock():
        for spec in SPECS:
            request = ask(spec, ordering=ordering, size=7)
            first, second = backend.fetcher.fetch(request), backend.fetcher.fetch(request)
            assert first.meta["cache"] in {"miss", "hit"} and second.meta["cache"] == "hit"
            assert [r.pk for r in second.items] == [r.pk for r in first.items] == expected(
                request)
            assert [(r.name, r.created_at, r.score, r.owner_id) for r in second.items] == [
                (r.name, r.created_at, r.score, r.owner_id) for r in first.items]


@DB
@pytest.mark.parametrize("backend", CACHED, indirect=True)
def test_a_cache_outage_is_a_bypass_never_an_error(backend: Backend) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = {**settings.CACHES["redis"], "LOCATION": f"redis://127.0.0.1:{port}/3"}
    with override_settings(CACHES={**settings.CACHES, "redis-down": down}):
        fetcher = CachedFetcher(backend.fetcher.fetcher, cache="redis-down", ttl=60,
                                version=RUN, depends_on=(Owner,))
        for spec in SPECS:
            request = ask(spec, size=5)
            result = fetcher.fetch(request)
            assert [r.pk for r in result.items] == expected(request)
            assert result.meta["cache"] == "bypass"
            assert "cache" in result.meta["cache_reason"], result.meta


# --------------------------------------------------------------------------------------------
# Property: any FilterSet parameters give the in-memory ids on every source that serves them
# --------------------------------------------------------------------------------------------

@DB
@given(data=st.data())
@hsettings(max_examples=30, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_any_filter_gives_the_in_memory_ids(backend: Backend, data: st.DataObject) -> None:
    params = data.draw(params_strategy(WORLD, text=backend.exact_text, huge=True),
                       label="params")
    tenant = data.draw(st.sampled_from(["t1", "t2"]), label="tenant")
    ordering = data.draw(st.sampled_from(ORDERINGS), label="ordering")
    try:
        spec = compile_filterset(ItemFilterSet, as_query(params))
    except ValidationFailed:
        event("invalid parameters")
        return
    request = ask(spec, tenant=tenant, ordering=ordering)
    note(f"spec={spec!r}")
    found = served(backend.fetcher, request)
    if found is None:
        event("declined")
        return
    event("served, none" if not found else "served, some")
    assert found == expected(request)
