"""``datapipe_django.cache.generations``: a write invalidates (generational keys through the
model's signals, per tenant, through related models and many-to-many changes, once per
transaction and on commit), on SQLite."""

from __future__ import annotations

import django_filters
import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

import datapipe_django
from datapipe_django import Pipeline, invalidate
from datapipe_django._internal import oncommit
from datapipe_django.cache import generations
from datapipe_django.fetchers import CachedFetcher, ORMFetcher
from tests.cache_helpers import (
    BASE,
    ids,
    isolated_cache,  # noqa: F401  (autouse: every test here)
    make,
    outcome,
    pipeline,
)
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Category, Item, Owner

# -- invalidation ------------------------------------------------------------------------------

DB = pytest.mark.django_db(transaction=True)


def orm_pipeline(**kwargs):
    kwargs.setdefault("filterset_class", ItemFilterSet)
    return pipeline(CachedFetcher(ORMFetcher("default"), ttl=300, **kwargs.pop("cache", {})),
                    **kwargs)


@DB
def test_a_hit_makes_no_query_and_rebuilds_ordinary_instances():
    Item.objects.bulk_create([make(i) for i in range(1, 6)])
    p = orm_pipeline()
    first = p.execute(tenant="t1", limit=3, filters={"status": "queued"})
    with CaptureQueriesContext(connection) as queries:
        second = p.execute(tenant="t1", limit=3, filters={"status": "queued"})
    assert len(queries) == 0 and outcome(second) == "hit"
    assert ids(first) == ids(second) == [5, 4, 3]
    row = second.items[0]
    assert row._state.db == "default" and not row._state.adding
    assert (row.created_at, row.day, row.amount) == (first.items[0].created_at, BASE.date(), 5)
    row.name = "saved from a cached row"
    row.save()
    assert Item.objects.get(pk=5).name == "saved from a cached row"


@DB
def test_save_delete_and_queryset_delete_invalidate():
    Item.objects.bulk_create([make(i) for i in range(1, 6)])
    p = orm_pipeline()
    p.execute(tenant="t1", limit=3)
    row = Item.objects.get(pk=5)
    row.amount = 500
    row.save()
    after_save = p.execute(tenant="t1", limit=3)
    assert outcome(after_save) == "miss" and after_save.items[0].amount == 500
    Item.objects.get(pk=4).delete()
    assert ids(p.execute(tenant="t1", limit=3)) == [5, 3, 2]
    Item.objects.filter(pk__in=[5, 3]).delete()
    assert ids(p.execute(tenant="t1", limit=3)) == [2, 1]
    Item.objects.create(**{f.attname: getattr(make(9), f.attname)
                           for f in Item._meta.concrete_fields})
    assert ids(p.execute(tenant="t1", limit=3)) == [9, 2, 1]


@DB
def test_writes_without_signals_need_invalidate():
    Item.objects.bulk_create([make(i) for i in range(1, 4)])
    p = orm_pipeline()
    p.execute(tenant="t1")
    Item.objects.bulk_create([make(4)])
    assert ids(p.execute(tenant="t1")) == [3, 2, 1]  # no signal: the old page (until ttl)
    invalidate(Item)
    assert ids(p.execute(tenant="t1")) == [4, 3, 2, 1]
    Item.objects.filter(pk=4).update(name="updated")
    invalidate(Item, tenant="t1")
    assert p.execute(tenant="t1").items[0].name == "updated"
    Item.objects.bulk_update([make(1, name="bulk")], ["name"])
    datapipe_django.invalidate(Item, "t1")
    assert p.execute(tenant="t1").items[-1].name == "bulk"


@DB
def test_a_write_invalidates_its_own_tenant_only_unless_the_row_moves():
    Item.objects.bulk_create([make(1, tenant="t1"), make(2, tenant="t2"), make(3, tenant="t2")])
    p = orm_pipeline()
    p.execute(tenant="t1")
    p.execute(tenant="t2")
    row = Item.objects.get(pk=1)
    row.name = "t1 changed"
    row.save()
    assert outcome(p.execute(tenant="t2")) == "hit"
    assert p.execute(tenant="t1").items[0].name == "t1 changed"
    assert outcome(p.execute(tenant="t1")) == "hit"
    moved = Item.objects.get(pk=2)
    moved.tenant = "t1"
    moved.save()
    assert ids(p.execute(tenant="t1")) == [2, 1]
    assert ids(p.execute(tenant="t2")) == [3]
    Item(id=3, tenant="t1", name="overwritten blind", status="queued", amount=3,
         created_at=BASE, day=BASE.date()).save()  # an UPDATE whose old tenant is unknown
    assert ids(p.execute(tenant="t2")) == []
    Item.objects.filter(pk=3).update(tenant="t2")
    invalidate(Item, "t2")
    invalidate(Item, "t1")
    assert ids(p.execute(tenant="t2")) == [3]
    assert outcome(p.execute(tenant="t2")) == "hit"
    Item(id=3).delete()  # a row never loaded: its tenant is unknown, every tenant is dropped
    assert ids(p.execute(tenant="t2")) == []


@DB
def test_writes_to_related_models_the_filters_read_invalidate():
    alice, bob = Owner.objects.create(name="alice"), Owner.objects.create(name="bob")
    Item.objects.bulk_create([make(1, owner=alice), make(2, owner=bob)])
    p = orm_pipeline()
    assert ids(p.execute(tenant="t1", filters={"owner_name": "alice"})) == [1]
    bob.name = "alice"
    bob.save()
    assert ids(p.execute(tenant="t1", filters={"owner_name": "alice"})) == [2, 1]


