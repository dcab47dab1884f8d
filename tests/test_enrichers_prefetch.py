"""PrefetchEnricher on real engines: every relation kind, nested paths, bounded to-many, query
counts constant in page size, rows and related rows on different aliases, failures."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connections
from django.db.models import Prefetch, prefetch_related_objects
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from datapipe_django import EnrichmentFailed, FallbackMode, Pipeline
from datapipe_django.checks import check_pipelines
from datapipe_django.enrichers import BatchEnricher, PrefetchEnricher
from datapipe_django.errors import SourceUnavailable
from datapipe_django.fetchers import ORMFetcher
from datapipe_django.test import InMemoryFetcher, unregister_pipeline
from tests.conftest import engine_databases, require_alias
from tests.testapp.models import Category, Comment, Item, ItemDetail, Node, Owner, Tag

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ALL = engine_databases()
DB = pytest.mark.django_db(databases=ALL)

RELATIONS = ["owner", "category", "tags", "comments", "comments.author", "detail",
             "detail.reviewer"]


def seed(alias, n=12, *, first=1, owner_prefix="", tenant="t1"):
    """``n`` items of ``tenant`` on ``alias`` with every kind of relation filled in."""
    db = alias
    Owner.objects.using(db).bulk_create(
        [Owner(id=i, name=f"{owner_prefix}owner {i}") for i in range(1, 4)], ignore_conflicts=True)
    Category.objects.using(db).bulk_create(
        [Category(id=i, name=f"cat {i}") for i in (1, 2)], ignore_conflicts=True)
    Tag.objects.using(db).bulk_create([Tag(id=i, name=f"tag {i}") for i in range(1, 5)],
                                      ignore_conflicts=True)
    ids = range(first, first + n)
    Item.objects.using(db).bulk_create([
        Item(id=i, tenant=tenant, name=f"item {i}", status="queued", amount=i,
             created_at=BASE + dt.timedelta(minutes=i), day=BASE.date(),
             owner_id=i % 3 + 1, category_id=(i % 3) or None)
        for i in ids
    ])
    Item.tags.through.objects.using(db).bulk_create(
        [Item.tags.through(item_id=i, tag_id=t) for i in ids for t in (i % 4 + 1, (i + 1) % 4 + 1)])
    Comment.objects.using(db).bulk_create([
        Comment(id=i * 10 + k, item_id=i, author_id=(i + k) % 3 + 1, body=f"c{k}",
                tenant="t1" if k != 3 else "t2")
        for i in ids for k in range(4)
    ])
    ItemDetail.objects.using(db).bulk_create(
        [ItemDetail(id=i, item_id=i, note=f"note {i}", reviewer_id=i % 3 + 1)
         for i in ids if i % 2 == 0])


def pipeline(fetchers, enrichers, **kwargs):
    if isinstance(fetchers, str):
        fetchers = [ORMFetcher(fetchers)]
    return Pipeline("prefetch-test", model=Item, tenant_field="tenant", ordering=("id",),
                    fetchers=fetchers, enrichers=enrichers, register=False, **kwargs)


def all_enrichers(**kwargs):
    return [PrefetchEnricher(path, **kwargs) for path in RELATIONS]


def expanded(item):
    """What the enrichers attached, read from the caches only (never a query)."""
    detail = item._state.fields_cache.get("detail")
    return {
        "owner": item._state.fields_cache["owner"].name,
        "category": getattr(item._state.fields_cache["category"], "name", None),
        "tags": sorted(t.name for t in item._prefetched_objects_cache["tags"]),
        "comments": [(c.body, c._state.fields_cache["author"].name)
                     for c in item._prefetched_objects_cache["comments"]],
        "detail": None if detail is None else (detail.note,
                                               detail._state.fields_cache["reviewer"].name),
    }


def reference(alias, ids):
    """The same data through Django's own prefetch_related, for comparison."""
    rows = list(Item.objects.using(alias).filter(pk__in=ids).order_by("id"))
    prefetch_related_objects(
        rows, "owner", "category", "tags",
        Prefetch("comments", queryset=Comment.objects.using(alias).order_by("id")),
        "comments__author", "detail", "detail__reviewer")
    return [expanded(r) for r in rows]


