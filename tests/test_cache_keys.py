"""``datapipe_django.cache.keys``: what a cache key holds (every part of a request, the
pipeline's shape), that it is the same in every process and never changes layout, and that it
is safe for every backend; the old module paths (``cache_keys``, ``invalidation``) still
import. No server needed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import os
import subprocess
import sys

import pytest
from django.test import override_settings

from datapipe_django import PipelineRequest, invalidate
from datapipe_django.cache import generations
from datapipe_django.cache import guard as cache_guard
from datapipe_django.cache.keys import Uncacheable, canonical, slug
from datapipe_django.cache.rows import decode_rows
from datapipe_django.conf import datapipe_settings
from datapipe_django.enrichers import BatchEnricher
from datapipe_django.enrichers.base import EnrichContext
from datapipe_django.fetchers import CachedFetcher
from datapipe_django.fetchers import cache as cache_module
from datapipe_django.paging import Ordering
from datapipe_django.specs import Eq, In, MatchAll
from datapipe_django.test import InMemoryFetcher
from tests.cache_helpers import (
    BASE,
    ROOT,
    fetch_request,
    isolated_cache,  # noqa: F401  (autouse: every test here)
    make,
    outcome,
    pipeline,
)
from tests.testapp.models import Category, Item

# -- keys --------------------------------------------------------------------------------------

def test_canonical_forms_tell_types_apart_and_ignore_order():
    forms = [1, "1", True, 1.0, decimal.Decimal("1"), [1], {1}, None, b"1",
             dt.date(2026, 1, 1), "2026-01-01", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]
    assert len({json.dumps(canonical(v)) for v in forms}) == len(forms)
    assert canonical({3, 1, 2}) == canonical({2, 3, 1})
    assert canonical({"b": 1, "a": 2}) == canonical({"a": 2, "b": 1})
    assert canonical(Item.Status.QUEUED) == canonical("queued")  # a choice is its value
    assert canonical(Category(pk=3)) != canonical(3)
    assert canonical(Eq("a", 1) & In("b", [1, 2])) != canonical(Eq("a", 1) & In("b", [1, 3]))
    with pytest.raises(Uncacheable):
        canonical(object())
    with pytest.raises(Uncacheable):
        canonical(Category(name="unsaved"))


def test_every_part_of_a_request_changes_its_key():
    fetcher = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30)
    variants = {
        "base": fetch_request(),
        "tenant": fetch_request(tenant="t2"),
        "auth_type": fetch_request(request=PipelineRequest(auth_type="private")),
        "filters": fetch_request(spec=Eq("status", "processed")),
        "no filters": fetch_request(spec=MatchAll()),
        "search": fetch_request(search="invoice"),
        "ordering": fetch_request(ordering=Ordering.for_model(Item, ["amount"])),
        "cursor": fetch_request(after=(BASE, 3)),
        "offset": fetch_request(offset=10),
        "size": fetch_request(size=21),
        "pk": fetch_request(pk=5),
        "pipeline": fetch_request(pipeline="other"),
    }
    keys = {name: fetcher.cache_key(r) for name, r in variants.items()}
    assert len(set(keys.values())) == len(keys), keys
    # Equal requests, equal keys; the tenant is normalised as the tenant field's value.
    assert fetcher.cache_key(fetch_request()) == keys["base"]
    assert fetcher.cache_key(fetch_request(tenant=1)) == fetcher.cache_key(fetch_request(
        tenant="1"))
    vary = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30,
                         vary=lambda r: r.request.context.get("locale"))
    assert vary.cache_key(fetch_request(request=PipelineRequest(context={"locale": "en"}))) \
        != vary.cache_key(fetch_request(request=PipelineRequest(context={"locale": "hi"})))


def test_the_shape_of_the_pipeline_versions_every_key():
    request = fetch_request()
    plain = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30).cache_key(request)
    assert CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30, version=2).cache_key(
        request) != plain
    assert CachedFetcher(InMemoryFetcher([], name="mem2"), name="mem",
                         ttl=30).cache_key(request) != plain
    one = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30)
    pipeline(one, name="keys")
    two = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30)
    pipeline(two, InMemoryFetcher([], name="archive"), name="keys")
    assert one.cache_key(request) != two.cache_key(request) != plain
    assert plain.startswith(f"{datapipe_settings.CACHE_KEY_PREFIX}:1:keys:mem:")


def test_keys_are_the_same_in_every_process():
    script = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings'; "
        "django.setup(); from tests.test_cache_keys import stable_key; print(stable_key())"
    )
    keys = {stable_key()}
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True, timeout=60)
        keys.add(out.stdout.strip().splitlines()[-1])
    assert len(keys) == 1, keys


def stable_key() -> str:
    with override_settings(DATAPIPE={"CACHE_KEY_PREFIX": "stable"}):
        fetcher = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30)
        spec = Eq("status", "queued") & In("amount", {3, 1, 2})
        return fetcher.cache_key(fetch_request(spec=spec, search="a b", after=(BASE, 7)))


def test_the_key_layout_never_changes():
    """Literal keys, computed once by the release that defined the layout: a refactoring that
    moves a class the keys name (a spec leaf, say) or changes a digest fails here, not in
    production as a cache emptied at deploy."""
    assert stable_key() == (
        "stable:1:keys:mem:d156e7a410ce68dc:f29b7910e28ce42e48dda4e14ff70560cb56c612")
    with override_settings(DATAPIPE={"CACHE_KEY_PREFIX": "stable"}):
        fetcher = CachedFetcher(InMemoryFetcher([], name="mem"), ttl=30)
        assert fetcher.cache_key(fetch_request(pk=5)) == (
            "stable:1:keys:mem:d156e7a410ce68dc:a68188d8bc726a5fbcee08b0d3ba8ab9b01caea6")
        assert generations.generation_keys(Item, "tenant", "t1") == ([
            "stable:gen1:testapp.item",
            "stable:gen1:testapp.item:tenant:6e14051745f7649a293495ba32d21fa2"], "t1")
        enricher = BatchEnricher("txn", key="txn_id", load=lambda keys: {}, cache_ttl=60)
        scope = EnrichContext(pipeline="payouts", expand=frozenset({"txn"}), tenant="t1",
                              auth_type="private")
        assert enricher._cache_keys([7, "abc"], scope) == {
            7: "stable:enrich1:payouts:txn:84f97de2d9e617eca84f8632:i7",
            "abc": "stable:enrich1:payouts:txn:84f97de2d9e617eca84f8632:"
                   "6cc43f858fbb763301637b5af970e2a4"}


def test_a_spec_class_of_the_library_is_named_by_its_public_path_in_keys():
    def leaf(module: str) -> type:
        cls = type("Moved", (Eq,), {"__module__": module, "__qualname__": "Moved"})
        return dataclasses.dataclass(frozen=True)(cls)

    here, moved = leaf("datapipe_django.specs"), leaf("datapipe_django.specs.tree")
    assert canonical(here("status", "a")) == canonical(moved("status", "a"))
    assert canonical(leaf("myapp.specs")("status", "a")) != canonical(here("status", "a"))


def test_the_old_module_paths_still_import():
    from datapipe_django import cache_keys, invalidation
    from datapipe_django.cache import keys

    assert cache_keys.digest is keys.digest and invalidation.invalidate is invalidate
    assert invalidation.CacheGuard is cache_guard.CacheGuard
    assert cache_module.decode_rows is decode_rows and cache_module.CacheStats


def test_keys_are_safe_for_every_backend():
    assert slug("payouts") == "payouts"
    assert slug("my pipeline") != slug("my_pipeline")
    assert " " not in slug("my pipeline") and len(slug("x" * 300)) <= 40
    fetcher = CachedFetcher(InMemoryFetcher([make(1)], name="mémoire vive"), ttl=30)
    p = pipeline(fetcher, name="paiements récents")
    p.execute(tenant="t1")  # warnings are errors here: no CacheKeyWarning
    assert outcome(p.execute(tenant="t1")) == "hit"
