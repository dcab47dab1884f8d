"""The WSGI application ``benchmarks/http.py`` serves on gunicorn: ours and hand-written DRF
views side by side, over the real PostgreSQL (database ``datapipe_bench_http``).

Routes (every one takes the tenant from ``X-Tenant``):

* ``/ours/items``, ``/drf/items``: ``benchmarks/views.py``'s list endpoints (first page,
  filtered page; ours pages with ``cursor``, DRF's with ``offset``);
* ``/ours/expand1``, ``/drf/expand1``: the owner expanded (ours: ``ExpandableField`` +
  ``PrefetchEnricher`` at default settings; DRF: a nested serializer + ``select_related``);
* ``/ours/expand3``, ``/drf/expand3``: owner, category and tags (DRF: ``select_related`` +
  ``prefetch_related``);
* ``/ours/cached``: ``/ours/items`` with a ``CachedFetcher`` on the real Redis (database 4).

    gunicorn benchmarks.http_app:application
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common

PG_HOST = os.environ.get("DATAPIPE_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DATAPIPE_PG_PORT", "5432"))
PG_NAME = "datapipe_bench_http"
REDIS_URL = os.environ.get("DATAPIPE_BENCH_REDIS", "redis://127.0.0.1:6379/4")
ROWS, TENANTS = 10_000, ("t1", "t2")

from django.conf import settings  # noqa: E402

if not settings.configured:
    common.configure(
        ROOT_URLCONF=__name__,
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql", "HOST": PG_HOST, "PORT": PG_PORT,
            "NAME": PG_NAME, "USER": "postgres", "PASSWORD": "", "CONN_MAX_AGE": None,
        }},
        CACHES={"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_URL,
                            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2}}},
        DATAPIPE={"PRIMARY": "default", "MAX_LIMIT": 100, "TIMEOUT": 5.0,
                  "CACHE_KEY_PREFIX": "bench-http"},
    )

import django  # noqa: E402

django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework import generics, serializers  # noqa: E402

from benchmarks import views as list_views  # noqa: E402
from datapipe_django import Pipeline  # noqa: E402
from datapipe_django.enrichers import PrefetchEnricher  # noqa: E402
from datapipe_django.fetchers import CachedFetcher, ORMFetcher  # noqa: E402
from datapipe_django.rest import ExpandableField, PipelineViewSet  # noqa: E402
from tests.testapp.filters import ItemFilterSet  # noqa: E402
from tests.testapp.models import Item  # noqa: E402
from tests.testapp.serializers import (  # noqa: E402
    CategorySerializer,
    ItemSerializer,
    OwnerSerializer,
    TagSerializer,
)

ORDERING = list_views.ORDERING
BASE_FIELDS = ("id", "name", "status", "amount", "created_at")


def tenant_of(view: object) -> str | None:
    return view.request.headers.get("X-Tenant")  # type: ignore[attr-defined, no-any-return]


# -- expand: ours ------------------------------------------------------------------------------

class OursOne(serializers.ModelSerializer):
    owner = ExpandableField(OwnerSerializer)

    class Meta:
        model = Item
        fields = (*BASE_FIELDS, "owner")


class OursThree(serializers.ModelSerializer):
    owner = ExpandableField(OwnerSerializer)
    category = ExpandableField(CategorySerializer)
    tags = ExpandableField(TagSerializer, many=True)

    class Meta:
        model = Item
        fields = (*BASE_FIELDS, "owner", "category", "tags")


def expand_pipeline(name: str, relations: tuple[str, ...]) -> Pipeline:
    return Pipeline(name, model=Item, tenant_field="tenant", ordering=ORDERING,
                    fetchers=[ORMFetcher("default")],
                    enrichers=[PrefetchEnricher(r) for r in relations])


class OursExpandOne(PipelineViewSet):
    pipeline = expand_pipeline("bench-http-expand1", ("owner",))
    serializer_class = OursOne
    get_tenant = tenant_of


class OursExpandThree(PipelineViewSet):
    pipeline = expand_pipeline("bench-http-expand3", ("owner", "category", "tags"))
    serializer_class = OursThree
    get_tenant = tenant_of


class OursCached(PipelineViewSet):
    pipeline = Pipeline("bench-http-cached", model=Item, filterset_class=ItemFilterSet,
                        tenant_field="tenant", ordering=ORDERING,
                        fetchers=[CachedFetcher(ORMFetcher("default"), ttl=3600)])
    serializer_class = ItemSerializer
    get_tenant = tenant_of


# -- expand: DRF by hand -----------------------------------------------------------------------

class DRFOne(serializers.ModelSerializer):
    owner = OwnerSerializer(allow_null=True)

    class Meta:
        model = Item
        fields = (*BASE_FIELDS, "owner")


class DRFThree(serializers.ModelSerializer):
    owner = OwnerSerializer(allow_null=True)
    category = CategorySerializer(allow_null=True)
    tags = TagSerializer(many=True)

    class Meta:
        model = Item
        fields = (*BASE_FIELDS, "owner", "category", "tags")


class DRFExpandOne(generics.ListAPIView):
    serializer_class = DRFOne
    pagination_class = list_views.EnvelopePagination

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return (Item.objects.filter(tenant=tenant_of(self)).order_by(*ORDERING)
                .select_related("owner"))


class DRFExpandThree(DRFExpandOne):
    serializer_class = DRFThree

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return (Item.objects.filter(tenant=tenant_of(self)).order_by(*ORDERING)
                .select_related("owner", "category").prefetch_related("tags"))


urlpatterns = [
    *list_views.urlpatterns,
    path("ours/expand1", OursExpandOne.as_view({"get": "list"})),
    path("drf/expand1", DRFExpandOne.as_view()),
    path("ours/expand3", OursExpandThree.as_view({"get": "list"})),
    path("drf/expand3", DRFExpandThree.as_view()),
    path("ours/cached", OursCached.as_view({"get": "list"})),
]

application = get_wsgi_application()


def seed() -> None:
    """The Item rows of ``benchmarks/common.seed_items``, each with an owner, a category and
    two tags; an index on (tenant, created_at, id)."""
    from django.db import connection

    from datapipe_django import invalidate
    from tests.testapp.models import Category, Owner, Tag

    fresh = common.seed_items(ROWS, TENANTS)
    if fresh or not Owner.objects.exists():
        for model in (Item.tags.through, Tag, Owner, Category):
            model.objects.all().delete()
        Owner.objects.bulk_create([Owner(id=i, name=f"owner {i}", email=f"o{i}@x")
                                   for i in range(1, 51)])
        Category.objects.bulk_create([Category(id=i, name=f"category {i}") for i in range(1, 8)])
        Tag.objects.bulk_create([Tag(id=i, name=f"tag {i}") for i in range(1, 13)])
        with connection.cursor() as cursor:
            table = Item._meta.db_table
            cursor.execute(f"UPDATE {table} SET owner_id = id % 50 + 1, "
                           f"category_id = id % 7 + 1")
        Item.tags.through.objects.bulk_create([
            Item.tags.through(item_id=i, tag_id=t)
            for i in range(1, ROWS + 1) for t in (i % 12 + 1, (i + 5) % 12 + 1)
        ], batch_size=5_000)
        invalidate(Item)
    with connection.cursor() as cursor:
        table = Item._meta.db_table
        cursor.execute(f"CREATE INDEX IF NOT EXISTS bench_http_tenant_created_id "
                       f"ON {table} (tenant, created_at, id)")
        cursor.execute(f"ANALYZE {table}")