@contextlib.contextmanager
def queries_on_every_alias():
    with contextlib.ExitStack() as stack:
        yield {alias: stack.enter_context(CaptureQueriesContext(connections[alias]))
               for alias in ALL}


def counts(captured):
    return {alias: len(c) for alias, c in captured.items() if len(c)}


# -- every relation kind -----------------------------------------------------------------------

@DB
def test_every_relation_kind_matches_djangos_prefetch_related(engine_alias):
    seed(engine_alias)
    result = pipeline(engine_alias, all_enrichers()).execute(
        tenant="t1", limit=12, expand={"owner", "category", "tags", "comments.author",
                                       "detail.reviewer"})
    assert result.errors == []
    assert result.expand == set(RELATIONS)
    assert [expanded(i) for i in result.items] == reference(engine_alias, range(1, 13))
    assert expanded(result.items[1])["detail"] == ("note 2", "owner 3")
    assert expanded(result.items[0])["detail"] is None


@DB
def test_forward_one_to_one(engine_alias):
    seed(engine_alias, n=4)
    p = Pipeline("prefetch-o2o", model=ItemDetail, ordering=("id",), register=False,
                 fetchers=[ORMFetcher(engine_alias)],
                 enrichers=[PrefetchEnricher("item"), PrefetchEnricher("item.owner")])
    result = p.execute(expand={"item.owner"})
    assert [(d.item.name, d.item.owner.name) for d in result.items] == [
        ("item 2", "owner 3"), ("item 4", "owner 2")]


@DB
def test_the_double_underscore_form_names_the_same_relation():
    seed("default", n=2)
    p = pipeline("default", [PrefetchEnricher("comments"), PrefetchEnricher("comments__author")])
    assert {e.name for e in p.enrichers} == {"comments", "comments.author"}
    assert p.execute(tenant="t1", expand={"comments.author"}).expand == {"comments",
                                                                        "comments.author"}


# -- one query per relation level per page -----------------------------------------------------

@DB
def test_queries_are_constant_in_the_page_size_on_every_alias(engine_alias):
    seed(engine_alias, n=120)
    expand = {"owner", "category", "tags", "comments.author", "detail.reviewer"}
    for join, expected in ((None, 4), (False, 8)):
        p = pipeline(engine_alias, all_enrichers(join=join))
        per_size = {}
        for size in (5, 100):
            with queries_on_every_alias() as captured:
                result = p.execute(tenant="t1", limit=size, expand=expand)
            assert len(result.items) == size and result.errors == []
            assert [expanded(i) for i in result.items] == reference(
                engine_alias, [i.pk for i in result.items])
            per_size[size] = counts(captured)
        # By default: the page with owner and category joined, then tags, comments with their
        # authors, detail with its reviewer. join=False: the page, then one query per
        # relation level (7). Either way on the alias the rows came from.
        assert per_size[5] == per_size[100] == {engine_alias: expected}


@DB
def test_a_loaded_relation_is_not_queried_again():
    seed("default", n=5)
    fetcher = ORMFetcher("default", queryset=lambda r: Item.objects.select_related("owner"))
    p = pipeline([fetcher], [PrefetchEnricher("owner")])
    with queries_on_every_alias() as captured:
        result = p.execute(tenant="t1", expand={"owner"})
    assert counts(captured) == {"default": 1}
    assert result.items[0].owner.name == "owner 2"


# -- bounded to-many ---------------------------------------------------------------------------

@DB
def test_to_many_expansions_are_bounded_per_parent(engine_alias):
    seed(engine_alias, n=6)
    p = pipeline(engine_alias, [PrefetchEnricher("comments", limit=2), PrefetchEnricher("tags",
                                                                                        limit=1)])
    result = p.execute(tenant="t1", expand={"comments", "tags"})
    for item in result.items:
        assert [c.body for c in item.comments.all()] == ["c0", "c1"]  # the first two, by id
        assert len(item.tags.all()) == 1
    with override_settings(DATAPIPE={"EXPAND_LIMIT": 3}):
        result = pipeline(engine_alias, [PrefetchEnricher("comments")]).execute(
            tenant="t1", expand={"comments"})
    assert {len(i.comments.all()) for i in result.items} == {3}