class CustomOnly(django_filters.FilterSet):
    """Only the ``custom`` method filter, whose spec joins ``owner``: nothing declares it."""

    custom = django_filters.CharFilter(method="filter_custom")
    filter_custom = ItemFilterSet.filter_custom
    spec_custom = ItemFilterSet.spec_custom

    class Meta:
        model = Item
        fields: list[str] = []


@DB
def test_a_method_filter_that_joins_needs_depends_on(caplog):
    owner = Owner.objects.create(name="Zed")
    Item.objects.bulk_create([make(1, owner=owner, name="plain")])
    p = orm_pipeline(filterset_class=CustomOnly)
    assert outcome(p.execute(tenant="t1", filters={"custom": "zed"})) == "bypass"
    assert "depends_on" in caplog.text
    declared = orm_pipeline(filterset_class=CustomOnly, cache={"depends_on": [Owner]})
    declared.execute(tenant="t1", filters={"custom": "zed"})
    assert outcome(declared.execute(tenant="t1", filters={"custom": "zed"})) == "hit"
    owner.name = "Someone"
    owner.save()
    assert ids(declared.execute(tenant="t1", filters={"custom": "zed"})) == []


@DB
def test_deleting_the_target_of_a_set_null_key_invalidates():
    category = Category.objects.create(name="c")
    Item.objects.bulk_create([make(1, category=category)])
    p = orm_pipeline()
    assert p.execute(tenant="t1").items[0].category_id == category.pk
    category.delete()  # Django sets Item.category to NULL with an UPDATE and no Item signal
    assert p.execute(tenant="t1").items[0].category_id is None


@DB
def test_many_to_many_changes_invalidate():
    group = Group.objects.create(name="ops")
    cached = CachedFetcher(ORMFetcher("default"), ttl=300)
    p = Pipeline("cache-groups", model=Group, fetchers=[cached], register=False, timeout=None)
    p.execute()
    assert outcome(p.execute()) == "hit"
    group.permissions.add(Permission.objects.first())
    assert outcome(p.execute()) == "miss"
    group.permissions.clear()
    assert outcome(p.execute()) == "miss"


@DB
def test_inside_a_transaction_that_wrote_reads_skip_the_cache():
    Item.objects.bulk_create([make(1), make(2)])
    p = orm_pipeline()
    p.execute(tenant="t1")
    with transaction.atomic():
        assert outcome(p.execute(tenant="t1")) == "hit"  # nothing written yet
        Item.objects.filter(pk=1).delete()
        inside = p.execute(tenant="t1")
        assert ids(inside) == [2] and outcome(inside) == "bypass"
        transaction.set_rollback(True)
    after = p.execute(tenant="t1")
    assert ids(after) == [2, 1]  # the rolled-back delete was never published
    assert outcome(after) == "hit"


@DB
def test_one_token_change_per_transaction_however_many_rows():
    p = orm_pipeline()
    p.execute(tenant="t1")
    with transaction.atomic():
        for i in range(1, 30):
            Item.objects.create(**{f.attname: getattr(make(i), f.attname)
                                   for f in Item._meta.concrete_fields})
        bumps = [f for f in oncommit.waiting(connection) if isinstance(f, generations._Bump)]
        assert len(bumps) == 1
    assert len(p.execute(tenant="t1").items) == 10


@DB
def test_invalidate_inside_a_transaction_also_acts_on_commit(django_capture_on_commit_callbacks):
    Item.objects.bulk_create([make(1)])
    p = orm_pipeline()
    p.execute(tenant="t1")
    with transaction.atomic():
        Item.objects.filter(pk=1).update(name="later")
        invalidate(Item)
        assert outcome(p.execute(tenant="t1")) == "bypass"
    assert p.execute(tenant="t1").items[0].name == "later"


@DB
def test_rows_read_inside_a_transaction_are_published_on_commit_only():
    Item.objects.bulk_create([make(1)])
    p = orm_pipeline()
    with transaction.atomic():
        Item.objects.bulk_create([make(2)])  # no signal: the cache cannot know
        inside = p.execute(tenant="t1")
        assert ids(inside) == [2, 1]
        assert inside.attempts[0].meta == {"cache": "miss", "cache_store": "on_commit"}
        transaction.set_rollback(True)
    assert ids(p.execute(tenant="t1")) == [1]  # the rolled-back row was never published
    with transaction.atomic():
        p.execute(tenant="t1")
    assert outcome(p.execute(tenant="t1")) == "hit"


@pytest.mark.django_db
def test_in_a_test_case_entries_and_invalidations_wait_for_on_commit_callbacks(
        django_capture_on_commit_callbacks):
    p = orm_pipeline()
    with django_capture_on_commit_callbacks(execute=True):
        Item.objects.create(**{f.attname: getattr(make(1), f.attname)
                               for f in Item._meta.concrete_fields})
    assert outcome(p.execute(tenant="t1")) == "miss"
    assert outcome(p.execute(tenant="t1")) == "miss"  # the test's transaction never commits
    with django_capture_on_commit_callbacks(execute=True):
        p.execute(tenant="t1")
    assert outcome(p.execute(tenant="t1")) == "hit"
