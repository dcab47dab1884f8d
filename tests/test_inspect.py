"""``datapipe_django.inspect``: describe, explain, execute and health as data (what
``manage.py datapipe`` prints), health on the real servers."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from datapipe_django import FallbackMode, Pipeline, PipelineRequest, inspect
from datapipe_django.fetchers import CachedFetcher, ORMFetcher
from datapipe_django.replicas import forget_replica_status
from datapipe_django.state import State
from datapipe_django.test import InMemoryFetcher
from tests.conftest import require_alias, require_cache
from tests.testapp.filters import ItemFilterSet
from tests.testapp.models import Item
from tests.testapp.pipelines import RelatedEnricher

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def item(pk: int, tenant: str = "t1") -> Item:
    return Item(id=pk, tenant=tenant, name=f"n{pk}", status="queued", amount=pk,
                created_at=BASE + dt.timedelta(minutes=pk), day=BASE.date())


def pipeline(*fetchers, **kwargs) -> Pipeline:
    kwargs.setdefault("enrichers", [RelatedEnricher("owner"),
                                    RelatedEnricher("category", auth_types={"private"},
                                                    required=True)])
    return Pipeline("inspect-test", model=Item, fetchers=list(fetchers),
                    filterset_class=ItemFilterSet, tenant_field="tenant",
                    ordering=("-created_at", "-id"), register=False, **kwargs)


def declines(request):
    return False


def test_inspect_imports_no_drf():
    """The data API is usable where DRF is not installed (a worker, a health endpoint)."""
    script = (
        "import sys, django\n"
        "from django.conf import settings\n"
        "settings.configure(INSTALLED_APPS=['django.contrib.contenttypes', 'datapipe_django'],"
        " DATABASES={'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'}})\n"
        "django.setup()\n"
        "import datapipe_django.inspect\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rest_framework'))\n")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=root, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_describe_is_the_declaration():
    p = pipeline(ORMFetcher("default", name="appdb"), InMemoryFetcher(name="memory"))
    info = inspect.describe(p)
    assert (info["name"], info["model"], info["fallback"]) == \
        ("inspect-test", "testapp.Item", "SEQUENTIAL")
    assert info["fetchers"] == [
        {"name": "appdb", "kind": "ORMFetcher", "database": "default"},
        {"name": "memory", "kind": "InMemoryFetcher", "database": None}]
    assert info["enrichers"] == [
        {"name": "owner", "kind": "RelatedEnricher", "auth_types": [], "required": False,
         "always": False},
        {"name": "category", "kind": "RelatedEnricher", "auth_types": ["private"],
         "required": True, "always": False}]
    assert info["ordering"] == ["-created_at", "-id"] and info["tenant_field"] == "tenant"
    # What a client sends: every parameter of every filter, as the FilterSet reads them.
    assert set(info["filters"]) == {p for ps in info["filterset"].values() for p in ps}
    assert "status" in info["filters"]
    json.dumps(info)  # plain data


@pytest.mark.django_db
def test_explain_a_list_names_each_fetchers_verdict_and_the_strategy():
    p = pipeline(InMemoryFetcher([item(1)], name="recent", can_handle=declines),
                 ORMFetcher("default", name="appdb"), ORMFetcher("default", name="archive"))
    plan = inspect.explain(p, PipelineRequest(filters={"status": "queued"}, tenant="t1",
                                              limit=3, offset=4, expand={"owner"},
                                              auth_type="public"))
    assert plan["valid"] and plan["errors"] == {}
    assert plan["page"] == {"limit": 3, "offset": 4, "after": None,
                            "ordering": ["-created_at", "-id"], "highlight": False,
                            "facets": []}
    assert plan["specification"] == "Eq(field='status', value='queued')"
    assert plan["expand"] == ["owner"]
    recent, appdb, archive = plan["fetchers"]
    assert (recent["action"], recent["serves"], recent["reason"]) == \
        ("declined", False, "declined by declines")
    assert recent["details"] == {}
    assert appdb["serves"] and archive["serves"]
    assert "\"testapp_item\".\"status\" = 'queued'" in appdb["details"]["sql"]
    assert plan["strategy"].startswith("SEQUENTIAL: appdb first, then archive")
    assert "each asked for 8 rows from offset 0; the merged rows are sliced from 4" \
        in plan["strategy"]
    assert [(e["name"], e["runs"], e["status"]) for e in plan["enrichers"]] == [
        ("owner", True, "runs (asked for)"),
        ("category", False, "not for auth type 'public'")]
    json.dumps(plan, default=str)


@pytest.mark.django_db
def test_explain_a_caching_wrapper_gives_its_key_and_what_it_wraps():
    p = pipeline(CachedFetcher(ORMFetcher("default", name="appdb"), ttl=30))
    plan = inspect.explain(p, PipelineRequest(tenant="t1", limit=2, auth_type="private"))
    (cached,) = plan["fetchers"]
    assert cached["kind"] == "CachedFetcher" and cached["serves"]
    details = cached["details"]
    assert details["cache alias"] == "default"
    assert details["cache key"].startswith("datapipe:")
    assert details["wraps"] == "ORMFetcher 'appdb'" and "LIMIT 3" in details["sql"]


def test_explain_an_invalid_request_stops_at_validation():
    plan = inspect.explain(pipeline(ORMFetcher("default")),
                           PipelineRequest(filters={"stauts": "x"}, tenant="t1", limit="many"))
    assert plan["valid"] is False
    assert set(plan["errors"]) == {"stauts", "limit"}
    assert not {"page", "fetchers", "strategy", "enrichers"} & set(plan)
    assert plan["request"]["filters"] == {"stauts": "x"}


@pytest.mark.django_db
def test_explain_db_plan_asks_the_database():
    plan = inspect.explain(pipeline(ORMFetcher("default")), PipelineRequest(tenant="t1"),
                           db_plan=True)
    (fetcher,) = plan["fetchers"]
    assert fetcher["details"]["db_plan"] and "(unavailable" not in fetcher["details"]["db_plan"]


@pytest.mark.django_db
def test_execute_gives_the_span_tree_and_the_result():
    Item.objects.bulk_create([item(1), item(2), item(3), item(4, tenant="t2")])
    p = pipeline(ORMFetcher("default", name="appdb"))
    execution, failure = inspect.execute(p, PipelineRequest(tenant="t1", limit=2,
                                                            expand={"owner"}))
    assert failure is None and execution["error"] is None
    result = execution["result"]
    assert result is not None
    assert (result["source"], result["count"], result["has_more"], result["found"]) == \
        ("appdb", 2, True, None)
    assert [(a["source"], a["outcome"], a["rows"]) for a in result["attempts"]] == \
        [("appdb", "ok", 3)]
    tree = execution["tree"]
    assert tree is not None and tree["label"] == "inspect-test list"
    assert tree["info"] == "served by appdb, 2 items"
    assert [c["label"] for c in tree["children"]] == [
        "validate", "fetch", "transform", "enrich", "build"]
    fetch = tree["children"][1]
    assert fetch["info"] == "no fallback"
    assert [(c["label"], c["info"]) for c in fetch["children"]] == [("source appdb",
                                                                      "ok, 3 rows")]
    assert all(node["ms"] is not None and node["ms"] >= 0 for node in tree["children"])
    # The registered pipeline keeps its own tracer.
    assert p.tracer is not None and not hasattr(p.tracer, "roots")


@pytest.mark.django_db
def test_execute_of_a_retrieve_that_no_source_has():
    execution, failure = inspect.execute(pipeline(ORMFetcher("default")),
                                         PipelineRequest(tenant="t1", pk=999))
    assert failure is None
    assert execution["result"] is not None and execution["result"]["found"] is False


# -- health, on the real servers ------------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.django_db(databases=["primary", "replica", "archive"])
def test_health_of_the_real_primary_standby_archive_and_redis():
    for alias in ("primary", "replica", "archive"):
        require_alias(alias)
    require_cache("redis")
    p = pipeline(CachedFetcher(ORMFetcher("primary", name="appdb"), ttl=30, cache="redis"),
                 ORMFetcher("replica"), ORMFetcher("archive"))
    with override_settings(DATAPIPE={"PRIMARY": "primary", "REPLICAS": ["replica"],
                                     "ARCHIVES": ["archive"], "CACHE": "redis"}):
        forget_replica_status()
        try:
            report = inspect.health([p], timeout=3.0)
        finally:
            forget_replica_status()
    checks = {(c["kind"], c["name"]): c for c in report["checks"]}
    assert set(checks) == {("database", "primary"), ("database", "replica"),
                           ("database", "archive"), ("cache", "redis")}
    assert all(c["ok"] and c["ms"] is not None and c["ms"] >= 0 for c in checks.values())
    primary, replica = checks["database", "primary"], checks["database", "replica"]
    assert (primary["role"], primary["required"]) == ("primary", True)
    assert (replica["role"], replica["required"]) == ("replica", False)
    assert isinstance(replica["lag"], float) and 0 <= replica["lag"] <= 5.0
    assert "PostgreSQL" in replica["detail"] and "(max 5 s)" in replica["detail"]
    assert "MariaDB" in checks["database", "archive"]["detail"]
    assert "RedisCache" in checks["cache", "redis"]["detail"]
    assert report["pipelines"] == [{"name": "inspect-test", "ok": True,
                                    "sources": {"appdb": True, "replica": True,
                                                "archive": True}}]
    assert inspect.health_failures(report, strict=True) == []
    json.dumps(report)


def test_health_of_a_down_store_and_what_fails(down_alias):
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
              "broken": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                         "LOCATION": "redis://127.0.0.1:9/0",
                         "OPTIONS": {"socket_connect_timeout": 0.5}}}
    dead = Pipeline("inspect-dead", model=Item, fetchers=[ORMFetcher(down_alias)],
                    register=False)
    alive = pipeline(ORMFetcher(down_alias, name="archive"), InMemoryFetcher(name="memory"),
                     ORMFetcher("default"))
    with override_settings(DATAPIPE={"CACHE": "broken"}, CACHES=caches):
        report = inspect.health([dead, alive], topology=False, timeout=1.0)
    down = {c["name"]: c for c in report["checks"]}
    assert set(down) == {down_alias, "default", "broken"} and down["default"]["ok"]
    assert not down[down_alias]["ok"] and down[down_alias]["required"]
    assert down[down_alias]["detail"].startswith("unreachable: ")
    assert not down["broken"]["ok"] and not down["broken"]["required"]
    assert report["pipelines"] == [
        {"name": "inspect-dead", "ok": False, "sources": {down_alias: False}},
        {"name": "inspect-test", "ok": True,
         "sources": {"archive": False, "memory": None, "default": True}}]
    assert inspect.health_failures(report) == [
        f"down: {down_alias}", "pipelines without a source: inspect-dead"]
    assert inspect.health_failures(report, strict=True)[0] == f"down: {down_alias}, broken"


@pytest.mark.django_db
def test_health_asks_a_fetcher_that_reports_its_own():
    class Search(InMemoryFetcher):
        def health(self):
            return False, "cluster status red"

    class Broken(InMemoryFetcher):
        def health(self):
            raise ConnectionError("refused\nmore")

    report = inspect.health([pipeline(ORMFetcher("default"), Search(name="search"),
                                      Broken(name="broken"),
                                      fallback=FallbackMode.PARALLEL)], topology=False)
    hooks = {c["name"]: c for c in report["checks"] if c["kind"] == "source"}
    assert hooks["inspect-test.search"]["detail"] == "cluster status red"
    assert hooks["inspect-test.search"]["role"] == "Search"
    assert hooks["inspect-test.broken"]["detail"] == "unreachable: refused"
    assert report["pipelines"][0]["sources"] == {"default": True, "search": False,
                                                 "broken": False}
    assert inspect.health_failures(report) == [
        "down: inspect-test.search, inspect-test.broken"]


@pytest.mark.django_db
def test_describe_sources_says_what_each_source_ran_after_an_execution():
    from datapipe_django.observability import pipeline_executed

    Item.objects.bulk_create([item(1), item(2)])
    seen = []

    def record(sender, *, state, **kwargs):
        seen.append(state)

    p = pipeline(InMemoryFetcher([item(1)], name="recent", can_handle=declines),
                 ORMFetcher("default", name="appdb"))
    pipeline_executed.connect(record, dispatch_uid="test-inspect-sources")
    try:
        p.execute(PipelineRequest(tenant="t1", limit=1))
    finally:
        pipeline_executed.disconnect(dispatch_uid="test-inspect-sources")
    (state,) = seen
    ran, plan = inspect.describe_sources(state)
    assert list(ran) == ["appdb"]  # the declining source ran nothing
    assert "LIMIT 2" in ran["appdb"]["sql"]
    assert set(plan) == {"recent", "appdb"}
    assert plan["appdb"] == {"holds": "every row", "plan": "reads: serves alone"}
    invalid = State(pipeline=p, request=PipelineRequest(tenant="t1"))  # never validated
    assert inspect.describe_sources(invalid) == ({}, {})