@DB
def test_limit_false_is_a_plain_uncapped_prefetch(engine_alias):
    seed(engine_alias, n=3)
    with override_settings(DATAPIPE={"EXPAND_LIMIT": 1}), \
            CaptureQueriesContext(connections[engine_alias]) as captured:
        result = pipeline(engine_alias, [PrefetchEnricher("comments", limit=False),
                                         PrefetchEnricher("tags", limit=False)]).execute(
            tenant="t1", expand={"comments", "tags"})
    assert [[c.body for c in i.comments.all()] for i in result.items] == [
        ["c0", "c1", "c2", "c3"]] * 3
    assert {len(i.tags.all()) for i in result.items} == {2}
    assert len(captured) == 3 and not any("ROW_NUMBER" in q["sql"].upper() for q in captured)
    for bad in (True, 0, -1, "10"):
        with pytest.raises(ImproperlyConfigured, match="limit"):
            PrefetchEnricher("comments", limit=bad)


@DB
def test_a_queryset_orders_and_filters_the_related_rows():
    seed("default", n=3)
    p = pipeline("default", [
        PrefetchEnricher("comments", queryset=Comment.objects.order_by("-id"), limit=2,
                         tenant_field="tenant"),
    ])
    result = p.execute(tenant="t1", expand={"comments"})
    # c3 belongs to tenant t2: filtered out before the limit applies.
    assert [[c.body for c in i.comments.all()] for i in result.items] == [["c2", "c1"]] * 3


# -- across aliases ----------------------------------------------------------------------------

@pytest.mark.django_db(databases=ALL)
def test_items_from_the_archive_enriched_from_the_primary():
    require_alias("archive")
    require_alias("primary")
    seed("archive", n=4, owner_prefix="archived ")
    seed("primary", n=0, owner_prefix="primary ")
    p = pipeline("archive", [PrefetchEnricher("owner", using="primary"),
                             PrefetchEnricher("tags")])
    with queries_on_every_alias() as captured:
        result = p.execute(tenant="t1", expand={"owner", "tags"})
    assert [i.owner.name for i in result.items] == ["primary owner 2", "primary owner 3",
                                                    "primary owner 1", "primary owner 2"]
    assert [len(i.tags.all()) for i in result.items] == [2] * 4  # tags: from the archive
    assert counts(captured) == {"archive": 2, "primary": 1}


@pytest.mark.django_db(databases=ALL)
def test_a_page_from_two_aliases_reads_each_rows_relations_where_the_row_came_from():
    require_alias("archive")
    seed("default", n=3, first=4, owner_prefix="recent ")
    seed("archive", n=6, first=1, owner_prefix="archived ")
    p = pipeline([ORMFetcher("default"), ORMFetcher("archive")],
                 [PrefetchEnricher("owner"), PrefetchEnricher("comments")],
                 fallback=FallbackMode.PARALLEL)
    with queries_on_every_alias() as captured:
        result = p.execute(tenant="t1", limit=6, expand={"owner", "comments"})
    by_id = {i.pk: (i._state.db, i.owner.name) for i in result.items}
    assert by_id[4] == ("default", "recent owner 2")  # the primary's copy wins the merge
    assert by_id[1] == ("archive", "archived owner 2")
    # Per alias: the page (the owners joined into it), then the comments.
    assert counts(captured) == {"default": 2, "archive": 2}


# -- failures ----------------------------------------------------------------------------------

def test_an_unavailable_alias_is_an_optional_failure_without_expansion(down_alias):
    rows = [Item(id=i, tenant="t1", name="i", status="queued", amount=1, owner_id=1,
                 created_at=BASE, day=BASE.date()) for i in (1, 2)]
    p = pipeline([InMemoryFetcher(rows)], [PrefetchEnricher("owner", using=down_alias)])
    result = p.execute(tenant="t1", expand={"owner"})
    assert result.errors == [{"enricher": "owner", "code": "failed"}]
    assert result.expand == set()
    assert not any(Item.owner.field.is_cached(i) for i in result.items)
    required = pipeline([InMemoryFetcher(rows)],
                        [PrefetchEnricher("owner", using=down_alias, required=True)])
    with pytest.raises(EnrichmentFailed) as info:
        required.execute(tenant="t1", expand={"owner"})
    # The connection error, or (once the store is known to be down) its refusal at once.
    assert isinstance(info.value.cause, OperationalError | SourceUnavailable)


# -- threads -----------------------------------------------------------------------------------

@pytest.mark.django_db(databases=ALL, transaction=True)
@pytest.mark.parametrize("honours_deadline", [False, True])
def test_outside_a_transaction_enrichers_run_on_the_pool_and_return_their_connections(
        honours_deadline):
    require_alias("primary")
    seed("primary", n=5)
    seen = []

    class Watching(PrefetchEnricher):
        def load(self, items, context):
            seen.append(connections["primary"])
            return super().load(items, context)

    Watching.honours_deadline = honours_deadline
    p = pipeline("primary", [Watching("owner", join=False), Watching("tags")],
                 parallel_enrichment=True)
    with CaptureQueriesContext(connections["primary"]) as here:
        result = p.execute(tenant="t1", expand={"owner", "tags"})
    assert result.errors == []
    assert [i.owner.name for i in result.items] == ["owner 2", "owner 3", "owner 1", "owner 2",
                                                    "owner 3"]
    pooled = [c for c in seen if c is not connections["primary"]]
    # An enricher whose queries honour the deadline themselves: this thread runs one (its
    # share, rather than wait), the pool the other. Else both run on the pool.
    assert len(seen) == 2 and len(pooled) == (1 if honours_deadline else 2)
    assert len(here) == 1 + (2 - len(pooled))  # the page, and what ran on this thread
    assert all(c.connection is None for c in pooled)  # closed when the task ended


@DB
def test_inside_a_transaction_enrichers_run_here_and_see_its_writes():
    Owner.objects.create(id=1, name="uncommitted")
    Item.objects.create(id=1, tenant="t1", name="i", status="queued", amount=1,
                        created_at=BASE, day=BASE.date(), owner_id=1)
    p = pipeline("default", [PrefetchEnricher("owner")], parallel_enrichment=True)
    assert p.execute(tenant="t1", expand={"owner"}).items[0].owner.name == "uncommitted"


# -- declarations ------------------------------------------------------------------------------

def test_declaration_mistakes_are_system_check_errors():
    p = Pipeline("prefetch-checks", model=Item, fetchers=[ORMFetcher("default")], enrichers=[
        PrefetchEnricher("owner"), PrefetchEnricher("owner.nope"),
        PrefetchEnricher("comments", using="nowhere", tenant_field="missing"),
        BatchEnricher("name", key="id", load=dict),
        BatchEnricher("txn", key="id", load=dict, cache_ttl=5, cache="nowhere"),
    ])
    try:
        messages = [m for m in check_pipelines() if "prefetch-checks" in m.msg]
    finally:
        unregister_pipeline(p.name)
    assert sorted(m.id for m in messages) == ["datapipe_django.E003", "datapipe_django.E004",
                                              "datapipe_django.E005", "datapipe_django.E006",
                                              "datapipe_django.E013"]
    assert all(isinstance(m, checks.Error) for m in messages)
    text = "\n".join(m.msg for m in messages)
    assert "'nope' is not a relation of testapp.Owner (relations: items)" in text
    assert "alias 'nowhere'" in text and "would overwrite the field 'name'" in text
    assert "BatchEnricher('txn') uses cache alias 'nowhere'" in text


@pytest.mark.parametrize("bad", ["", "a..b", "owner.", "1owner", "owner id"])
def test_a_malformed_relation_is_improperly_configured(bad):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="not a relation path"):
        PrefetchEnricher(bad)


# -- join=True: forward to-one relations joined into the fetch query ----------------------------

def joined(**kwargs):
    return [PrefetchEnricher("owner", join=True), PrefetchEnricher("category", join=True),
            PrefetchEnricher("detail"), PrefetchEnricher("detail.reviewer", join=True),
            PrefetchEnricher("tags", **kwargs)]


@DB
def test_joined_relations_come_with_the_rows_in_one_query(engine_alias):
    seed(engine_alias)
    Item.objects.using(engine_alias).filter(pk=5).update(owner_id=99)  # a dangling key
    asked = {"owner", "category", "tags"}
    with queries_on_every_alias() as captured:
        result = pipeline(engine_alias, joined()).execute(tenant="t1", limit=12, expand=asked)
    assert counts(captured) == {engine_alias: 2}  # the rows with owner and category; tags
    fetch_sql = captured[engine_alias][0]["sql"]
    assert fetch_sql.count("JOIN") == 2
    plain = pipeline(engine_alias, all_enrichers()).execute(tenant="t1", limit=12, expand=asked)
    assert [(i.pk, i.owner, i.category, [t.pk for t in i.tags.all()]) for i in result.items] \
        == [(i.pk, i.owner, i.category, [t.pk for t in i.tags.all()]) for i in plain.items]
    assert result.items[4].owner is None and result.items[0].owner.name == "owner 2"
    assert result.expand == asked


@DB
def test_only_what_the_request_expands_and_may_see_is_joined():
    seed("default", n=3)
    enrichers = [PrefetchEnricher("owner", join=True, auth_types={"private"}),
                 PrefetchEnricher("category", join=True)]
    for expand, auth_type, joins in [(set(), "private", 0), ({"category"}, "public", 1),
                                     ({"owner", "category"}, "private", 2)]:
        with CaptureQueriesContext(connections["default"]) as captured:
            pipeline("default", enrichers).execute(tenant="t1", expand=expand,
                                                   auth_type=auth_type)
        assert captured[0]["sql"].count("JOIN") == joins
        assert len(captured) == 1


@DB
def test_rows_from_a_source_that_cannot_join_are_enriched_as_before():
    seed("default", n=3)
    rows = list(Item.objects.order_by("id"))
    for row in rows:
        row._state.fields_cache.clear()
    p = pipeline([InMemoryFetcher(rows, name="memory")], joined())
    with CaptureQueriesContext(connections["default"]) as captured:
        result = p.execute(tenant="t1", expand={"owner", "detail.reviewer"})
    assert [i.owner.name for i in result.items] == ["owner 2", "owner 3", "owner 1"]
    # owner; detail, with detail.reviewer selected in the same query
    assert len(captured) == 2 and 'JOIN "testapp_owner"' in captured[1]["sql"]


def nodes(alias):
    """Three generations and an orphan whose root and parent rows do not exist."""
    Node.objects.using(alias).bulk_create([
        Node(id=1, name="grandparent", parent_id=None, root_id=1),
        Node(id=2, name="parent", parent_id=1, root_id=1),
        Node(id=3, name="child", parent_id=2, root_id=1),
        Node(id=4, name="orphan", parent_id=98, root_id=99),
    ])


def node_pipeline(alias, enrichers):
    return Pipeline("prefetch-nodes", model=Node, ordering=("id",), register=False,
                    fetchers=[ORMFetcher(alias)], enrichers=enrichers)


@DB
def test_a_nested_join_loads_its_parent_too(engine_alias):
    nodes(engine_alias)
    p = node_pipeline(engine_alias, [PrefetchEnricher("parent"),
                                     PrefetchEnricher("parent.parent", join=True)])
    with CaptureQueriesContext(connections[engine_alias]) as captured:
        result = p.execute(expand={"parent.parent"})
    assert len(captured) == 1 and captured[0]["sql"].count("JOIN") == 2
    assert [(n.name, n.parent and n.parent.name, n.parent and n.parent.parent
             and n.parent.parent.name) for n in result.items] == [
        ("grandparent", None, None), ("parent", "grandparent", None),
        ("child", "parent", "grandparent"), ("orphan", None, None)]


@DB
def test_a_key_nothing_enforces_is_prefetched_not_joined(engine_alias):
    # An inner join on `root` would drop the orphan, whose root row does not exist.
    nodes(engine_alias)
    p = node_pipeline(engine_alias, [PrefetchEnricher("root", join=True)])
    with CaptureQueriesContext(connections[engine_alias]) as captured:
        result = p.execute(expand={"root"})
    assert "JOIN" not in captured[0]["sql"]
    assert [n.name for n in result.items] == ["grandparent", "parent", "child", "orphan"]
    assert [n._state.fields_cache["root"] and n.root.name for n in result.items] == [
        "grandparent", "grandparent", "grandparent", None]
    messages = [m for m in PrefetchEnricher("root", join=True).check(p)]
    assert [m.id for m in messages] == ["datapipe_django.E014"]
    assert "'root' is NOT NULL without a database constraint" in messages[0].msg


def test_join_is_only_for_forward_to_one_relations():
    with pytest.raises(ImproperlyConfigured, match="join=True"):
        PrefetchEnricher("owner", join=True, using="default")
    p = Pipeline("prefetch-join-checks", model=Item, fetchers=[ORMFetcher("default")],
                 enrichers=[PrefetchEnricher("tags", join=True),
                            PrefetchEnricher("comments", join=True),
                            PrefetchEnricher("owner", join=True)])
    try:
        messages = [m for m in check_pipelines() if "prefetch-join-checks" in m.msg]
    finally:
        unregister_pipeline(p.name)
    assert [(m.id, m.msg.split(": ")[1]) for m in messages] == [
        ("datapipe_django.E014", "PrefetchEnricher('tags')"),
        ("datapipe_django.E014", "PrefetchEnricher('comments')")]


@pytest.mark.django_db(databases=ALL, transaction=True)  # nothing is cached inside a transaction
def test_behind_a_cache_the_join_runs_on_a_miss_and_the_enricher_on_a_hit(settings):
    from datapipe_django.fetchers import CachedFetcher

    settings.CACHES = {**settings.CACHES, "join-test": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "join-test"}}
    # On PostgreSQL: the enricher runs on a pool thread, and Django never closes an in-memory
    # SQLite connection, which would outlive the test in that thread.
    require_alias("primary")
    seed("primary", n=3)
    p = pipeline([CachedFetcher(ORMFetcher("primary"), ttl=60, cache="join-test")],
                 [PrefetchEnricher("owner", join=True)])
    for outcome, joined in (("miss", True), ("hit", False)):
        with CaptureQueriesContext(connections["primary"]) as captured:  # this thread's
            result = p.execute(tenant="t1", expand={"owner"})
        assert result.attempts[0].meta["cache"] == outcome
        assert all("owner" in i._state.fields_cache for i in result.items)  # loaded, either way
        assert [i.owner.name for i in result.items] == ["owner 2", "owner 3", "owner 1"]
        # The miss joined the owners into the fetch; a hit's owners came from the enricher,
        # in one query (on this thread: the page needs no other enricher).
        assert len(captured) == 1
        assert ("JOIN" in captured[0]["sql"]) is joined
        assert ('FROM "testapp_owner" WHERE' in captured[0]["sql"]) is not joined


@pytest.mark.django_db(databases=ALL)
@given(rows=st.lists(st.tuples(st.sampled_from([None, 1, 2, 3, 99]),
                               st.sampled_from([None, 1, 2, 99])), min_size=0, max_size=12),
       limit=st.integers(1, 6), offset=st.integers(0, 8),
       expand=st.sets(st.sampled_from(["owner", "category"])))
@hsettings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_joining_or_prefetching_gives_the_same_page(rows, limit, offset, expand):
    # Keys that are null, point to rows, or point nowhere (99), on every engine: the same rows
    # in the same order, with the same related objects.
    def page(alias, join):
        p = pipeline(alias, [PrefetchEnricher("owner", join=join),
                             PrefetchEnricher("category", join=join)])
        result = p.execute(tenant="t1", limit=limit, offset=offset, expand=expand)
        return [(i.pk, *(getattr(i._state.fields_cache.get(r), "name", None) for r in expand))
                for i in result.items], result.has_more

    for alias in ALL:
        Item.objects.using(alias).all().delete()
        Owner.objects.using(alias).all().delete()
        Category.objects.using(alias).all().delete()
        Owner.objects.using(alias).bulk_create([Owner(id=i, name=f"o{i}") for i in (1, 2, 3)])
        Category.objects.using(alias).bulk_create([Category(id=i, name=f"c{i}") for i in (1, 2)])
        Item.objects.using(alias).bulk_create([
            Item(id=n, tenant="t1", name=f"i{n}", status="queued", amount=n,
                 created_at=BASE, day=BASE.date(), owner_id=owner, category_id=category)
            for n, (owner, category) in enumerate(rows, start=1)])
        assert page(alias, join=True) == page(alias, join=False)


@DB
@pytest.mark.parametrize("limit", [None, False])
def test_a_to_one_relation_below_a_to_many_one_is_selected_in_its_query(engine_alias, limit):
    seed(engine_alias)
    enrichers = [PrefetchEnricher("comments", limit=limit), PrefetchEnricher("comments.author")]
    with queries_on_every_alias() as captured:
        result = pipeline(engine_alias, enrichers).execute(tenant="t1", limit=12,
                                                            expand={"comments.author"})
    assert result.errors == [] and result.expand == {"comments", "comments.author"}
    assert counts(captured) == {engine_alias: 2}  # the page; the comments with their authors
    assert 'JOIN "testapp_owner"' in captured[engine_alias][1]["sql"].replace("`", '"')
    assert [comments_of(i) for i in result.items] == [
        comments_of(r) for r in reference_rows(engine_alias, result.items)]
    # join=False on the one below: a query of its own, the same page.
    enrichers = [PrefetchEnricher("comments", limit=limit),
                 PrefetchEnricher("comments.author", join=False)]
    with queries_on_every_alias() as captured:
        apart = pipeline(engine_alias, enrichers).execute(tenant="t1", limit=12,
                                                           expand={"comments.author"})
    assert counts(captured) == {engine_alias: 3}
    assert [comments_of(i) for i in apart.items] == [comments_of(i) for i in result.items]


def comments_of(item):
    """The comments and their authors an item has loaded (read from the caches only)."""
    return [(c.body, getattr(c._state.fields_cache["author"], "name", None))
            for c in item._prefetched_objects_cache["comments"]]


def reference_rows(alias, items):
    rows = list(Item.objects.using(alias).filter(pk__in=[i.pk for i in items]).order_by("id"))
    prefetch_related_objects(
        rows, Prefetch("comments", queryset=Comment.objects.using(alias).order_by("id")),
        "comments__author")
    return rows


@pytest.mark.django_db(databases=ALL)
@given(per_item=st.lists(st.integers(0, 7), min_size=1, max_size=6), limit=st.integers(1, 5))
@hsettings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_a_capped_to_many_relation_is_each_parents_first_rows_in_one_plain_query_or_two(
        per_item, limit):
    # What the window function gives (each item's first `limit` comments by id), whether the
    # page's comments fit in the plain query's LIMIT (one query, no window) or not (then the
    # windowed one too).
    for alias in ALL:
        Comment.objects.using(alias).all().delete()
        Item.objects.using(alias).all().delete()
        Item.objects.using(alias).bulk_create([
            Item(id=n, tenant="t1", name=f"i{n}", status="queued", amount=n, created_at=BASE,
                 day=BASE.date()) for n in range(1, len(per_item) + 1)])
        Comment.objects.using(alias).bulk_create([
            Comment(item_id=n, body=f"{n}.{k}", tenant="t1")
            for n, count in enumerate(per_item, start=1) for k in range(count)])
        p = pipeline(alias, [PrefetchEnricher("comments", limit=limit)])
        with CaptureQueriesContext(connections[alias]) as captured:
            result = p.execute(tenant="t1", limit=10, expand={"comments"})
        assert result.errors == []
        assert [[c.body for c in i.comments.all()] for i in result.items] == [
            [f"{n}.{k}" for k in range(min(count, limit))]
            for n, count in enumerate(per_item, start=1)]
        fits = sum(per_item) < limit * len(per_item) + 1
        windowed = [q for q in captured if "ROW_NUMBER" in q["sql"].upper()]
        assert (len(captured), len(windowed)) == ((2, 0) if fits else (3, 1))
